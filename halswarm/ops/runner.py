"""Run the `halswarm.ops` playbooks through ansible-runner, off the caller's thread.

- The playbook runs in ansible-runner's own worker thread (``run_async``); the caller's thread only
  drains a queue of ready-made progress lines, so an asyncio loop is never blocked
  (``arun_playbook`` wraps the whole thing in ``asyncio.to_thread``) and Ctrl-C in a CLI is
  handled in the main thread: it sets a cancel flag that runner polls, and runner kills
  ansible-playbook's process group.
- Progress: one line per task start and per host result (ok/changed/failed/unreachable,
  skipped only when verbose), retries, check-mode diffs, then a recap per host.
- Every run keeps its artifacts (job events, stdout, rc, command) under
  ``<state_dir>/runs/<ident>/``; the oldest runs beyond ``keep_runs`` are removed.
- The outcome is the playbook's: ``RunResult.exit_code`` is 0 when it succeeded, 1 when a host
  failed or was unreachable (or the run timed out), 130 when it was cancelled.

ansible-runner (and through it Ansible) is imported only when a playbook actually runs, so the
remote halctl commands never pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halswarm.ops import install

COLLECTION = "halswarm.ops"
PLAYBOOKS = ("deploy", "upgrade", "rollback", "uninstall", "firewall", "backup", "restore")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 130

Emit = Callable[[str], None]


@dataclass
class PlaybookRun:
    """What to run. ``playbook`` is a name of the collection (``deploy``), a FQCN or a file path."""

    playbook: str
    inventories: Sequence[str] = ()
    limit: str | None = None
    check: bool = False
    diff: bool = False
    extravars: Mapping[str, Any] = field(default_factory=dict)
    tags: str | None = None
    verbosity: int = 0
    timeout: int | None = None  # seconds for the whole run; None: no limit
    state_dir: Path | None = None
    keep_runs: int = 50


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class RunResult:
    status: str  # successful | failed | timeout | canceled
    rc: int
    ident: str
    artifact_dir: Path
    stats: dict[str, HostStats]
    failures: list[tuple[str, str, str]]  # (host, task, message)
    duration: float
    errors: list[str] = field(default_factory=list)  # Ansible's own error lines (before/outside tasks)

    @property
    def exit_code(self) -> int:
        if self.status == "successful" and self.rc == 0:
            return EXIT_OK
        if self.status == "canceled":
            return EXIT_CANCELLED
        return EXIT_FAILED


# --------------------------------------------------------------------------- locations


def default_state_dir() -> Path:
    """``$HALCTL_STATE_DIR``, else ``$XDG_STATE_HOME/halctl``, else ``~/.local/state/halctl``."""
    env = os.environ.get("HALCTL_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "halctl"


def repo_root() -> Path | None:
    """The checkout this package runs from (editable installs), if it holds the collection."""
    return install.repo_root()


def collections_paths() -> list[str]:
    """Where ansible looks for halswarm.ops: ``$HALCTL_COLLECTIONS_PATH``, this installation's own
    collection (the checkout's ``collections/``, else the copy inside the wheel), then whatever
    ANSIBLE_COLLECTIONS_PATH / ansible's defaults give."""
    paths: list[str] = install.env_paths("HALCTL_COLLECTIONS_PATH")
    own = install.own_collections_dir()
    if own is not None:
        paths.append(str(own))
    existing = install.env_paths("ANSIBLE_COLLECTIONS_PATH") or install.env_paths("ANSIBLE_COLLECTIONS_PATHS")
    if existing:
        paths.extend(existing)
    else:
        paths.extend([str(Path.home() / ".ansible" / "collections"), "/usr/share/ansible/collections"])
    return list(dict.fromkeys(paths))


def resolve_playbook(name: str) -> str:
    """``deploy`` or ``deploy.yml`` -> ``halswarm.ops.deploy``; a FQCN or an existing file is used as given."""
    path = Path(name).expanduser()
    if path.suffix in (".yml", ".yaml"):
        if path.exists():
            return str(path.resolve())
        name = path.stem if "/" not in name else name
    if name.count(".") >= 2:
        return name
    return f"{COLLECTION}.{name}"


# --------------------------------------------------------------------------- progress lines


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _result_message(res: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "reason"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())[:500]
    if res.get("results"):  # a loop: the first failed item tells most
        for item in res["results"]:
            if isinstance(item, Mapping) and item.get("failed"):
                return _result_message(item)
    return ""


def _render_diff(diff: Any) -> list[str]:
    items = diff if isinstance(diff, list) else [diff]
    out: list[str] = []
    for d in items:
        if not isinstance(d, Mapping):
            continue
        if "prepared" in d and isinstance(d["prepared"], str):
            out.extend(d["prepared"].splitlines())
            continue
        before, after = d.get("before"), d.get("after")
        if not isinstance(before, str) or not isinstance(after, str):
            continue
        out.extend(
            difflib.unified_diff(
                before.splitlines(), after.splitlines(),
                fromfile=str(d.get("before_header", "before")), tofile=str(d.get("after_header", "after")),
                lineterm="",
            )
        )
    return out


ERROR_PREFIXES = ("[ERROR]:", "ERROR!")  # ansible-core >= 2.19, older cores
MAX_ERROR_LINES = 40


def starts_error(line: str) -> bool:
    """Does a line of ansible-playbook's own output open an error (not a task result)?"""
    return line.lstrip().startswith(ERROR_PREFIXES)


def ends_error(line: str) -> bool:
    """Does a line end Ansible's error block (the next warning or deprecation starts)?"""
    return line.lstrip().startswith(("[WARNING]", "[DEPRECATION WARNING]", "[DEPRECATION]"))


class ProgressFormatter:
    """Turns ansible-runner events into progress lines. Called in runner's thread: O(1), no I/O.

    Ansible's own errors (a playbook that cannot be found or parsed, a bad inventory) come as plain
    output before any task; they are shown without ``-v`` and kept in ``errors``."""

    def __init__(self, emit: Emit, *, verbose: bool = False, diff: bool = False) -> None:
        self.emit = emit
        self.verbose = verbose
        self.diff = diff
        self.stats: dict[str, HostStats] = {}
        self.failures: list[tuple[str, str, str]] = []
        self.errors: list[str] = []
        self._in_error = False

    def _plain_line(self, text: str) -> None:
        """One line of ansible-playbook's plain output (a ``verbose`` event)."""
        if starts_error(text):
            self._in_error = True
        elif self._in_error and ends_error(text):
            self._in_error = False
        if self._in_error:
            if len(self.errors) < MAX_ERROR_LINES:
                self.errors.append(text.rstrip())
                self.emit(text.rstrip())
        elif self.verbose and text.strip():
            self.emit(text.strip())

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr") or "?"
        task = data.get("task") or ""
        res = data.get("res") or {}
        if kind == "playbook_on_play_start":
            self.emit(f"{_stamp()} PLAY {data.get('play') or data.get('name') or ''}".rstrip())
        elif kind == "playbook_on_task_start":
            self.emit(f"{_stamp()}   TASK {task}")
        elif kind == "runner_on_ok":
            status = "changed" if res.get("changed") else "ok"
            if status == "changed" or self.verbose:
                self.emit(f"{_stamp()}     {status:<11} {host}")
            if self.diff and res.get("diff"):
                for line in _render_diff(res["diff"]):
                    self.emit(f"             {line}")
        elif kind == "runner_on_failed":
            msg = _result_message(res)
            if data.get("ignore_errors"):
                self.emit(f"{_stamp()}     failed (ignored) {host}: {msg}")
            else:
                self.emit(f"{_stamp()}     FAILED      {host}: {msg}")
                self.failures.append((host, task, msg))
        elif kind == "runner_on_unreachable":
            msg = _result_message(res)
            self.emit(f"{_stamp()}     UNREACHABLE {host}: {msg}")
            self.failures.append((host, task, f"unreachable: {msg}"))
        elif kind == "runner_on_skipped":
            if self.verbose:
                self.emit(f"{_stamp()}     skipped     {host}")
        elif kind == "runner_retry":
            attempt, total = res.get("attempts", "?"), res.get("retries", "?")
            self.emit(f"{_stamp()}     retrying    {host} (attempt {attempt} of {total}): {task}")
        elif kind == "runner_on_async_poll":
            self.emit(f"{_stamp()}     waiting     {host}")
        elif kind == "playbook_on_stats":
            self._stats(data)
        elif kind == "verbose":
            self._plain_line(event.get("stdout") or "")
        elif kind == "warning":
            text = (event.get("stdout") or "").strip()
            if text:
                self.emit(text)
        if kind != "verbose":
            self._in_error = False
        return True  # keep the event on disk (artifacts)

    def _stats(self, data: Mapping[str, Any]) -> None:
        keys = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
                "skipped": "skipped", "rescued": "rescued", "ignored": "ignored"}
        for src, dst in keys.items():
            for host, count in (data.get(src) or {}).items():
                setattr(self.stats.setdefault(host, HostStats()), dst, int(count))

    def recap(self) -> list[str]:
        """Per-host counts; nothing when no play ran (an empty RECAP would hide Ansible's error)."""
        if not self.stats:
            return []
        lines = ["RECAP"]
        for host in sorted(self.stats):
            s = self.stats[host]
            lines.append(
                f"  {host:<24} ok={s.ok:<4} changed={s.changed:<4} failed={s.failed:<3} "
                f"unreachable={s.unreachable:<3} skipped={s.skipped:<4} rescued={s.rescued:<3} ignored={s.ignored}"
            )
        return lines


