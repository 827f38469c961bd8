"""Fact gathering for env checks (the I/O half): tool versions, env vars, files, git, libraries, disk.

Everything is looked at *in the project directory*: git runs as ``git -C DIR`` (the Go version ran
``git config`` in the agent's cwd), relative paths are the project's. Each external command has a
timeout and runs in its own process group, which is killed when the timeout expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import re
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

from halswarm.agent.env.paths import PathRefused, confine, hooks_dir, own_repository_refusal
from halswarm.agent.env.versions import format_version, parse_version
from halswarm.core.manifest.requirements import DEFAULT_PROBES, PROBES, Requirements, VersionReq
from halswarm.core.manifest.templates import AGENT_MD
from halswarm.core.manifest_rules import git_config_refusal

MAX_TEXT_BYTES = 1024 * 1024
OUTPUT_CHARS = 200


@dataclass
class Probe:
    found: bool
    version: str | None = None
    output: str = ""
    error: str | None = None
    skipped: str | None = None  # not run: the item needs approval (own command, or not a tool the node knows)


@dataclass
class FileFact:
    exists: bool = False
    is_file: bool = False
    is_dir: bool = False
    executable: bool = False
    sha256: str | None = None
    text: str | None = None


@dataclass
class GitFacts:
    is_repo: bool
    error: str | None = None
    hooks_dir: str | None = None
    hooks_refused: str | None = None  # why hooks cannot be installed in this project
    hooks: dict[str, FileFact] = field(default_factory=dict)
    config: dict[str, str | None] = field(default_factory=dict)
    remotes: dict[str, str | None] = field(default_factory=dict)
    branch: str | None = None


@dataclass
class Facts:
    directory: str
    probes: dict[str, Probe] = field(default_factory=dict)
    env_present: dict[str, bool] = field(default_factory=dict)
    env_matches: dict[str, bool] = field(default_factory=dict)
    files: dict[str, FileFact] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # manifest path -> why it is not used
    git: GitFacts | None = None
    libs: dict[str, bool] = field(default_factory=dict)
    android_root: str | None = None
    android_present: dict[str, bool] = field(default_factory=dict)
    disk_free_gb: float | None = None


# --------------------------------------------------------------------------- commands

async def run(argv: list[str] | tuple[str, ...], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
              timeout: float = 10.0) -> tuple[int, str]:
    """(returncode, stdout+stderr); 127 when the program does not exist, 124 on timeout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(env) if env is not None else None, cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except PermissionError as exc:
        return 126, f"{argv[0]}: {exc.strerror or exc}"
    except OSError as exc:
        return 126, f"{argv[0]}: {exc.strerror or exc}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        return 124, f"{argv[0]}: timed out after {timeout:g} s"
    return proc.returncode if proc.returncode is not None else 1, out.decode("utf-8", "replace")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:OUTPUT_CHARS]
    return ""


async def probe_version(req: VersionReq, env: Mapping[str, str], timeout: float, cwd: str | None = None,
                        probes: Mapping[str, tuple[str, ...]] = DEFAULT_PROBES) -> Probe:
    """Run the node's fixed argv for the tool (``probes``: ``halswarm.core.probe_rules.probe_table``), never
    the manifest's ``command`` and never a name the node does not know. Run in the project directory so
    that per-directory version managers (pyenv, nvm, asdf shims) answer for the project."""
    if req.name == "ndk" and not req.command:
        return ndk_probe(env)
    argv = req.probe_in(probes)
    if argv is None:
        return Probe(False, skipped=req.unprobed_reason)
    rc, out = await run(argv, env=env, timeout=timeout, cwd=cwd)
    if rc == 127 and argv == PROBES.get("python"):
        argv = ("python", "--version")
        rc, out = await run(argv, env=env, timeout=timeout, cwd=cwd)
    if rc == 127:
        return Probe(False, error=f"not found: {argv[0]}")
    if rc in (124, 126):
        return Probe(False, error=_first_line(out))
    v = parse_version(out)
    error = None if rc == 0 else f"`{' '.join(argv)}` exited {rc}: {_first_line(out)}"
    return Probe(True, format_version(v) if v else None, _first_line(out), error)


