"""Policy decisions as pure functions: facts in, actions out; retry bookkeeping."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from halswarm.config.supervisor import normalize_supervisor
from halswarm.core.model import Session
from halswarm.core.timeutil import iso
from halswarm.supervisor.features.policies.engine import (
    COMPACTION,
    COST,
    LIVE,
    RESUME,
    Action,
    Capped,
    PolicyEngine,
    RetryState,
    SessionFacts,
    actionable,
    cap,
    decide,
    fleet_sessions,
    gate,
    plan,
    record,
)
from halswarm.supervisor.features.policies.settings import PolicyConfig, PolicySettings
from halswarm.supervisor.runtime.tracker import SessionTracker

NOW = 1_000_000.0


def cfg(**policies: dict) -> PolicyConfig:
    return PolicyConfig.parse(normalize_supervisor({"policies": policies})["policies"])


def fact(sid: str = "s1", status: str = "idle", idle: float = 0.0, **kw: object) -> SessionFacts:
    return SessionFacts(sid, "n1", "alpha", status, NOW - idle, **kw)  # type: ignore[arg-type]


RES = {"enabled": True, "idle_threshold_seconds": 300, "max_retries": 2, "retry_reset_seconds": 3600}


def test_config_defaults_go_keys_and_spec_alias() -> None:
    c = PolicyConfig.parse(normalize_supervisor({})["policies"])
    assert not c.any_enabled and c.check_interval_seconds == 30
    assert (c.resume.max_retries, c.compaction.max_retries, c.cost.max_retries) == (3, 2, 1)
    assert c.compaction.token_threshold == 180000 and c.cost.cost_threshold_usd == 10.0
    alias = PolicyConfig.parse(normalize_supervisor({"auto_intervention": {
        "resume_on_idle": {"enabled": True, "idle_threshold_minutes": 10},
        "restart_on_compaction": {"enabled": True, "compaction_threshold": 2},
        "kill_on_cost": {"enabled": True, "daily_limit_usd": 50}}})["policies"])
    assert alias.resume.enabled and alias.resume.idle_threshold_seconds == 600
    assert alias.compaction.compaction_threshold == 2 and alias.cost.daily_limit_usd == 50


def test_spec_form_keys_do_not_pull_in_go_defaults_and_null_turns_a_trigger_off() -> None:
    spec = cfg(restart_on_compaction={"enabled": True, "compaction_threshold": 2},
               kill_on_cost={"enabled": True, "daily_limit_usd": 50})
    assert spec.compaction.token_threshold is None and spec.cost.cost_threshold_usd is None
    # a session far past the Go defaults (180000 tokens, $10) is left alone: only the spec keys apply
    assert decide(NOW, spec, [fact(status="running", tokens_total=500_000, cost_usd=99.0)], {}, daily_cost=1.0) == []
    both = cfg(restart_on_compaction={"enabled": True, "compaction_threshold": 2, "token_threshold": 1000},
               kill_on_cost={"enabled": True, "daily_limit_usd": 50, "cost_threshold_usd": 5})
    assert both.compaction.token_threshold == 1000 and both.cost.cost_threshold_usd == 5
    off = cfg(restart_on_compaction={"enabled": True, "token_threshold": None, "compaction_threshold": None},
              kill_on_cost={"enabled": True, "cost_threshold_usd": None})
    assert off.compaction.token_threshold is None and off.compaction.compaction_threshold is None
    assert off.cost.cost_threshold_usd is None and off.cost.daily_limit_usd is None
    go = cfg(restart_on_compaction={"enabled": True}, kill_on_cost={"enabled": True})
    assert go.compaction.token_threshold == 180000 and go.cost.cost_threshold_usd == 10.0


def test_resume_only_idle_sessions_past_the_threshold() -> None:
    c = cfg(resume_on_idle=RES)
    sessions = [fact("a", "idle", 301), fact("b", "idle", 200), fact("c", "waiting_input", 9999),
                fact("d", "running", 9999), fact("e", "completed", 9999)]
    (a,) = decide(NOW, c, sessions, {})
    assert (a.policy, a.session_id, a.command, a.args) == (RESUME, "a", "resume", {"session_id": "a",
                                                                                   "policy": RESUME})
    assert "idle for 301 s" in a.reason
    with_msg = cfg(resume_on_idle={**RES, "message": "Continue with the next step."})
    assert decide(NOW, with_msg, sessions[:1], {})[0].args["message"] == "Continue with the next step."


def test_a_successful_resume_restarts_the_idle_clock() -> None:
    c = cfg(resume_on_idle=RES)
    s = fact("a", "idle", 1000)
    (a,) = decide(NOW, c, [s], {})
    st, events = record(RetryState(), a, c.resume, "success", None, NOW)
    assert [e[0] for e in events] == ["policy.action"] and events[0][1]["result"] == "success"
    states = {("a", RESUME): st}
    assert decide(NOW + 30, c, [s], states) == []  # not every tick
    assert decide(NOW + 299, c, [s], states) == []
    assert len(decide(NOW + 300, c, [s], states)) == 1  # a full threshold later, once more


class Clock:
    """A fake clock for the simulations below."""

    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def tick(self, dt: float) -> float:
        self.t += dt
        return self.t


def simulate(c: PolicyConfig, minutes: float, *, interval: float = 30.0, react: float | None = 20.0,
             status: str = "success", states: dict | None = None, clock: Clock | None = None,
             ) -> tuple[list[tuple[float, Action]], list[tuple[float, str, dict]], dict]:
    """Drive one session through checks every ``interval`` s like the engine does (plan, record, cap).

    The session is idle; a resume that succeeds makes it work for ``react`` s and go idle again (a nudge
    that "worked"); ``react=None`` means it stays silent. Returns the actions, the events and the states.
    """
    clock = clock or Clock()
    states = {} if states is None else states
    last_activity = clock.t - 10_000
    acted: list[tuple[float, Action]] = []
    events: list[tuple[float, str, dict]] = []
    end = clock.t + minutes * 60
    while clock.tick(interval) <= end:
        now = clock.t
        p = plan(now, c, [SessionFacts("a", "n1", "alpha", "idle", last_activity)], states)
        for a in p.actions:
            key = ("a", a.policy)
            states[key], ev = record(states.get(key, RetryState()), a, c.of(a.policy), status, None
                                     if status == "success" else "refused", now)
            acted.append((now, a))
            events += [(now, t, d) for t, d in ev]
            if status == "success" and react is not None:
                last_activity = now + react
        for cp in p.capped:
            key = ("a", cp.policy)
            states[key], (t, d) = cap(states.get(key, RetryState()), cp, c.of(cp.policy), now)
            events.append((now, t, d))
    return acted, events, states


def test_max_retries_bounds_resumes_that_worked() -> None:
    """The reported overshoot: max_retries 1 resumed one session 9 times in 8 minutes."""
    c = cfg(resume_on_idle={"enabled": True, "idle_threshold_seconds": 60, "max_retries": 1,
                            "retry_reset_seconds": 3600})
    acted, events, states = simulate(c, 8)
    assert len(acted) == 1  # every nudge worked (activity followed), yet one action per retry_reset_seconds
    kinds = [t for _, t, _ in events]
    assert kinds == ["policy.action", "policy.retry_cap"]  # the cap once, when it stopped the next resume
    first, capped_at = events[0][0], events[1][0]
    assert capped_at - first >= 60 + 20  # not right after the successful nudge: when the session idled again
    capd = events[1][2]
    assert capd["reason"] == "max_retries_reached" and capd["retry_count"] == 1 and capd["max_retries"] == 1
    assert capd["last_result"] == "success" and capd["last_error"] is None
    assert capd["retry_after"] == iso(first + 3600)
    assert states[("a", RESUME)].capped_at == capped_at


def test_resumes_within_the_window_then_again_after_it() -> None:
    c = cfg(resume_on_idle={"enabled": True, "idle_threshold_seconds": 60, "max_retries": 3,
                            "retry_reset_seconds": 1800})
    clock = Clock()
    states: dict = {}
    acted, events, _ = simulate(c, 120, clock=clock, states=states)  # two hours, a nudge that works every ~90 s
    times = [t for t, _ in acted]
    for i, t in enumerate(times):  # never more than max_retries in any retry_reset_seconds
        assert len([u for u in times[i:] if u - t < 1800]) <= 3, times
    # 3 nudges 90 s apart, capped, again 1800 s after the third: 4 rounds in two hours.
    assert [t - NOW for t in times[:4]] == [30, 120, 210, 2010] and len(times) == 12
    assert [a.retry_count for _, a in acted] == [0, 1, 2] * 4
    caps = [t for t, k, _ in events if k == "policy.retry_cap"]
    assert len(caps) == 4  # once per capped period, never repeated while it lasts
    for cap_t in caps:
        assert any(t < cap_t for t in times)


def test_a_successful_resume_restarts_the_idle_clock_and_spaced_actions_never_cap() -> None:
    c = cfg(resume_on_idle={"enabled": True, "idle_threshold_seconds": 600, "max_retries": 2,
                            "retry_reset_seconds": 300})
    acted, events, _ = simulate(c, 60, react=None)
    times = [t for t, _ in acted]
    assert len(times) == 6 and all(b - a >= 600 for a, b in itertools.pairwise(times))
    assert all(a.retry_count == 0 for _, a in acted)  # each >= retry_reset_seconds after the last: count reset
    assert "policy.retry_cap" not in [k for _, k, _ in events]


def test_failures_count_and_cap_emits_once() -> None:
    c = cfg(kill_on_cost={"enabled": True, "cost_threshold_usd": 5, "max_retries": 2, "retry_reset_seconds": 60})
    s = fact("x", "running", cost_usd=7.5)
    (a,) = decide(NOW, c, [s], {})
    assert a.command == "kill_session" and "session cost $7.50 >= $5.00" in a.reason
    st, ev1 = record(RetryState(), a, c.cost, "failure", "agent refused", NOW)
    (a2,) = decide(NOW + 1, c, [s], {("x", COST): st})
    st, ev2 = record(st, a2, c.cost, "timeout", "no result within 30 s", NOW + 1)
    assert [e[0] for e in ev1 + ev2] == ["policy.action", "policy.action"]
    assert ev2[0][1]["retry_count"] == 2 and ev2[0][1]["error"] == "no result within 30 s"
    p = plan(NOW + 2, c, [s], {("x", COST): st})
    assert p.actions == [] and p.capped == [Capped(COST, "x", "session cost $7.50 >= $5.00")]
    st, (etype, data) = cap(st, p.capped[0], c.cost, NOW + 2)
    assert etype == "policy.retry_cap" and data["last_error"] == "no result within 30 s"
    assert data["last_result"] == "timeout" and data["retry_after"] == iso(NOW + 1 + 60)
    assert plan(NOW + 30, c, [s], {("x", COST): st}) == type(p)([], [])  # capped, and said so once
    allowed, reset = gate(st, c.cost, NOW + 61)
    assert allowed and reset.retry_count == 0 and reset.capped_at is None


def test_every_policy_counts_its_successes() -> None:
    """A handover or kill that succeeded still counts: a session that keeps qualifying is not hit forever."""
    c = cfg(restart_on_compaction={"enabled": True, "compaction_threshold": 2, "max_retries": 2,
                                   "retry_reset_seconds": 600},
            kill_on_cost={"enabled": True, "cost_threshold_usd": 5, "max_retries": 1, "retry_reset_seconds": 600})
    for policy, s in ((COMPACTION, fact("a", "running", compaction_count=5)), (COST, fact("a", "running",
                                                                                          cost_usd=9.0))):
        states: dict = {}
        sent = []
        for i in range(10):
            now = NOW + 30 * i
            p = plan(now, c, [s], states)
            for a in p.actions:
                assert a.policy == policy
                states[("a", policy)], _ = record(states.get(("a", policy), RetryState()), a, c.of(policy), "success",
                                                  None, now)
                sent.append(now)
            for cp in p.capped:
                states[("a", policy)], _ = cap(states[("a", policy)], cp, c.of(policy), now)
        assert len(sent) == c.of(policy).max_retries, (policy, sent)
        assert states[("a", policy)].capped_at is not None


def test_gate_counts_only_within_retry_reset_seconds() -> None:
    ps = PolicySettings(enabled=True, max_retries=2, retry_reset_seconds=100)
    assert gate(RetryState(), ps, NOW) == (True, RetryState())
    st = RetryState(retry_count=1, last_attempt=NOW)
    assert gate(st, ps, NOW + 99) == (True, st)
    assert gate(replace(st, retry_count=2), ps, NOW + 99)[0] is False
    allowed, after = gate(replace(st, retry_count=2, capped_at=NOW + 5), ps, NOW + 100)
    assert allowed and after.retry_count == 0 and after.capped_at is None


def test_compaction_by_count_or_tokens_uses_handover() -> None:
    c = cfg(restart_on_compaction={"enabled": True, "compaction_threshold": 2, "token_threshold": 150000})
    sessions = [fact("a", "running", compaction_count=2), fact("b", "idle", tokens_total=150000),
                fact("c", "running", compaction_count=1, tokens_total=10), fact("d", "waiting_input",
                                                                                 compaction_count=9)]
    acts = decide(NOW, c, sessions, {})
    assert [(x.session_id, x.command) for x in acts] == [("a", "handover"), ("b", "handover")]
    assert "compacted 2 times" in acts[0].reason and "150000 tokens" in acts[1].reason
    st, ev = record(RetryState(retry_count=1), acts[0], c.compaction, "success", None, NOW)
    assert st.retry_count == 1 and st.last_success == NOW and len(ev) == 1  # counted (the action was 0-based)


def test_precedence_one_action_per_session_and_busy_sessions_skipped() -> None:
    c = cfg(resume_on_idle=RES, restart_on_compaction={"enabled": True, "compaction_threshold": 1},
            kill_on_cost={"enabled": True, "cost_threshold_usd": 1})
    s = fact("a", "idle", 1000, compaction_count=3, cost_usd=2.0)
    (a,) = decide(NOW, c, [s], {})
    assert a.policy == COST
    assert decide(NOW, c, [s], {}, busy={"a"}) == []
    no_cost = fact("a", "idle", 1000, compaction_count=3)
    assert decide(NOW, c, [no_cost], {})[0].policy == COMPACTION
    # A capped handover does not stop the resume; a capped kill stops everything.
    capped = {("a", COMPACTION): RetryState(retry_count=2, last_attempt=NOW)}
    assert decide(NOW, c, [no_cost], capped)[0].policy == RESUME
    capped_kill = {("a", COST): RetryState(retry_count=1, last_attempt=NOW)}
    assert decide(NOW, c, [s], capped_kill) == []


def test_daily_limit_kills_every_live_session_and_stops_other_policies() -> None:
    c = cfg(resume_on_idle=RES, kill_on_cost={"enabled": True, "daily_limit_usd": 20})
    sessions = [fact("a", "idle", 1000), fact("b", "running"), fact("c", "killed")]
    assert [x.session_id for x in decide(NOW, c, sessions, {}, daily_cost=10)] == ["a"]  # a resume
    acts = decide(NOW, c, sessions, {}, daily_cost=20.5)
    assert [(x.session_id, x.command) for x in acts] == [("a", "kill_session"), ("b", "kill_session")]
    assert "daily cost $20.50 >= limit $20.00" in acts[0].reason


def test_disabled_policies_do_nothing() -> None:
    c = cfg()
    assert decide(NOW, c, [fact("a", "idle", 10**6, compaction_count=10**3, cost_usd=10**3)], {}) == []
    a = Action(RESUME, "a", "resume", {}, "r")
    assert a.retry_count == 0


# --------------------------------------------------------------------------- the whole fleet (issue 21)


def test_the_leader_reads_only_the_statuses_an_enabled_policy_acts_on() -> None:
    assert actionable(cfg()) == frozenset()
    assert actionable(cfg(resume_on_idle=RES)) == {"idle"}
    assert actionable(cfg(restart_on_compaction={"enabled": True})) == {"running", "idle"}
    assert actionable(cfg(resume_on_idle=RES, kill_on_cost={"enabled": True})) == LIVE


def test_fleet_sessions_take_memory_for_nodes_here_and_the_store_for_the_others() -> None:
    here = {"n1"}.__contains__
    local = [Session("a", "n1", status="idle"), Session("stale", "n2", status="idle")]  # n2's copy is stale
    stored = [Session("stale", "n2", status="running"), Session("b", "n2", status="idle"),
              Session("a", "n1", status="running")]  # n1 just moved here: memory wins
    got = fleet_sessions(local, here, stored)
    assert [(s.id, s.node_id, s.status) for s in got] == [("a", "n1", "idle"), ("stale", "n2", "running"),
                                                          ("b", "n2", "idle")]


class _Rec:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.applied: list[Any] = []
        self.events: list[tuple[Any, ...]] = []

    async def dispatch(self, ctype: str, target: Any, args: dict[str, Any], *, actor: str) -> Any:
        node = {"ses_here": "n1", "ses_far": "n2"}[target.session_id]
        self.sent.append((ctype, target.session_id))
        return SimpleNamespace(status="success", error=None, node_id=node, output={"id": target.session_id})

    async def run(self, fn: Any) -> None:  # the writer
        return None

    def emit(self, node_id: Any, etype: str, data: Any, **kw: Any) -> tuple[Any, ...]:
        self.events.append((node_id, etype, kw.get("project")))
        return (node_id, etype)

    async def stored(self, evs: Any) -> None:
        return None

    async def apply(self, res: Any) -> None:
        self.applied.append(res.node_id)


async def test_the_engine_acts_on_sessions_held_elsewhere_read_once_per_check() -> None:
    t = SessionTracker()
    t.apply_state("n1", {"id": "ses_here", "project": "alpha", "status": "idle"}, at=NOW - 3600)
    t.apply_state("n2", {"id": "ses_stale", "project": "beta", "status": "idle"}, at=NOW - 3600)  # a stale copy
    rec = _Rec()
    asked: list[frozenset[str]] = []

    async def fleet(statuses: frozenset[str]) -> list[Session]:
        asked.append(statuses)
        return [Session("ses_far", "n2", "beta", "idle", last_activity=NOW - 3600),
                Session("ses_stale", "n2", "beta", "running", last_activity=NOW)]

    engine = PolicyEngine(cfg(resume_on_idle=RES), t, rec, rec, rec, None, apply_output=rec.apply, fleet=fleet,
                          here={"n1"}.__contains__, clock=lambda: NOW)
    actions = await engine.check()
    assert asked == [frozenset({"idle"})]  # one read, only what resume_on_idle acts on
    assert sorted(a.session_id for a in actions) == ["ses_far", "ses_here"]  # the stale copy's session runs
    await asyncio.gather(*engine._running)
    assert sorted(rec.sent) == [("resume", "ses_far"), ("resume", "ses_here")]
    assert rec.applied == ["n1"]  # a session held elsewhere is its holder's to store
    assert ("n2", "policy.action", "beta") in rec.events and ("n1", "policy.action", "alpha") in rec.events
    assert engine.states[("ses_far", RESUME)].retry_count == 1


async def test_without_a_fleet_the_engine_reads_memory_only() -> None:
    t = SessionTracker()
    t.apply_state("n2", {"id": "ses_mem", "status": "idle"}, at=NOW - 3600)
    rec = _Rec()
    engine = PolicyEngine(cfg(resume_on_idle=RES), t, rec, rec, rec, None, clock=lambda: NOW)
    assert [a.session_id for a in await engine.check()] == ["ses_mem"]
    await asyncio.gather(*engine._running)