# --------------------------------------------------------------------------- running


def _prune_runs(runs_dir: Path, keep: int) -> None:
    if keep <= 0 or not runs_dir.is_dir():
        return
    dirs = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in dirs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _envvars(extra: Mapping[str, str] | None) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/bin:/bin")
    env = {
        # ansible-runner finds ansible-playbook on PATH: the interpreter's own bin first.
        "PATH": path if path.split(os.pathsep)[0] == bin_dir else f"{bin_dir}{os.pathsep}{path}",
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(collections_paths()),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONUNBUFFERED": "1",
        # ansible-runner turns host key checking off unless told; halctl keeps ansible-playbook's
        # default (on) so a deploy never talks to an unverified host, unless the operator says so.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
    }
    if extra:
        env.update(extra)
    return env


def _playbook_tree(known: set[int]) -> list[Any]:
    """ansible-playbook processes started by this run (children of ours that were not there before)
    and all their descendants: the module processes may sit in other sessions or process groups,
    where runner's killpg does not reach them."""
    import psutil

    procs: list[Any] = []
    try:
        for child in psutil.Process().children():
            if child.pid in known:
                continue
            try:
                if any("ansible-playbook" in part for part in child.cmdline()):
                    procs.append(child)
                    procs.extend(child.children(recursive=True))
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return procs