def ndk_probe(env: Mapping[str, str]) -> Probe:
    """The Android NDK has no ``--version``: read ``Pkg.Revision`` of its ``source.properties``."""
    roots = [env.get(k) for k in ("ANDROID_NDK_HOME", "ANDROID_NDK_ROOT", "ANDROID_NDK")]
    for sdk in (env.get("ANDROID_HOME"), env.get("ANDROID_SDK_ROOT")):
        if sdk:
            roots += [os.path.join(sdk, "ndk-bundle"), *sorted(glob.glob(os.path.join(sdk, "ndk", "*")))]
    best = None
    for root in (r for r in roots if r):
        try:
            with open(os.path.join(root, "source.properties"), encoding="utf-8") as fh:
                text = fh.read(4096)
        except OSError:
            continue
        m = re.search(r"Pkg\.Revision\s*=\s*([\d.]+)", text)
        v = parse_version(m.group(1)) if m else None
        if v and (best is None or v > best[0]):
            best = (v, root)
    if best is None:
        return Probe(False, error="not found: no Android NDK (ANDROID_NDK_HOME, $ANDROID_HOME/ndk/*)")
    return Probe(True, format_version(best[0]), best[1])


# --------------------------------------------------------------------------- files

def file_fact(path: str, *, read: bool = False) -> FileFact:
    try:
        st = os.stat(path)
    except OSError:
        return FileFact()
    import stat as st_mod

    fact = FileFact(exists=True, is_file=st_mod.S_ISREG(st.st_mode), is_dir=st_mod.S_ISDIR(st.st_mode),
                    executable=bool(st.st_mode & 0o111) and st_mod.S_ISREG(st.st_mode))
    if read and fact.is_file:
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_TEXT_BYTES + 1)
        except OSError:
            return fact
        fact.sha256 = hashlib.sha256(raw).hexdigest() if len(raw) <= MAX_TEXT_BYTES else None
        fact.text = raw[:MAX_TEXT_BYTES].decode("utf-8", "replace")
    return fact


# --------------------------------------------------------------------------- git

def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def hook_fact(path: str) -> FileFact:
    """A hook file; a symlink is reported as present but not a regular file (never followed)."""
    return FileFact(exists=True) if os.path.islink(path) else file_fact(path)


async def git_facts(directory: str, req: Requirements, env: Mapping[str, str], timeout: float) -> GitFacts:
    assert req.git is not None

    async def git(*args: str) -> tuple[int, str]:
        return await run(["git", "-C", directory, *args], env=env, timeout=timeout)

    rc, out = await git("rev-parse", "--show-toplevel")
    if rc != 0 or not out.strip():
        reason = "git is not installed" if rc == 127 else (_first_line(out) or "not a git repository")
        return GitFacts(False, error=reason)
    foreign = own_repository_refusal(directory, out.strip())
    if foreign:  # never read or write the enclosing repository's config and hooks
        return GitFacts(False, error=foreign)
    facts = GitFacts(True)
    try:
        facts.hooks_dir = hooks_dir(directory)
    except PathRefused as exc:
        facts.hooks_refused = str(exc)
    if facts.hooks_dir:
        for hook in req.git.hooks:
            facts.hooks[hook] = hook_fact(os.path.join(facts.hooks_dir, hook))
    for key, _ in req.git.config:
        if git_config_refusal(key):
            continue
        rc, out = await git("config", "--get", key)
        facts.config[key] = out.rstrip("\n") if rc == 0 else None
    if req.git.remote:
        rc, out = await git("remote", "get-url", req.git.remote_name)
        facts.remotes[req.git.remote_name] = out.strip() if rc == 0 else None
    if req.git.branch:
        rc, out = await git("symbolic-ref", "--short", "-q", "HEAD")
        facts.branch = out.strip() if rc == 0 and out.strip() else None
    return facts


