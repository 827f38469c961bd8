"""The product as a new operator gets it: the wheel in a fresh venv outside the checkout, and the
collection tarball alone on a controller without the hal-o-swarm package (AWX / Automation Platform).

Offline-friendly: every install comes from a local wheelhouse (``$HAL_PKG_WHEELHOUSE``, default
``~/.cache/halswarm-ci/pkg-wheelhouse``), filled once per pyproject.toml with ``pip download``.
The wheel is built from a copy of the files the sdist carries, so the checkout stays clean and
a file the build needs but MANIFEST.in forgets makes this test fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1500)]  # fixture set-up included, on busy cores

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "halswarm" / "ops"
WHEELHOUSE = Path(os.environ.get("HAL_PKG_WHEELHOUSE") or Path.home() / ".cache" / "halswarm-ci" / "pkg-wheelhouse")
# What the build reads (see MANIFEST.in and setup.py).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "halswarm", "inventory.example",
                "collections/ansible_collections/halswarm/ops")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "output", ".ansible", "*.tar.gz", "*.egg-info")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
         ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if ok:
        tail = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        assert done.returncode == 0, f"{' '.join(cmd)} -> {done.returncode}\n{tail}"
    return done


def _clean_env(home: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    """A new operator's shell: no PYTHONPATH, no ANSIBLE_*/HALCTL_* from the test run, own HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "HALCTL_", "PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(HOME=str(home), PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="0", NO_COLOR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tool_env() -> dict[str, str]:
    """For pip and venv: nothing of this test run's Python set-up (PYTHONPATH would make pip see the
    checkout's metadata and skip installing the wheel)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the sdist carries: builds and metadata runs write there, not in the checkout."""
    src = tmp_path_factory.mktemp("src") / "hal-o-swarm"
    src.mkdir()
    for rel in BUILD_INPUTS:
        if (ROOT / rel).is_dir():
            shutil.copytree(ROOT / rel, src / rel, ignore=IGNORE)
        else:
            shutil.copy2(ROOT / rel, src / rel)
    return src


@pytest.fixture(scope="module")
def wheelhouse(source: Path) -> Path:
    """Dependencies of `hal-o-swarm[ops]` and the build backend, downloaded once per pyproject.toml."""
    stamp = WHEELHOUSE / f".filled-{hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()[:16]}"
    with _locked(WHEELHOUSE / ".lock"):
        if not stamp.exists():
            _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(WHEELHOUSE),
                  f"{source}[ops]", "setuptools>=77", "wheel", "pip"], cwd=source.parent, env=_tool_env(),
                 timeout=600)
            for own in WHEELHOUSE.glob("hal_o_swarm-*"):
                own.unlink()
            stamp.touch()
    return WHEELHOUSE


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, source: Path, wheelhouse: Path) -> dict[str, Path]:
    """`pip install '<wheel>[ops]'` into a fresh venv, all from the wheelhouse (no index)."""
    base = tmp_path_factory.mktemp("pkg")
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--find-links", str(wheelhouse),
          "-w", str(dist), str(source)], cwd=base, env=_tool_env())
    wheel = next(dist.glob("hal_o_swarm-*.whl"))
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base, env=_tool_env())
    _run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheelhouse),
          f"{wheel}[ops]"], cwd=base, env=_tool_env(), timeout=600)
    assert (venv / "bin" / "halctl").is_file(), "pip did not install the wheel itself"
    home = base / "home"
    home.mkdir()
    work = base / "elsewhere"  # not the checkout, not the venv
    work.mkdir()
    (work / "hosts").write_text(f"[hal_agents]\nlocalhost ansible_connection=local "
                                f"ansible_python_interpreter={venv / 'bin' / 'python'}\n")
    return {"base": base, "venv": venv, "bin": venv / "bin", "home": home, "work": work, "wheel": wheel}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def _playbooks() -> list[str]:
    return sorted(p.stem for p in (COLLECTION / "playbooks").glob("*.yml"))


