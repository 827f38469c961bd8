"""Auto-intervention policies (`policies.*`, alias `auto_intervention`): decisions are pure functions
(facts in, actions out); the engine feeds them every `check_interval_seconds`, dispatches the actions
as commands (actor `policy`, so each one is audited), persists the retry state, and emits the routed
`policy.action` / `policy.retry_cap` events.

- resume_on_idle: a session `idle` (not `waiting_input`) for `idle_threshold_seconds` gets the `resume`
  command (with `message` when configured, else the agent's own continue prompt). A successful
  resume restarts the idle clock, so it fires again only after another full threshold.
- restart_on_compaction: `compaction_count >= compaction_threshold` (when set) or
  `tokens.total >= token_threshold` -> the `handover` command (spec 7.2).
- kill_on_cost: session cost >= `cost_threshold_usd`, or today's fleet cost >= `daily_limit_usd`
  (then every live session is killed and no resume/handover is started) -> `kill_session`.
At most one action per session per check (kill, then handover, then resume), never two at once.

Retries: `retry_count` counts every action a policy took on a session (success or failure: a nudge
that "worked" is still an intervention), and goes back to 0 once `retry_reset_seconds` have passed
since the last one. So no policy acts more than `max_retries` times on a session within any
`retry_reset_seconds`. The first time the policy wants to act and the cap stops it, `policy.retry_cap`
is emitted, once for that capped period (`capped_at`, persisted, survives restarts).

Several supervisors on one PostgreSQL (issue 21): the engine runs on the leader only and decides on the
whole fleet. The sessions of nodes connected here come from memory; those of nodes another supervisor
holds (a live lease) are read from the store once per check, only with a status an enabled policy could
act on (`actionable`), and their commands are forwarded to the holder by the dispatcher. The retry state
is the stored `policy_state` (loaded when the engine starts), so a leader move keeps every count and cap.
On SQLite (`fleet` None) the engine reads memory only, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import astuple, dataclass, field, replace
from typing import Any

from halswarm.core.timeutil import iso
from halswarm.protocol import CommandTarget
from halswarm.store.repos.policies import load_policy_states, save_policy_state
from halswarm.supervisor.features.policies.settings import COMPACTION, COST, RESUME, PolicyConfig, PolicySettings
from halswarm.supervisor.runtime.dispatcher import CommandError
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)

POLICIES = (COST, COMPACTION, RESUME)  # precedence
COMMANDS = {RESUME: "resume", COMPACTION: "handover", COST: "kill_session"}
LIVE = frozenset({"running", "idle", "waiting_input", "error"})

# --------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class SessionFacts:
    id: str
    node_id: str
    project: str
    status: str
    last_activity: float | None
    compaction_count: int = 0
    tokens_total: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class RetryState:
    retry_count: int = 0
    last_attempt: float | None = None
    last_success: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    capped_at: float | None = None


@dataclass(frozen=True)
class Action:
    policy: str
    session_id: str
    command: str
    args: dict[str, Any]
    reason: str
    retry_count: int = 0  # the count before this attempt (after any reset)


@dataclass(frozen=True)
class Capped:
    """The policy wanted to act on the session but `max_retries` stopped it (first time this period)."""
    policy: str
    session_id: str
    reason: str  # why the policy wanted to act


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    capped: list[Capped]


def actionable(cfg: PolicyConfig) -> frozenset[str]:
    """The session statuses an enabled policy may act on (what the leader reads of the sessions held
    elsewhere): kill_on_cost any live one, restart_on_compaction running/idle, resume_on_idle idle."""
    out: set[str] = set()
    if cfg.cost.enabled:
        out |= LIVE
    if cfg.compaction.enabled:
        out |= {"running", "idle"}
    if cfg.resume.enabled:
        out.add("idle")
    return frozenset(out)


def fleet_sessions(local: Iterable[Any], here: Callable[[str], bool], elsewhere: Iterable[Any]) -> list[Any]:
    """The sessions to decide on: those in memory whose node is connected here (a copy of another
    supervisor's session in memory is the stale one loaded at start), then the stored ones of nodes held
    elsewhere that are not among them (a node that just moved here is taken from memory)."""
    out = [s for s in local if here(s.node_id)]
    seen = {s.id for s in out}
    out.extend(s for s in elsewhere if s.id not in seen and not here(s.node_id))
    return out


def gate(st: RetryState, ps: PolicySettings, now: float) -> tuple[bool, RetryState]:
    """May the policy act now? Returns the state to act from: the count starts over once
    `retry_reset_seconds` have passed since the last attempt (capped or not)."""
    if st.last_attempt is not None and now - st.last_attempt >= ps.retry_reset_seconds:
        st = replace(st, retry_count=0, capped_at=None)
    return st.retry_count < ps.max_retries, st


def _want(policy: str, cfg: PolicyConfig, s: SessionFacts, st: RetryState, now: float, daily_cost: float
          ) -> str | None:
    """The reason this policy applies to this session now, or None."""
    if policy == COST:
        ps = cfg.cost
        if ps.daily_limit_usd is not None and daily_cost >= ps.daily_limit_usd:
            return f"daily cost ${daily_cost:.2f} >= limit ${ps.daily_limit_usd:.2f}"
        if ps.cost_threshold_usd is not None and s.cost_usd >= ps.cost_threshold_usd:
            return f"session cost ${s.cost_usd:.2f} >= ${ps.cost_threshold_usd:.2f}"
        return None
    if policy == COMPACTION:
        ps = cfg.compaction
        if s.status not in ("running", "idle"):
            return None
        if ps.compaction_threshold is not None and s.compaction_count >= ps.compaction_threshold:
            return f"compacted {s.compaction_count} times (threshold {ps.compaction_threshold})"
        if ps.token_threshold is not None and s.tokens_total >= ps.token_threshold:
            return f"{s.tokens_total} tokens (threshold {ps.token_threshold})"
        return None
    ps = cfg.resume
    if s.status != "idle" or s.last_activity is None:
        return None
    quiet_since = max(s.last_activity, st.last_success or 0.0)
    idle = now - quiet_since
    return f"idle for {idle:.0f} s (threshold {ps.idle_threshold_seconds:g} s)" if idle >= ps.idle_threshold_seconds \
        else None


def plan(now: float, cfg: PolicyConfig, sessions: Iterable[SessionFacts],
         states: Mapping[tuple[str, str], RetryState], daily_cost: float = 0.0, busy: Iterable[str] = ()) -> Plan:
    """Actions for this check, and the policies newly stopped by their cap. Pure: same facts, same plan."""
    busy = set(busy)
    over_daily = cfg.cost.enabled and cfg.cost.daily_limit_usd is not None and daily_cost >= cfg.cost.daily_limit_usd
    out: list[Action] = []
    capped: list[Capped] = []
    for s in sessions:
        if s.id in busy or s.status not in LIVE:
            continue
        for policy in POLICIES:
            ps = cfg.of(policy)
            if not ps.enabled or (over_daily and policy != COST):
                continue
            st = states.get((s.id, policy), RetryState())
            reason = _want(policy, cfg, s, st, now, daily_cost)
            if reason is None:
                continue
            allowed, st = gate(st, ps, now)
            if not allowed:
                if st.capped_at is None:
                    capped.append(Capped(policy, s.id, reason))
                if policy == COST:
                    break  # a session over its cost that could not be killed is not resumed either
                continue
            args: dict[str, Any] = {"session_id": s.id, "policy": policy}
            if policy == RESUME and cfg.resume.message:
                args["message"] = cfg.resume.message
            out.append(Action(policy, s.id, COMMANDS[policy], args, reason, st.retry_count))
            break
    return Plan(out, capped)


def decide(now: float, cfg: PolicyConfig, sessions: Iterable[SessionFacts],
           states: Mapping[tuple[str, str], RetryState], daily_cost: float = 0.0,
           busy: Iterable[str] = ()) -> list[Action]:
    """The actions of `plan` (same arguments)."""
    return plan(now, cfg, sessions, states, daily_cost, busy).actions


def record(st: RetryState, action: Action, ps: PolicySettings, status: str, error: str | None, now: float
           ) -> tuple[RetryState, list[tuple[str, dict[str, Any]]]]:
    """New retry state after an attempt (every attempt counts, whatever its result), and the events."""
    ok = status == "success"
    # The action was allowed, so the count it started from is below the cap (maybe after a reset).
    new = replace(st, retry_count=action.retry_count + 1, last_attempt=now, last_result=status, capped_at=None,
                  last_error=None if ok else error, last_success=now if ok else st.last_success)
    data = {"policy": action.policy, "session_id": action.session_id, "action": action.command, "result": status,
            "reason": action.reason, "retry_count": new.retry_count, "max_retries": ps.max_retries}
    if error:
        data["error"] = error
    return new, [("policy.action", data)]


def cap(st: RetryState, c: Capped, ps: PolicySettings, now: float) -> tuple[RetryState, tuple[str, dict[str, Any]]]:
    """The state marked capped, and the one `policy.retry_cap` event of this capped period."""
    retry_after = (st.last_attempt if st.last_attempt is not None else now) + ps.retry_reset_seconds
    data = {"policy": c.policy, "session_id": c.session_id, "reason": "max_retries_reached",
            "retry_count": st.retry_count, "max_retries": ps.max_retries, "last_result": st.last_result,
            "last_error": st.last_error, "wanted": c.reason, "retry_after": iso(retry_after)}
    return replace(st, capped_at=now), ("policy.retry_cap", data)


# --------------------------------------------------------------------------- the engine


@dataclass
class _Stats:
    checks: int = 0
    last_check: float | None = None
    actions: dict[str, int] = field(default_factory=dict)


class PolicyEngine(PeriodicEngine):
    def __init__(self, cfg: PolicyConfig, tracker: Any, dispatcher: Any, ingestor: Any, writer: Any,
                 reader: Any, *, session_cost: Callable[[Any], float] | None = None,
                 daily_cost: Callable[[], Awaitable[float]] | None = None,
                 apply_output: Callable[[Any], Awaitable[Any]] | None = None,
                 fleet: Callable[[frozenset[str]], Awaitable[list[Any]]] | None = None,
                 here: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`fleet` (shared store): the stored sessions with one of the given statuses on nodes another
        supervisor holds; `here`: is this node connected to this supervisor. Both None on SQLite."""
        super().__init__()
        self.cfg = cfg
        self.fleet = fleet
        self.here = here
        self.tracker = tracker
        self.dispatcher = dispatcher
        self.ingestor = ingestor
        self.writer = writer
        self.reader = reader
        self.session_cost = session_cost or (lambda s: float(s.cost_usd or 0.0))
        self.daily_cost = daily_cost
        self.apply_output = apply_output
        self.clock = clock
        self.states: dict[tuple[str, str], RetryState] = {}
        self.inflight: dict[str, Action] = {}
        self.stats = _Stats()
        self.last_daily_cost = 0.0
        self.elsewhere = 0  # sessions held by other supervisors in the last check (shared store)
        self._where: dict[str, tuple[str, str]] = {}  # session -> (node, project) of the last check

    async def start(self) -> None:
        self.states = {k: RetryState(*row) for k, row in (await self.reader.run(load_policy_states)).items()}
        if self.cfg.any_enabled:
            self._start_loop(self.cfg.check_interval_seconds, "policy-engine", log)
            enabled = [p for p in POLICIES if self.cfg.of(p).enabled]
            log.info("policies: %s every %g s", ", ".join(enabled), self.cfg.check_interval_seconds)

    async def stop(self) -> None:
        await self._stop_loop(grace=5)  # commands already sent finish (their outcome is recorded)

    def facts(self, elsewhere: Iterable[Any] = ()) -> list[SessionFacts]:
        sessions = self.tracker.live()
        if self.here is not None:
            sessions = fleet_sessions(sessions, self.here, elsewhere)
        return [SessionFacts(s.id, s.node_id, s.project, s.status, s.last_activity, s.compaction_count,
                             s.tokens_total, self.session_cost(s))
                for s in sessions if s.status in LIVE]

    async def _elsewhere(self) -> list[Any]:
        """Shared store: the sessions of nodes held by other supervisors a policy could act on (one read)."""
        statuses = actionable(self.cfg)
        if self.fleet is None or not statuses:
            return []
        try:
            return await self.fleet(statuses)
        except Exception as exc:  # this check decides on the local sessions; the next one reads again
            log.warning("policies: sessions held by other supervisors unavailable: %s", exc)
            return []

    def _node_project(self, session_id: str) -> tuple[str | None, str | None]:
        if session_id in self._where:
            return self._where[session_id]
        s = self.tracker.get(session_id)
        return (s.node_id, s.project) if s is not None else (None, None)

    async def check(self) -> list[Action]:
        """One evaluation: decide, then start the actions (each in its own task)."""
        now = self.clock()
        daily = 0.0
        if self.cfg.cost.enabled and self.cfg.cost.daily_limit_usd is not None and self.daily_cost is not None:
            try:
                daily = await self.daily_cost()
            except Exception as exc:
                log.warning("policies: today's cost unavailable: %s", exc)
        self.last_daily_cost = daily
        elsewhere = await self._elsewhere()
        facts = self.facts(elsewhere)
        self.elsewhere = len(elsewhere)
        self._where = {f.id: (f.node_id, f.project) for f in facts}
        p = plan(now, self.cfg, facts, self.states, daily, self.inflight)
        self.stats.checks += 1
        self.stats.last_check = now
        for a in p.actions:
            self.inflight[a.session_id] = a
            self._spawn(self._act(a))
        for c in p.capped:
            await self._capped(c, now)
        return p.actions

    async def _capped(self, c: Capped, now: float) -> None:
        """Mark the cap reached (persisted first, so a restart does not emit it again) and emit it once."""
        key = (c.session_id, c.policy)
        new, (etype, data) = cap(self.states.get(key, RetryState()), c, self.cfg.of(c.policy), now)
        self.states[key] = new
        await self.writer.run(lambda conn: save_policy_state(conn, c.session_id, c.policy, astuple(new)))
        node_id, project = self._node_project(c.session_id)
        await self.ingestor.stored([self.ingestor.emit(node_id, etype, data, session_id=c.session_id,
                                                       project=project, track=True)])
        log.warning("policy %s: %s reached max_retries (%d); next attempt after %s", c.policy, c.session_id,
                    new.retry_count, data["retry_after"])

    async def _act(self, a: Action) -> None:
        try:
            status, error, node_id = "failure", None, None
            try:
                res = await self.dispatcher.dispatch(a.command, CommandTarget(session_id=a.session_id), a.args,
                                                     actor="policy")
                status, error, node_id = res.status, res.error, res.node_id
                # A session held elsewhere is its holder's to store (a copy folded in here could go stale).
                held_here = self.here is None or (res.node_id is not None and self.here(res.node_id))
                if res.status == "success" and self.apply_output is not None and held_here:
                    await self.apply_output(res)
            except CommandError as exc:
                error = exc.message
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            ps = self.cfg.of(a.policy)
            key = (a.session_id, a.policy)
            new, events = record(self.states.get(key, RetryState()), a, ps, status, error, self.clock())
            self.states[key] = new
            self.stats.actions[a.policy] = self.stats.actions.get(a.policy, 0) + 1
            await self.writer.run(lambda c: save_policy_state(c, a.session_id, a.policy, astuple(new)))
            s_node, project = self._node_project(a.session_id)
            # Stored before the session leaves `inflight`: the next check sees the outcome everywhere.
            await self.ingestor.stored([
                self.ingestor.emit(node_id or s_node, etype, data, session_id=a.session_id,
                                   project=project, track=True)
                for etype, data in events])
            level = logging.INFO if status == "success" else logging.WARNING
            log.log(level, "policy %s: %s %s -> %s%s", a.policy, a.command, a.session_id, status,
                    f" ({error})" if error else "")
        finally:
            self.inflight.pop(a.session_id, None)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        rows = []
        for (sid, policy), st in sorted(self.states.items()):
            ps = self.cfg.of(policy) if policy in COMMANDS else None
            blocked = None
            if ps is not None and st.retry_count >= ps.max_retries and st.last_attempt is not None:
                until = st.last_attempt + ps.retry_reset_seconds
                blocked = iso(until) if until > now else None
            rows.append({"session_id": sid, "policy": policy, "retry_count": st.retry_count,
                         "max_retries": ps.max_retries if ps else None, "last_attempt": iso(st.last_attempt),
                         "last_success": iso(st.last_success), "last_result": st.last_result,
                         "last_error": st.last_error, "capped": st.capped_at is not None, "blocked_until": blocked})
        return {
            "enabled": self.cfg.any_enabled,
            "running": self._task is not None and not self._task.done(),
            "check_interval_seconds": self.cfg.check_interval_seconds,
            "policies": self.cfg.to_api(),
            "last_check": iso(self.stats.last_check),
            "checks": self.stats.checks,
            "actions": dict(self.stats.actions),
            "daily_cost_usd": round(self.last_daily_cost, 6),
            "inflight": [{"session_id": a.session_id, "policy": a.policy, "action": a.command}
                         for a in self.inflight.values()],
            "state": rows,
        }
