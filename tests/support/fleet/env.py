"""Host preparation and artifacts for the ops tests (Molecule, netns firewall, ansible-test).

Everything here is computed once per pytest session (module-level caches), because several test
modules need the same wheels and the same host set-up:

- ``host_ready()``: runs ``scripts/ci-setup.sh`` (idempotent: apt packages, containers.conf.d,
  the systemd image built once and reused, the dependency wheelhouse, ansible-test's get-pip
  stand-in) and says why the ops tests cannot run here, if they cannot.
- ``wheels()``: the release wheel built from this checkout, and a second one with a bumped version
  built from a temporary copy of the repo (for upgrade/rollback).
- ``ansible_env()``: environment for ansible-playbook / molecule / ansible-test subprocesses.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
COLLECTION = ROOT / "collections" / "ansible_collections" / "halswarm" / "ops"
# Keep in sync with scripts/ci-setup.sh.
IMAGE = os.environ.get("HAL_CI_IMAGE", "localhost/halswarm-ops-systemd:bookworm-5")
# IMAGE with Debian's PostgreSQL installed at set-up time (the containers have no network).
PG_IMAGE = os.environ.get("HAL_CI_PG_IMAGE") or f"{IMAGE.rsplit(':', 1)[0]}-pg:{IMAGE.rsplit(':', 1)[1]}-2"
WHEELHOUSE = Path(os.environ.get("HAL_CI_WHEELHOUSE", "/var/cache/halswarm-ci/wheelhouse"))
ARTIFACTS = Path(os.environ.get("HAL_CI_ARTIFACTS", "/var/tmp/halswarm-ops-ci"))
# A test token (>= 32 chars, not a placeholder); fixed per session.
AUTH_TOKEN = os.environ.get("HAL_TEST_AUTH_TOKEN") or secrets.token_hex(24)


@dataclass(frozen=True)
class Wheels:
    current: Path  # built from this checkout
    bumped: Path  # same code, version + ".post1" style bump, for upgrade/rollback

    @property
    def current_version(self) -> str:
        return wheel_version(self.current)

    @property
    def bumped_version(self) -> str:
        return wheel_version(self.bumped)


def wheel_version(path: Path) -> str:
    return path.name.split("-")[1]


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a hard timeout; keep its whole output in `log`, show the tail on failure."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd or ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        if log:
            log.write_text(out)
        raise AssertionError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}\n{tail(out)}") from None
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout)
    if check and proc.returncode != 0:
        raise AssertionError(f"rc={proc.returncode}: {' '.join(cmd)}\n{tail(proc.stdout)}")
    return proc


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


@functools.cache
def host_ready() -> str | None:
    """Prepare the host; return None when ready, else the reason the ops tests must be skipped."""
    if os.geteuid() != 0:
        return "the ops tests need root (rootful podman with systemd, network namespaces)"
    if not Path("/proc/self/ns/net").exists():
        return "no network namespaces on this kernel"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = run(["bash", str(ROOT / "scripts" / "ci-setup.sh")], timeout=900, env=ansible_env(),
               log=ARTIFACTS / "ci-setup.log", check=False)
    if proc.returncode != 0:
        raise AssertionError(f"scripts/ci-setup.sh failed:\n{tail(proc.stdout)}")
    probe = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], timeout=60, check=False)
    if probe.returncode != 0:
        return f"podman does not work here: {tail(probe.stdout, 5)}"
    return None


def _pip_wheel(src: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("hal_o_swarm-*.whl"))
    run([str(VENV_BIN / "python"), "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        timeout=300, log=ARTIFACTS / f"wheel-{src.name}.log")
    built = sorted(set(out.glob("hal_o_swarm-*.whl")) - before) or sorted(out.glob("hal_o_swarm-*.whl"))
    return built[-1]


@functools.cache
def wheels() -> Wheels:
    """Build the release wheel from this checkout and a version-bumped one from a temporary copy."""
    # Per process: parallel runs (pytest workers, a benchmark next to the suite) must not delete each
    # other's wheels in the middle of a deploy.
    out = ARTIFACTS / f"wheels.{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    atexit.register(shutil.rmtree, out, True)
    current = _pip_wheel(ROOT, out / "current")
    version = wheel_version(current)
    bumped_version = _bump(version)
    with tempfile.TemporaryDirectory(prefix="hal-bumped.") as tmp:
        copy = Path(tmp) / "hal-o-swarm"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "halswarm"):  # LICENSE: license-files
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.exists():
                shutil.copy2(src, copy / name)
        _set_version(copy, version, bumped_version)
        bumped = _pip_wheel(copy, out / "bumped")
    assert wheel_version(bumped) == bumped_version, bumped
    return Wheels(current=current, bumped=bumped)


def _bump(version: str) -> str:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(.*)", version)
    if not m:
        return version + ".post1"
    return f"{m[1]}.{m[2]}.{int(m[3]) + 1}"


def _set_version(tree: Path, old: str, new: str) -> None:
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    text, n = re.subn(rf'(?m)^version\s*=\s*"{re.escape(old)}"', f'version = "{new}"', text)
    assert n == 1, "cannot find the version in pyproject.toml"
    pyproject.write_text(text)
    init = tree / "halswarm" / "__init__.py"
    itext = init.read_text()
    if "__version__" in itext:
        init.write_text(re.sub(r'__version__\s*=\s*["\'][^"\']*["\']', f'__version__ = "{new}"', itext))


def ansible_env(**extra: str) -> dict[str, str]:
    """Environment for ansible/molecule subprocesses: the venv first on PATH, the repo's collections,
    no ssh multiplexing left behind, no retry files, unbuffered output."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "MOLECULE_")) and k != "HAL_AUTH_TOKEN"}
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_HOST_KEY_CHECKING="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        PY_COLORS="0",
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
        HAL_CI_IMAGE=IMAGE,
        HAL_CI_WHEELHOUSE=str(WHEELHOUSE),
    )
    env.update(extra)
    return env