def test_wheel_carries_the_whole_toolkit(installed: dict[str, Path]) -> None:
    bin_dir, work = installed["bin"], installed["work"]
    env = _clean_env(installed["home"], bin_dir)
    halctl = str(bin_dir / "halctl")

    version = json.loads(_run([halctl, "version", "--json"], cwd=work, env=env).stdout)
    site = installed["venv"] / "lib"
    # The web console's templates and assets (package data): /ui works from the wheel, offline.
    console = next(site.glob("python3*/site-packages/halswarm/supervisor/features/console"))
    assert (console / "templates" / "session.html").is_file() and (console / "static" / "console.js").is_file()
    assert version["collection"] and Path(version["collection_path"]).is_relative_to(site), version
    assert version["ansible_core"].startswith("2.19.") and version["ansible"], version
    assert Path(version["example_inventory"], "hosts.yml").is_file(), version
    assert "halswarm.ops 0.1.0 (" in _run([halctl, "--version"], cwd=work, env=env).stdout

    listed = _run([halctl, "remediate", "list"], cwd=work, env=env).stdout
    assert "agent-crashed" in listed and "supervisor-crashed" in listed

    # Every playbook of the collection by FQCN, with the collection the wheel shipped (halctl's path).
    check_env = env | {"ANSIBLE_COLLECTIONS_PATH": str(Path(version["collection_path"]).parents[2])}
    _run([str(bin_dir / "ansible-playbook"), "--syntax-check", "-i", "hosts",
          *[f"halswarm.ops.{name}" for name in _playbooks()]], cwd=work, env=check_env, timeout=300)

    # One remediation end to end in check mode, on localhost, with halctl finding everything itself.
    done = _run([halctl, "remediate", "run", "agent-crashed", "-i", "hosts", "--check", "--no-send",
                 "--state-dir", str(installed["base"] / "state"), "-o", "json"], cwd=work, env=env, timeout=300)
    assert '"decision": "not_present"' in done.stdout or "not_present" in done.stdout, done.stdout[-2000:]


def test_collection_tarball_stands_alone(installed: dict[str, Path]) -> None:
    """ansible-galaxy build + install of the collection; playbooks run on a controller where the
    hal-o-swarm package cannot be imported (a stand-in package on PYTHONPATH refuses to load)."""
    base, bin_dir, work = installed["base"], installed["bin"], installed["work"]
    env = _clean_env(installed["home"], bin_dir)
    out = base / "tarball"
    _run([str(bin_dir / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(out)],
         cwd=work, env=env)
    tarball = next(out.glob("halswarm-ops-*.tar.gz"))
    listing = _run(["tar", "-tzf", str(tarball)], cwd=work).stdout.split()
    assert "LICENSE" in listing and "meta/execution-environment.yml" in listing, listing[:40]
    assert not [n for n in listing if n.startswith("tests/output") or "__pycache__" in n]

    colls = base / "collections"
    _run([str(bin_dir / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(colls), str(tarball)],
         cwd=work, env=env)
    # Its declared dependencies are on this controller, from the `ansible` package: community.general, and
    # community.postgresql (the postgresql role).
    manifest = json.loads((colls / "ansible_collections" / "halswarm" / "ops" / "MANIFEST.json").read_text())
    declared = manifest["collection_info"]["dependencies"]
    assert set(declared) == {"community.general", "community.postgresql"}, declared
    for name, spec in declared.items():
        listed = json.loads(_run([str(bin_dir / "ansible-galaxy"), "collection", "list", name,
                                  "--format", "json"], cwd=work, env=env).stdout)
        have = [v["version"] for path in listed.values() for v in path.values()]
        assert have and _version(have[0]) >= _version(spec.removeprefix(">=")), (name, have, declared)

    poison = base / "no-halswarm" / "halswarm"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("collection-only controller: no hal-o-swarm package")\n')
    alone = _clean_env(installed["home"], bin_dir, ANSIBLE_COLLECTIONS_PATH=str(colls),
                       PYTHONPATH=str(poison.parent))
    assert _run([str(bin_dir / "python"), "-c", "import halswarm"], cwd=work, env=alone, ok=False).returncode != 0
    _run([str(bin_dir / "ansible-playbook"), "--syntax-check", "-i", "hosts",
          *[f"halswarm.ops.{name}" for name in _playbooks()]], cwd=work, env=alone, timeout=300)
    result = base / "alone-result.json"
    _run([str(bin_dir / "ansible-playbook"), "-i", "hosts", "--check", "halswarm.ops.remediate_agent_crashed",
          "-e", f"hal_remediation_result_file={result}"], cwd=work, env=alone, timeout=300)
    hosts = json.loads(result.read_text())["hosts"]
    assert hosts["localhost"]["plan"]["decision"] == "not_present", hosts
