"""Molecule and podman plumbing for the ops tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.fleet.env import ARTIFACTS, ROOT, VENV_BIN, run


def molecule(action: str, scenario: str, env: Mapping[str, str], *, timeout: float,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """`molecule <action> -s <scenario>` from the repo root; its output is kept in ARTIFACTS."""
    return run([str(VENV_BIN / "molecule"), action, "-s", scenario], env=dict(env), timeout=timeout,
               log=ARTIFACTS / f"molecule-{scenario}-{action}.log", check=check)


def container_pid(name: str) -> int:
    out = subprocess.run(["podman", "inspect", "--type", "container", name], text=True,
                         capture_output=True, check=True, timeout=60).stdout
    return int(json.loads(out)[0]["State"]["Pid"])


def podman_exec(name: str, *cmd: str, timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(["podman", "exec", name, *cmd], text=True, capture_output=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman exec {name} {' '.join(cmd)}: rc={proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def write_nsenter_inventory(path: Path, hosts: Mapping[str, Sequence[str]], variables: Mapping[str, Any]) -> Path:
    """An inventory that reaches running podman instances through nsenter (what the Molecule
    scenarios use too), with each host in its groups and `variables` for all."""
    groups: dict[str, dict[str, Any]] = {}
    for host, host_groups in hosts.items():
        for group in host_groups:
            groups.setdefault(group, {"hosts": {}})["hosts"][host] = None
    doc = {
        "all": {
            "vars": {"ansible_connection": "community.docker.nsenter", **variables},
            "hosts": {h: {"ansible_nsenter_pid": container_pid(h)} for h in hosts},
            "children": groups,
        }
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def halctl(*args: str, env: Mapping[str, str], timeout: float, log: Path) -> subprocess.CompletedProcess[str]:
    """The real halctl CLI (ops commands registered) as a subprocess; output kept in `log`."""
    return run([sys.executable, "-m", "tests.support.fleet.halctl", *args], env=dict(env), timeout=timeout,
               log=log, check=False, cwd=ROOT)
