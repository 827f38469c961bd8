"""The firewall role for real in network namespaces the scenario creates (Molecule `firewall`).

Each namespace runs its own sshd (reached over a veth pair, never multiplexed) with per-namespace
/etc/ufw and /etc/default overlays, so ufw/iptables changes stay inside it and the host firewall is
never touched. The scenario checks: port refused before; `--check` shows the rule diff and changes
nothing; after converge the ports answer the allowed source only, SSH still works; idempotence.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.fleet.env import ARTIFACTS, ansible_env, host_ready
from tests.support.fleet.molecule import molecule

pytestmark = pytest.mark.timeout(900)


def _netns_possible() -> str | None:
    if shutil.which("ip") is None or shutil.which("sshd", path="/usr/sbin:/usr/bin") is None:
        return "iproute2 or openssh-server missing"
    probe = subprocess.run(["ip", "netns", "add", "halfwprobe"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "halfwprobe"], check=False)
    return None


def test_firewall_in_network_namespaces() -> None:
    reason = host_ready() or _netns_possible()
    if reason:
        pytest.skip(reason)
    env = ansible_env()
    try:
        result = molecule("test", "firewall", env, timeout=840, check=False)
        assert result.returncode == 0, result.stdout[-6000:]
    finally:
        molecule("destroy", "firewall", env, timeout=120, check=False)
    log = (ARTIFACTS / "molecule-firewall-test.log").read_text()
    # Check mode (prepare.yml) printed the rule diff of the intended rules.
    assert "+allow tcp 8421 from 10.203.0.1" in log
    assert "+allow tcp 8421 from 10.203.1.1" in log
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert "halfwu" not in leftover and "halfwi" not in leftover
