"""Event-driven remediation (`remediation.auto`, SPEC 8): the supervisor runs runbook remediations by itself.

Triggers (only for incident ids listed in `remediation.auto`):

- ``agent-crashed``: a node offline for `remediation.offline_minutes` (default 2) -> the remediation
  limited to that node's inventory host (the collection names agent hosts by their node id).
- ``agent-high-memory``: the agent's RSS share of its MemoryMax (when it reports both; else the node's
  RAM share) at or above `remediation.memory_percent` (80) in
  `remediation.memory_heartbeats` (3) consecutive heartbeats seen by the periodic pass
  (`core.remediation.triggers`) -> the remediation on that node's inventory host.
- ``cost-data-discrepancy``: a cost provider's polls failed `remediation.cost_failures` (3) times in a row
  (the aggregator's count, read through `cost_state`) -> the remediation on the supervisor host; once
  per degradation episode.
- ``supervisor-db-corruption``: the database fails its integrity check at start (see `db_launch`).

- any listed incident: a firing Alertmanager alert naming it (``POST /api/v1/alerts``, `on_alert`).

An incident whose repair restarts the supervisor is handed to the root request unit instead of run as a child
(`_hand_over`); its report comes back through ``POST /api/v1/remediations``. Which ones: the pure
`requests.needs_root_runner` (always the `RESTARTS_SUPERVISOR` set; ``cost-data-discrepancy`` when its plan,
fed the supervisor's own cost health, restarts the supervisor: the aggregator is not running).

Other ids in `remediation.auto` have no built-in trigger (docs/remediation.md says why for each): a
warning at start says only alerts start them. Every trigger goes through `_fire`/`launch`: one throttle.

Throttling: at most one run per (incident, host) within `remediation.window_minutes`, counted from the
start of the last automatic run and persisted (table ``auto_remediation_state``) so a restart honours it.
One offline episode of a node yields one decision (`policy.decide`): a run, or one
``remediation.throttled`` event.

A run is ``halctl --output json remediate ID -i INVENTORY --limit HOST --no-send`` (`halctl_run`); the
supervisor stores the report itself (actor ``auto``, audited, like a POSTed one) and emits the routed
events ``remediation.started``, then the event of `core.remediation.routing.route` (the rule of the HTTP
API), or ``remediation.failed`` when no report came out (missing inventory or ansible-runner, timeout,
crash); that failure is recorded too, as a ``failed`` report carrying the one-line error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from halswarm.core.remediation.report import build_report, redact, validate_report
from halswarm.core.remediation.requests import RESTARTS_SUPERVISOR_WHEN_PLANNED, cost_facts, needs_root_runner
from halswarm.core.remediation.routing import route
from halswarm.core.remediation.triggers import (
    CostProviderFacts,
    Streak,
    agent_memory_percent,
    cost_failures,
    next_streak,
)
from halswarm.store.repos.remediations import (
    insert_remediation,
    load_auto_started,
    save_auto_started,
    store_auto_report,
)
from halswarm.supervisor.features.remediations.db_launch import write_request
from halswarm.supervisor.features.remediations.halctl_run import Outcome, RunSpec, display_command, run_halctl
from halswarm.supervisor.features.remediations.metrics import RemediationMetrics
from halswarm.supervisor.features.remediations.policy import Decision, NodeFacts, decide, valid_host
from halswarm.supervisor.features.remediations.settings import (
    AGENT_HIGH_MEMORY,
    COST_DISCREPANCY,
    NO_TRIGGER,
    PERIODIC,
    AutoConfig,
)
from halswarm.supervisor.runtime.periodic import PeriodicEngine

if TYPE_CHECKING:
    from halswarm.core.model import Node
    from halswarm.store.reader import Reader
    from halswarm.store.writer import Writer
    from halswarm.supervisor.runtime.ingest import Ingestor

log = logging.getLogger(__name__)

ACTOR = "auto"
MAX_CONCURRENT = 2  # ansible runs at once; more wait their turn (a partition can drop many nodes)

Runner = Callable[[RunSpec, asyncio.Event], Awaitable[Outcome]]
CostState = Callable[[], list[CostProviderFacts]]  # the cost aggregator's per-provider poll state
CostHealth = Callable[[], Awaitable[Mapping[str, Any]]]  # what GET /api/v1/cost/status answers


@dataclass
class _Stats:
    runs: int = 0
    throttled: int = 0
    failed: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class AutoRemediation(PeriodicEngine):
    """Watches node liveness, decides with `decide`, runs, records and routes. A service: the composition
    root starts it after the hub and stops it (runs in flight recorded as interrupted) before the hub."""

    def __init__(self, cfg: AutoConfig, nodes: Mapping[str, Node], ingestor: Ingestor, writer: Writer,
                 reader: Reader, *, runner: Runner = run_halctl, clock: Callable[[], float] = time.time,
                 cost_state: CostState = list, cost_health: CostHealth | None = None,
                 vitals: Mapping[str, Mapping[str, float]] | None = None,
                 metrics: RemediationMetrics | None = None) -> None:
        super().__init__()
        self.metrics = metrics
        self.cfg = cfg
        self.nodes = nodes
        self.ingestor = ingestor
        self.writer = writer
        self.reader = reader
        self.runner = runner
        self.clock = clock
        self.cost_state = cost_state
        self.cost_health = cost_health
        self.vitals: Mapping[str, Mapping[str, float]] = vitals if vitals is not None else {}
        self._cost_decided: set[tuple[str, float]] = set()
        self.offline_since: dict[str, float] = {}
        self._connected: dict[str, float | None] = {}
        self.last_started: dict[tuple[str, str], float] = {}
        self.decided: set[tuple[str, str, float]] = set()
        self._alert_throttled: set[tuple[str, str, float]] = set()  # (incident, host, last start) told once
        self._memory: dict[str, Streak] = {}  # node id -> heartbeats above the memory threshold
        self._heartbeat_seen: dict[str, float | None] = {}
        self.stats = _Stats()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._checking: set[tuple[str, str]] = set()  # (incident, host) of check runs asked for by a person

    @property
    def active(self) -> bool:
        """Whether a trigger of the periodic pass is listed (the loop runs only then)."""
        return any(i in self.cfg.auto for i in PERIODIC)

    async def start(self) -> None:
        for inc in self.cfg.untriggered:
            log.warning("remediation.auto: %s has no automatic trigger (%s); only an alert "
                        "(POST /api/v1/alerts) starts it", inc, NO_TRIGGER.get(inc, "see docs/remediation.md"))
        if self.cfg.auto:  # alerts can start any listed incident: the persisted throttle applies to them too
            self.last_started = await self.reader.run(load_auto_started)
        if not self.active:
            return
        self.observe(self.clock())  # nodes offline at start count from now: they get a full threshold
        self._start_loop(self.cfg.check_interval, "auto-remediation", log)
        log.info("auto remediation: %s, at most once per incident and host every %g min (inventory %s)",
                 ", ".join(i for i in PERIODIC if i in self.cfg.auto), self.cfg.window_seconds / 60,
                 self.cfg.inventory or "unset")

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
                self._throttled(d, now)
                continue
            await self.launch(d.incident, d.host, d.host, d.reason, now,
                              detected=self.offline_since.get(d.host))
        if AGENT_HIGH_MEMORY in self.cfg.auto:
            for node_id, reason in self.memory_pass():
                await self._fire(AGENT_HIGH_MEMORY, node_id, node_id, reason, now)
        if COST_DISCREPANCY in self.cfg.auto:
            state = self.cost_state()
            live = {(p.name, p.degraded_since) for p in state}
            self._cost_decided &= live  # a recovered provider's next degradation is a new episode
            for episode, reason in cost_failures(state, self.cfg.cost_failures, self._cost_decided):
                self._cost_decided.add(episode)
                limit = self.cfg.supervisor_limit
                await self._fire(COST_DISCREPANCY, limit, limit, reason, now)
        return decisions

    def memory_pass(self) -> list[tuple[str, str]]:
        """Feed each online node's newest heartbeat (once) to the memory detector: (node, reason) to fire.
        Only known nodes (the hub's registry, authenticated) usable as one --limit host are looked at."""
        fire: list[tuple[str, str]] = []
        for node_id in [n for n in self._heartbeat_seen if n not in self.nodes]:
            self._memory.pop(node_id, None)
            del self._heartbeat_seen[node_id]
        for node_id, node in sorted(self.nodes.items(), key=lambda kv: kv[0]):
            beat = getattr(node, "last_heartbeat", None)
            if node.status == "offline" or not valid_host(node_id):
                self._memory.pop(node_id, None)  # a restarted agent starts a new count
                continue
            if beat is None or self._heartbeat_seen.get(node_id) == beat:
                continue
            self._heartbeat_seen[node_id] = beat
            pct, figure = agent_memory_percent(self.vitals.get(node_id, {}), node.resources or {})
            streak, fired = next_streak(self._memory.get(node_id, Streak()), pct, self.cfg.memory_percent,
                                        self.cfg.memory_heartbeats)
            self._memory[node_id] = streak
            if fired:
                fire.append((node_id, f"node {node_id} memory at {pct:.0f}% ({figure}) in {self.cfg.memory_heartbeats} "
                                      f"consecutive heartbeats (threshold {self.cfg.memory_percent:g}%)"))
        return fire

    async def on_alert(self, incident: str, host: str, limit: str, reason: str) -> str:
        """Start `incident` on `limit` for a firing alert, under the same throttle as the built-in triggers
        (one run per incident and `host` per window, persisted): "started", "throttled" or "not_auto".
        One throttled event per window and host, however many times the alert repeats."""
        if incident not in self.cfg.auto:
            return "not_auto"
        return await self._fire(incident, host, limit, reason, self.clock())

    async def _fire(self, incident: str, host: str, limit: str, reason: str, now: float) -> str:
        """A trigger fired: run under the persisted throttle, or tell once per window that it is throttled."""
        last = self.last_started.get((incident, host))
        if last is not None and now - last < self.cfg.window_seconds:
            episode = (incident, host, last)
            if episode not in self._alert_throttled:
                self._alert_throttled.add(episode)
                self._throttled(Decision("throttled", incident, host, reason, episode, last,
                                         last + self.cfg.window_seconds), now)
            return "throttled"
        await self.launch(incident, host, limit, reason, now)  # marks the throttle before its first await
        return "started"

    async def check_run(self, incident: str, host: str, limit: str, actor: str) -> dict[str, Any]:
        """`halctl remediate --check` asked for by a person (ChatOps) for an incident the config allows
        (`remediation.auto` or `remediation.chat_check`: `AlertsService.request` decides), awaited so the caller
        can show the outcome. A check changes nothing, so it stays outside the throttle (it must not delay a
        repair) but shares the run slots; one at a time per incident and host. The report is stored with the
        person as actor and routed like any report. {"action": "checked", "status", "report_id", "error"}, or
        {"action": "busy"}."""
        if (incident, host) in self._checking:
            return {"action": "busy"}
        self._checking.add((incident, host))
        try:
            return await self._check(incident, host, limit, actor)
        finally:
            self._checking.discard((incident, host))

    async def _check(self, incident: str, host: str, limit: str, actor: str) -> dict[str, Any]:
        reason = f"check requested by {actor}"
        started = self.clock()
        self.ingestor.emit(host, "remediation.started", {"incident": incident, "hosts": [host], "actor": actor,
                                                          "trigger": reason, "check": True})
        spec = RunSpec(incident, host, limit, reason, self.cfg.inventory, self.cfg.timeout_seconds,
                       self.cfg.state_dir, check=True)
        outcome = await self._outcome(spec)
        report = outcome.report or build_report(
            incident, hosts=[host], facts={}, plan={"decision": "unknown"}, status="failed", started=started,
            finished=self.clock(), check=True, error=outcome.error or "no report", run={"rc": outcome.rc,
                                                                                       "actor": actor})
        report = redact(report)
        now = self.clock()
        try:
            await self.writer.run(lambda c: insert_remediation(c, report, actor=actor, now=now,
                                                               audit_args={"trigger": reason}))
        except Exception as exc:
            log.error("remediation check %s on %s: report %s not stored: %s", incident, host, report["id"], exc)
        ev_type, level, data = route(report, produced=outcome.report is not None)
        log.log(level, "remediation check %s on %s by %s: %s (report %s)", incident, host, actor, report["status"],
                report["id"])
        self.ingestor.emit(host, ev_type, data | {"actor": actor, "trigger": reason})
        return {"action": "checked", "status": report["status"], "report_id": str(report["id"]),
                "error": report.get("error")}

    def _throttled(self, d: Decision, now: float) -> None:
        self.stats.throttled += 1
        log.info("auto remediation %s on %s throttled: last run %.0f s ago (window %g min)", d.incident,
                 d.host, now - (d.last_started or now), self.cfg.window_seconds / 60)
        self.ingestor.emit(d.host, "remediation.throttled", {
            "incident": d.incident, "hosts": [d.host], "actor": ACTOR, "trigger": d.reason,
            "last_started_at": d.last_started, "retry_after": d.retry_after,
            "window_minutes": self.cfg.window_seconds / 60})

    async def launch(self, incident: str, host: str, limit: str, reason: str, now: float,
                     detected: float | None = None) -> None:
        """Persist the throttle mark, announce, and run in the background. `detected`: when the trigger
        first saw the fault (the node went offline), for the time to repair; default `now`."""
        if self.metrics is not None:
            self.metrics.detected(incident, host, detected if detected is not None else now)
        self.last_started[(incident, host)] = now
        await self.writer.run(lambda c: save_auto_started(c, incident, host, now, reason))
        self.stats.runs += 1
        log.info("auto remediation %s on %s started: %s", incident, host, reason)
        self.ingestor.emit(host, "remediation.started", {"incident": incident, "hosts": [host], "actor": ACTOR,
                                                          "trigger": reason})
        spec = RunSpec(incident, host, limit, reason, self.cfg.inventory, self.cfg.timeout_seconds,
                       self.cfg.state_dir)
        self._spawn(self._run(spec, now), name=f"auto-remediation-{incident}-{host}")

    async def _outcome(self, spec: RunSpec) -> Outcome:
        """The run's outcome; a report that does not validate counts as no report."""
        try:
            async with self._slots:
                outcome = await self.runner(spec, self._stopping) if not self._stopping.is_set() else \
                    Outcome(error="interrupted: the supervisor is shutting down")
        except Exception as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}")
        problems = validate_report(outcome.report) if outcome.report is not None else []
        if problems:
            return Outcome(error="invalid report from halctl: " + "; ".join(problems[:5]), rc=outcome.rc)
        return outcome

    async def _hand_over(self, spec: RunSpec, started: float) -> Outcome | None:
        """An incident whose repair restarts the supervisor (`REQUESTABLE`) never runs as its child (it would
        be killed with it): a request file for the root runner (hal-supervisor-remediate.path), which runs the
        fixed command and POSTs the report (counted and routed then). None once handed over."""
        shown = display_command(spec.incident, spec.inventory, spec.limit)
        directory = self.cfg.request_dir
        if directory is None or not await asyncio.to_thread(directory.is_dir):
            return Outcome(error=f"its repair restarts the supervisor, so only the root request unit may run it "
                                 f"and {directory or 'the request directory'} does not exist: run `{shown}`")
        try:
            path = await asyncio.to_thread(write_request, directory, spec.incident, started)
        except OSError as exc:
            return Outcome(error=f"request not written ({exc.strerror or exc}): run `{shown}`")
        log.info("auto remediation %s on %s handed to hal-supervisor-remediate.service (%s)", spec.incident,
                 spec.host, path.name)
        return None

    async def _plan_facts(self, incident: str) -> Mapping[str, Any] | None:
        """The supervisor's own facts for an incident whose plan decides where it runs; None when unknown
        (then it goes to the root runner, which can run whatever the child could)."""
        if incident not in RESTARTS_SUPERVISOR_WHEN_PLANNED or self.cost_health is None:
            return None
        try:
            return cost_facts(await self.cost_health())
        except Exception as exc:
            log.warning("auto remediation %s: cost health unknown (%s); handing it to the root runner", incident,
                        exc)
            return None

    async def _run(self, spec: RunSpec, started: float) -> None:
        if needs_root_runner(spec.incident, await self._plan_facts(spec.incident)):
            outcome = await self._hand_over(spec, started)
            if outcome is None:
                return
        else:
            outcome = await self._outcome(spec)
        report = outcome.report
        if report is None:
            report = build_report(spec.incident, hosts=[spec.host], facts={}, plan={"decision": "unknown"},
                                  status="failed", started=started, finished=self.clock(),
                                  error=outcome.error or "no report", run={"rc": outcome.rc, "actor": ACTOR})
        report = redact(report)
        now = self.clock()
        try:
            await self.writer.run(lambda c: store_auto_report(c, report, actor=ACTOR, now=now, reason=spec.reason,
                                                              host=spec.host))
            if self.metrics is not None:
                self.metrics.recorded(report, [spec.host])
        except Exception as exc:
            log.error("auto remediation %s on %s: report %s not stored: %s", spec.incident, spec.host,
                      report["id"], exc)
        ev_type, level, data = route(report, produced=outcome.report is not None)
        if outcome.report is None:
            self.stats.failed += 1
            log.log(level, "auto remediation %s on %s failed: %s", spec.incident, spec.host, outcome.error)
        else:
            log.log(level, "auto remediation %s on %s: %s (report %s)", spec.incident, spec.host, report["status"],
                    report["id"])
        self.stats.last = {"incident": spec.incident, "host": spec.host, "status": report["status"],
                           "id": report["id"], "event": ev_type}
        self.ingestor.emit(spec.host, ev_type, data | {"actor": ACTOR, "trigger": spec.reason})