def _reap(procs: list[Any]) -> None:
    import psutil

    alive = [p for p in procs if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _gone, alive = psutil.wait_procs(alive, timeout=3)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def run_playbook(
    spec: PlaybookRun,
    *,
    emit: Emit | None = None,
    cancel: threading.Event | None = None,
    envvars: Mapping[str, str] | None = None,
) -> RunResult:
    """Run one playbook and block until it ends; progress goes to ``emit`` from this thread.

    ansible-playbook runs under ansible-runner in a worker thread. A KeyboardInterrupt in this
    thread (or ``cancel`` being set) cancels the run: runner kills the playbook's process group
    and the result's status is ``canceled``.
    """
    import ansible_runner  # lazy: Ansible only loads when a playbook runs

    out: Emit = emit or (lambda line: print(line, flush=True))
    cancel = cancel or threading.Event()
    state_dir = (spec.state_dir or default_state_dir()).expanduser()
    runs_dir = state_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        state_dir.chmod(0o700)
    name = Path(spec.playbook).stem if spec.playbook.endswith((".yml", ".yaml")) else spec.playbook.split(".")[-1]
    ident = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{name}"
    private = runs_dir / ident
    private.mkdir(mode=0o700)

    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    fmt = ProgressFormatter(lines.put, verbose=spec.verbosity > 0, diff=spec.diff or spec.check)
    cmdline: list[str] = []
    if spec.check:
        cmdline.append("--check")
    if spec.diff or spec.check:
        cmdline.append("--diff")
    root = repo_root()
    settings: dict[str, Any] = {"suppress_ansible_output": True, "pexpect_use_poll": True}
    if spec.timeout:
        settings["job_timeout"] = int(spec.timeout)
    kwargs: dict[str, Any] = dict(
        private_data_dir=str(private),
        ident="run",
        playbook=resolve_playbook(spec.playbook),
        inventory=[str(Path(i).expanduser().resolve()) if Path(i).expanduser().exists() else i
                   for i in spec.inventories] or None,
        limit=spec.limit,
        extravars=dict(spec.extravars) or None,
        tags=spec.tags,
        verbosity=spec.verbosity or None,
        cmdline=" ".join(cmdline) or None,
        envvars=_envvars(envvars),
        settings=settings,
        event_handler=fmt,
        cancel_callback=cancel.is_set,
        quiet=True,
        suppress_env_files=True,
    )
    if root is not None:
        kwargs["project_dir"] = str(root)  # its ansible.cfg (collections_path, interpreter) applies
    import psutil

    started = time.monotonic()
    before = {p.pid for p in psutil.Process().children()}
    thread, runner = ansible_runner.run_async(**kwargs)
    tree: list[Any] = []

    def drain() -> None:
        while True:
            try:
                out(lines.get_nowait())
            except queue.Empty:
                return

    try:
        while thread.is_alive():
            if cancel.is_set() and not tree:
                tree = _playbook_tree(before) or [None]
                out(f"{_stamp()} cancelling ...")
            thread.join(0.2)
            drain()
    except KeyboardInterrupt:
        tree = tree or _playbook_tree(before)
        cancel.set()
        out(f"{_stamp()} cancelling ...")
        while thread.is_alive():
            with contextlib.suppress(KeyboardInterrupt):
                thread.join(0.2)
            drain()
    if cancel.is_set():
        _reap([p for p in tree if p is not None])  # what runner's killpg left behind
    drain()
    for line in fmt.recap():
        out(line)
    status = "canceled" if cancel.is_set() else (runner.status or "failed")
    rc = runner.rc if runner.rc is not None else 1
    result = RunResult(
        status=status, rc=rc, ident=ident, artifact_dir=private / "artifacts" / "run",
        stats=fmt.stats, failures=fmt.failures, duration=time.monotonic() - started,
        errors=[line for line in fmt.errors if line.strip()],
    )
    _prune_runs(runs_dir, spec.keep_runs)
    return result


def run_collection_playbook(
    playbook: str,
    *,
    inventory: str | Sequence[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    state_dir: Path | None = None,
    emit: Emit | None = None,
) -> int:
    """Run a playbook of the collection (``backup.yml``, ``deploy``...) with progress on stdout and
    return the exit code halctl should end with (0 only when every host succeeded)."""
    inventories = [inventory] if isinstance(inventory, str) else list(inventory or [])
    result = run_playbook(
        PlaybookRun(playbook=playbook, inventories=inventories, limit=limit, check=check, diff=diff,
                    extravars=dict(extravars or {}), verbosity=verbosity, state_dir=state_dir),
        emit=emit,
    )
    return result.exit_code


async def arun_playbook(
    spec: PlaybookRun,
    *,
    emit: Emit | None = None,
    envvars: Mapping[str, str] | None = None,
) -> RunResult:
    """``run_playbook`` for asyncio callers: runs in a worker thread; cancelling the awaiting task
    cancels the playbook (and waits for runner to stop it)."""
    cancel = threading.Event()
    task = asyncio.ensure_future(
        asyncio.to_thread(run_playbook, spec, emit=emit, cancel=cancel, envvars=envvars)
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):
            await task
        raise


def host_address(inventory: str, host: str, timeout: float = 60) -> str | None:
    """Where ``inventory`` sends Ansible for ``host``, as ``[user@]address[:port]`` from its resolved vars
    (``ansible-inventory --host``: group_vars and host_vars included); None when it cannot tell.
    Blocking: call it off the event loop."""
    env = {**os.environ, **_envvars(None)}
    exe = shutil.which("ansible-inventory", path=env["PATH"])
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-i", inventory, "--host", host], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
        hostvars = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(hostvars, dict):
        return None
    user, port = hostvars.get("ansible_user"), hostvars.get("ansible_port")
    address = str(hostvars.get("ansible_host") or host)
    return f"{f'{user}@' if user else ''}{address}{f':{port}' if port else ''}"
