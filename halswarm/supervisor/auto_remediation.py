"""Event-driven remediation (`remediation.auto`, SPEC 8): the supervisor runs runbook remediations by itself.

Triggers (only for incident ids listed in `remediation.auto`):

- ``agent-crashed``: a node offline for `remediation.offline_minutes` (default 2) -> the remediation
  limited to that node's inventory host (the collection names agent hosts by their node id).
- ``supervisor-db-corruption``: the database fails its integrity check at start. The supervisor cannot
  repair a file it holds, so it launches the run detached (``systemd-run``) before exiting, or names the
  command to run (see `launch_db_remediation`).

Other ids in `remediation.auto` have no trigger yet: a warning at start says so.

Throttling: at most one run per (incident, host) within `remediation.window_minutes`, counted from the
start of the last automatic run and persisted (table ``auto_remediation_state``) so a restart honours it.
One offline episode of a node yields one decision: a run, or one ``remediation.throttled`` event.

A run is ``halctl --output json remediate ID -i INVENTORY --limit HOST --no-send`` in a subprocess (its own
process group, stopped after `remediation.timeout_minutes`); the supervisor stores the report itself
(actor ``auto``, audited, like a POSTed one) and emits the routed events ``remediation.started``, then
``remediation.completed`` / ``remediation.escalated`` (same rule and data as the HTTP API), or
``remediation.failed`` when no report came out (missing inventory or ansible-runner, timeout, crash);
that failure is recorded too, as a ``failed`` report carrying the one-line error.

`decide` is the whole policy as a pure function (facts in, decisions out).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halswarm.core.remediation.report import build_report, redact, validate_report
from halswarm.store.repos.remediations import insert_remediation
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)

AGENT_CRASHED = "agent-crashed"
DB_CORRUPTION = "supervisor-db-corruption"
TRIGGERS = {AGENT_CRASHED: "node offline", DB_CORRUPTION: "database integrity failure at start"}
ACTOR = "auto"
ESCALATING = ("failed", "escalated")  # as remediations_api: these statuses route as remediation.escalated
SUPERVISORS_GROUP = "hal_supervisors"
_PATTERN_CHARS = set("*?[]!&:,~ \t\n")
MAX_CONCURRENT = 2  # ansible runs at once; more wait their turn (a partition can drop many nodes)

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AutoConfig:
    auto: tuple[str, ...] = ()
    inventory: str | None = None
    window_seconds: float = 3600.0
    offline_seconds: float = 120.0
    timeout_seconds: float = 900.0
    supervisor_host: str | None = None
    state_dir: Path = Path(".")

    @classmethod
    def from_config(cls, cfg: Any) -> AutoConfig:
        """From a `SupervisorConfig`; run artifacts live beside the database."""
        return cls(auto=tuple(cfg.remediation_auto), inventory=cfg.remediation_inventory,
                   window_seconds=cfg.remediation_window_minutes * 60.0,
                   offline_seconds=cfg.remediation_offline_minutes * 60.0,
                   timeout_seconds=cfg.remediation_timeout_minutes * 60.0,
                   supervisor_host=cfg.remediation_supervisor_host,
                   state_dir=Path(cfg.database_path).expanduser().resolve().parent / "remediation-runs")

    @property
    def check_interval(self) -> float:
        """How often node liveness is looked at: fine enough for the threshold, never busy."""
        return min(5.0, max(0.25, self.offline_seconds / 8))

    @property
    def untriggered(self) -> list[str]:
        return [i for i in self.auto if i not in TRIGGERS]


# --------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class NodeFacts:
    node_id: str
    status: str
    offline_since: float | None  # when the engine saw it go offline (None while online)


@dataclass(frozen=True)
class Decision:
    kind: str  # "run" | "throttled"
    incident: str
    host: str
    reason: str
    episode: tuple[str, str, float]  # (incident, host, offline_since): decided once
    last_started: float | None = None
    retry_after: float | None = None


def valid_host(name: str) -> bool:
    """A node id usable as one Ansible --limit host (no pattern syntax)."""
    return bool(name) and not (set(name) & _PATTERN_CHARS)


def decide(now: float, cfg: AutoConfig, nodes: Iterable[NodeFacts],
           last_started: Mapping[tuple[str, str], float], decided: Iterable[tuple[str, str, float]] = ()
           ) -> list[Decision]:
    """Which runs to start now (pure). A node offline >= `offline_seconds` gets a ``run`` unless the same
    incident started on that host within the window; then its offline episode (`decided` holds the
    episodes already decided) gets one ``throttled`` decision. A node that stays offline is run again
    once the window has passed."""
    if AGENT_CRASHED not in cfg.auto:
        return []
    done = set(decided)
    out: list[Decision] = []
    for n in sorted(nodes, key=lambda n: n.node_id):
        if n.status != "offline" or n.offline_since is None or not valid_host(n.node_id):
            continue
        offline = now - n.offline_since
        if offline < cfg.offline_seconds:
            continue
        episode = (AGENT_CRASHED, n.node_id, n.offline_since)
        reason = f"node {n.node_id} offline for {offline:.0f} s (threshold {cfg.offline_seconds:g} s)"
        last = last_started.get((AGENT_CRASHED, n.node_id))
        if last is None or now - last >= cfg.window_seconds:
            out.append(Decision("run", AGENT_CRASHED, n.node_id, reason, episode, last))
        elif episode not in done:
            out.append(Decision("throttled", AGENT_CRASHED, n.node_id, reason, episode, last,
                                last + cfg.window_seconds))
    return out


# --------------------------------------------------------------------------- running halctl


def halctl_argv(incident: str, inventory: str, limit: str, *, state_dir: Path | None = None,
                timeout: float | None = None, json_output: bool = True, send: bool = False) -> list[str]:
    """The halctl command line of one run (this interpreter's halctl, no PATH lookup)."""
    argv = [sys.executable, "-m", "halswarm.cli.main"]
    if json_output:
        argv += ["--output", "json"]
    argv += ["remediate", incident, "-i", inventory, "--limit", limit]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    if timeout is not None:
        argv += ["--timeout", str(max(1, int(timeout)))]
    if not send:
        argv.append("--no-send")
    return argv


def display_command(incident: str, inventory: str | None, limit: str) -> str:
    """What an operator would type."""
    return shlex.join(["halctl", "remediate", incident, "-i", inventory or "INVENTORY", "--limit", limit])


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The JSON report halctl printed last (live progress may come before it)."""
    text = stdout.strip()
    starts = [0] if text.startswith("{") else []
    pos = text.rfind("\n{")
    if pos >= 0:
        starts.insert(0, pos + 1)
    for start in starts:
        try:
            doc = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


@dataclass
class RunSpec:
    incident: str
    host: str
    limit: str
    reason: str
    inventory: str | None
    timeout: float
    state_dir: Path


@dataclass
class Outcome:
    report: dict[str, Any] | None = None
    error: str | None = None
    rc: int | None = None


def preflight(spec: RunSpec) -> str | None:
    """A one-line reason the run cannot start, or None (blocking: call off the loop)."""
    if not spec.inventory:
        return "remediation.inventory is not set"
    if not os.path.exists(spec.inventory):
        return f"inventory {spec.inventory} does not exist"
    if importlib.util.find_spec("ansible_runner") is None:
        return "ansible-runner is not installed for this supervisor (pip install 'hal-o-swarm[ops]')"
    return None


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_halctl(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
    """Run halctl for `spec` off the loop; stop it (process group) on timeout or supervisor shutdown."""
    problem = await asyncio.to_thread(preflight, spec)
    if problem:
        return Outcome(error=problem)
    await asyncio.to_thread(spec.state_dir.mkdir, parents=True, exist_ok=True)
    assert spec.inventory is not None
    argv = halctl_argv(spec.incident, spec.inventory, spec.limit, state_dir=spec.state_dir, timeout=spec.timeout)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", HALCTL_STATE_DIR=str(spec.state_dir))
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    env=env, start_new_session=True)
    except OSError as exc:
        return Outcome(error=f"cannot start halctl: {exc}")
    comm = asyncio.ensure_future(proc.communicate())
    stop = asyncio.ensure_future(stopping.wait())
    # halctl gets --timeout; this bound catches a halctl that does not honour it.
    done, _ = await asyncio.wait({comm, stop}, timeout=spec.timeout + 30, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if comm not in done:
        why = "interrupted: the supervisor is shutting down" if stopping.is_set() else \
            f"timed out after {spec.timeout + 30:.0f} s"
        _kill_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(comm), 5)
        except TimeoutError:
            _kill_group(proc, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(comm, 5)
        return Outcome(error=why, rc=proc.returncode)
    out, err = comm.result()
    report = parse_report(out.decode(errors="replace"))
    if report is None:
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no report on stdout"
        return Outcome(error=f"halctl exited {proc.returncode}: {last[:500]}", rc=proc.returncode)
    return Outcome(report=report, rc=proc.returncode)


# --------------------------------------------------------------------------- storage


def _load_state(conn: Any) -> dict[tuple[str, str], float]:
    return {(r[0], r[1]): float(r[2]) for r in conn.execute(
        "SELECT incident, host, started_at FROM auto_remediation_state")}


def _save_started(conn: Any, incident: str, host: str, at: float, reason: str) -> None:
    conn.execute(
        "INSERT INTO auto_remediation_state(incident, host, started_at, finished_at, status, report_id, reason)"
        " VALUES (?,?,?,NULL,NULL,NULL,?) ON CONFLICT(incident, host) DO UPDATE SET started_at=excluded.started_at,"
        " finished_at=NULL, status=NULL, report_id=NULL, reason=excluded.reason", (incident, host, at, reason))


def store_report(conn: Any, report: Mapping[str, Any], *, actor: str, now: float, reason: str, host: str) -> None:
    """Insert a report like POST /api/v1/remediations does (row + audit), and finish the throttle row."""
    rid = str(report["id"])[:100]
    insert_remediation(conn, dict(report), actor=actor, now=now, audit_args={"trigger": reason})
    conn.execute("UPDATE auto_remediation_state SET finished_at=?, status=?, report_id=? WHERE incident=? AND host=?",
                 (now, report["status"], rid, report["incident"], host))


# --------------------------------------------------------------------------- the engine

Runner = Callable[[RunSpec, asyncio.Event], Awaitable[Outcome]]


@dataclass
class _Stats:
    runs: int = 0
    throttled: int = 0
    failed: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class AutoRemediation(PeriodicEngine):
    """Watches node liveness, decides with `decide`, runs, records and routes."""

    def __init__(self, cfg: AutoConfig, nodes: Mapping[str, Any], ingestor: Any, writer: Any, reader: Any, *,
                 runner: Runner = run_halctl, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.cfg = cfg
        self.nodes = nodes
        self.ingestor = ingestor
        self.writer = writer
        self.reader = reader
        self.runner = runner
        self.clock = clock
        self.offline_since: dict[str, float] = {}
        self._connected: dict[str, float | None] = {}
        self.last_started: dict[tuple[str, str], float] = {}
        self.decided: set[tuple[str, str, float]] = set()
        self.stats = _Stats()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    @property
    def active(self) -> bool:
        return AGENT_CRASHED in self.cfg.auto

    async def start(self) -> None:
        for inc in self.cfg.untriggered:
            log.warning("remediation.auto: %s has no automatic trigger in this version; it is not run by itself",
                        inc)
        if not self.active:
            return
        self.last_started = await self.reader.run(_load_state)
        self.observe(self.clock())  # nodes offline at start count from now: they get a full threshold
        self._start_loop(self.cfg.check_interval, "auto-remediation", log)
        log.info("auto remediation: %s after %g s offline, at most once per host every %g min (inventory %s)",
                 AGENT_CRASHED, self.cfg.offline_seconds, self.cfg.window_seconds / 60, self.cfg.inventory or "unset")

    async def stop(self) -> None:
        self._stopping.set()
        await self._stop_loop(grace=15)  # runs in flight stop their halctl and record the interruption

    def observe(self, now: float) -> None:
        """Track since when each node is offline (the engine's own clock). A node that reconnected and
        dropped again between two looks (a new `connected_at`) starts a new offline episode."""
        for node_id, node in list(self.nodes.items()):
            conn = getattr(node, "connected_at", None)
            if node.status != "offline":
                self.offline_since.pop(node_id, None)
            elif node_id not in self.offline_since or self._connected.get(node_id) != conn:
                self.offline_since[node_id] = now
            self._connected[node_id] = conn
        for node_id in [n for n in self.offline_since if n not in self.nodes]:
            del self.offline_since[node_id]
        live = set(self.offline_since.items())
        self.decided = {e for e in self.decided if (e[1], e[2]) in live}

    def facts(self) -> list[NodeFacts]:
        return [NodeFacts(nid, n.status, self.offline_since.get(nid)) for nid, n in list(self.nodes.items())]

    async def check(self) -> list[Decision]:
        now = self.clock()
        self.observe(now)
        decisions = decide(now, self.cfg, self.facts(), self.last_started, self.decided)
        for d in decisions:
            self.decided.add(d.episode)
            if d.kind == "throttled":
                self.stats.throttled += 1
                log.info("auto remediation %s on %s throttled: last run %.0f s ago (window %g min)", d.incident,
                         d.host, now - (d.last_started or now), self.cfg.window_seconds / 60)
                self.ingestor.emit(d.host, "remediation.throttled", {
                    "incident": d.incident, "hosts": [d.host], "actor": ACTOR, "trigger": d.reason,
                    "last_started_at": d.last_started, "retry_after": d.retry_after,
                    "window_minutes": self.cfg.window_seconds / 60})
                continue
            await self.launch(d.incident, d.host, d.host, d.reason, now)
        return decisions

    async def launch(self, incident: str, host: str, limit: str, reason: str, now: float) -> None:
        """Persist the throttle mark, announce, and run in the background."""
        self.last_started[(incident, host)] = now
        await self.writer.run(lambda c: _save_started(c, incident, host, now, reason))
        self.stats.runs += 1
        log.info("auto remediation %s on %s started: %s", incident, host, reason)
        self.ingestor.emit(host, "remediation.started", {"incident": incident, "hosts": [host], "actor": ACTOR,
                                                          "trigger": reason})
        spec = RunSpec(incident, host, limit, reason, self.cfg.inventory, self.cfg.timeout_seconds,
                       self.cfg.state_dir)
        self._spawn(self._run(spec, now), name=f"auto-remediation-{incident}-{host}")

    async def _run(self, spec: RunSpec, started: float) -> None:
        try:
            async with self._slots:
                outcome = await self.runner(spec, self._stopping) if not self._stopping.is_set() else \
                    Outcome(error="interrupted: the supervisor is shutting down")
        except Exception as exc:
            outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
        report = outcome.report
        problems = validate_report(report) if report is not None else []
        if report is not None and problems:
            outcome = Outcome(error="invalid report from halctl: " + "; ".join(problems[:5]), rc=outcome.rc)
            report = None
        failed = report is None
        if report is None:
            report = build_report(spec.incident, hosts=[spec.host], facts={}, plan={"decision": "unknown"},
                                  status="failed", started=started, finished=self.clock(),
                                  error=outcome.error or "no report", run={"rc": outcome.rc, "actor": ACTOR})
        report = redact(report)
        now = self.clock()
        try:
            await self.writer.run(lambda c: store_report(c, report, actor=ACTOR, now=now, reason=spec.reason,
                                                             host=spec.host))
        except Exception as exc:
            log.error("auto remediation %s on %s: report %s not stored: %s", spec.incident, spec.host,
                      report["id"], exc)
        hosts = [str(h) for h in report["hosts"]]
        data = {"id": report["id"], "incident": report["incident"], "severity": report["severity"],
                "status": report["status"], "decision": report["decision"], "hosts": hosts,
                "check": report["check"], "duration_s": report["duration_s"], "error": report.get("error"),
                "actor": ACTOR, "trigger": spec.reason}
        if failed:
            self.stats.failed += 1
            ev_type = "remediation.failed"
            log.error("auto remediation %s on %s failed: %s", spec.incident, spec.host, outcome.error)
        else:
            ev_type = "remediation.escalated" if report["status"] in ESCALATING else "remediation.completed"
            level = logging.WARNING if report["status"] in ESCALATING else logging.INFO
            log.log(level, "auto remediation %s on %s: %s (report %s)", spec.incident, spec.host, report["status"],
                    report["id"])
        self.stats.last = {"incident": spec.incident, "host": spec.host, "status": report["status"],
                           "id": report["id"], "event": ev_type}
        self.ingestor.emit(spec.host, ev_type, data)


# --------------------------------------------------------------------------- DB corruption at start


def under_systemd(env: Mapping[str, str] = os.environ) -> bool:
    """Started by systemd (a service has INVOCATION_ID) on a host where systemd-run can start units."""
    return bool(env.get("INVOCATION_ID")) and Path("/run/systemd/system").is_dir() and \
        shutil.which("systemd-run") is not None


def db_stamp_path(database_path: str) -> Path:
    return Path(database_path).expanduser().with_name(Path(database_path).name + ".auto-remediation.json")


def systemd_run_argv(unit: str, inner: list[str]) -> list[str]:
    return ["systemd-run", "--unit", unit, "--collect", "--quiet", "--no-block", *inner]


def launch_db_remediation(cfg: Any, *, now: float | None = None, systemd: bool | None = None,
                          run: Callable[..., Any] = subprocess.run) -> str:
    """`supervisor-db-corruption` when the database failed its check at start: start the run detached
    (it must outlive this process, which exits), at most once per window (a stamp file beside the
    database). Returns the clause appended to the one-line start-up error."""
    now = time.time() if now is None else now
    limit = cfg.remediation_supervisor_host or SUPERVISORS_GROUP
    shown = display_command(DB_CORRUPTION, cfg.remediation_inventory, limit)
    if not cfg.remediation_inventory:
        return f"auto remediation not started (remediation.inventory is not set): run `{shown}`"
    stamp = db_stamp_path(cfg.database_path)
    window = cfg.remediation_window_minutes * 60
    try:
        prev = json.loads(stamp.read_text())
        if now - float(prev["started_at"]) < window:
            return (f"auto remediation already started as {prev.get('unit')} "
                    f"{now - float(prev['started_at']):.0f} s ago (window {cfg.remediation_window_minutes} min)")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not (under_systemd() if systemd is None else systemd):
        return f"not under systemd, auto remediation not started: run `{shown}`"
    unit = f"hal-remediate-db-{int(now)}"
    state_dir = Path(cfg.database_path).expanduser().resolve().parent / "remediation-runs"
    inner = halctl_argv(DB_CORRUPTION, cfg.remediation_inventory, limit, state_dir=state_dir,
                        timeout=cfg.remediation_timeout_minutes * 60, json_output=False, send=True)
    try:
        res = run(systemd_run_argv(unit, inner), capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"auto remediation could not be started ({exc}): run `{shown}`"
    if res.returncode != 0:
        why = (res.stderr or "").strip().splitlines()
        return f"auto remediation could not be started ({why[-1] if why else f'rc {res.returncode}'}): run `{shown}`"
    with contextlib.suppress(OSError):
        stamp.write_text(json.dumps({"started_at": now, "unit": unit, "command": inner}))
    return f"auto remediation started as systemd unit {unit} (`{shown}`)"