# --------------------------------------------------------------------------- libraries, android, disk

async def lib_facts(names: list[str], env: Mapping[str, str], timeout: float) -> dict[str, bool]:
    rc, listing = await run(["ldconfig", "-p"], env=env, timeout=timeout)
    if rc != 0:
        rc, listing = await run(["/sbin/ldconfig", "-p"], env=env, timeout=timeout)
    sonames = set(re.findall(r"^\s*(\S+?\.so)[.\d]*\s", listing if rc == 0 else "", re.MULTILINE))
    out: dict[str, bool] = {}
    for name in names:
        base = name if name.startswith("lib") else f"lib{name}"
        found = f"{base}.so" in sonames
        if not found:
            prc, _ = await run(["pkg-config", "--exists", name], env=env, timeout=timeout)
            found = prc == 0
        out[name] = found
    return out


def android_facts(req: Requirements, env: Mapping[str, str]) -> tuple[str | None, dict[str, bool]]:
    assert req.android is not None
    root = env.get("ANDROID_HOME") or env.get("ANDROID_SDK_ROOT")
    wanted = [f"platforms/{p}" for p in req.android.platforms] + [f"build-tools/{b}" for b in req.android.build_tools]
    if not root:
        return None, dict.fromkeys(wanted, False)
    return root, {w: os.path.isdir(os.path.join(root, w)) for w in wanted}


def disk_free_gb(directory: str) -> float | None:
    try:
        return round(shutil.disk_usage(directory).free / 1e9, 2)
    except OSError:
        return None


# --------------------------------------------------------------------------- all together

def effective_env(base: Mapping[str, str], extra: Mapping[str, str], managed: Mapping[str, str]) -> dict[str, str]:
    """What the agent's processes see: its environment, pushed credentials, then provisioned vars."""
    return {**base, **extra, **managed}


async def gather(req: Requirements, directory: str, *, env: Mapping[str, str], timeout: float = 10.0,
                 probes: Mapping[str, tuple[str, ...]] = DEFAULT_PROBES) -> Facts:
    """Collect what the checks of ``req`` need, concurrently where it helps (``probes``: the node's
    version-probe table; a tool outside it is not run)."""
    facts = Facts(directory)
    version_reqs = [*req.runtime, *req.tools]
    cwd = directory if _is_dir(directory) else None
    found = await asyncio.gather(*(probe_version(r, env, timeout, cwd, probes) for r in version_reqs))
    facts.probes = {f"{r.category}:{r.name}": p for r, p in zip(version_reqs, found, strict=True)}
    for ev in req.env_vars:
        value = env.get(ev.name)
        facts.env_present[ev.name] = bool(value)
        if ev.mode == "value":
            facts.env_matches[ev.name] = value == ev.value
    for rel in [AGENT_MD] if req.agent_md else []:
        try:
            facts.files[rel] = file_fact(confine(directory, rel), read=True)
        except PathRefused as exc:
            facts.refused[rel] = str(exc)
    for rel in [*req.context_files, *req.context_dirs, *req.docs_required, *req.docs_recommended]:
        if rel in facts.files or rel in facts.refused:
            continue
        try:
            facts.files[rel] = file_fact(confine(directory, rel))
        except PathRefused as exc:
            facts.refused[rel] = str(exc)
    if req.git is not None:
        facts.git = await git_facts(directory, req, env, timeout)
    if req.native_libs:
        facts.libs = await lib_facts([lib.name for lib in req.native_libs], env, timeout)
    if req.android is not None:
        facts.android_root, facts.android_present = android_facts(req, env)
    if req.disk is not None:
        facts.disk_free_gb = disk_free_gb(directory)
    return facts
