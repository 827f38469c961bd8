"""Policy decisions as pure functions: facts in, actions out; retry bookkeeping."""

from __future__ import annotations

from halswarm.config.supervisor import normalize_supervisor
from halswarm.supervisor.policies import (
    COMPACTION,
    COST,
    RESUME,
    Action,
    PolicyConfig,
    RetryState,
    SessionFacts,
    decide,
    gate,
    record,
)

NOW = 1_000_000.0


def cfg(**policies: dict) -> PolicyConfig:
    return PolicyConfig.from_raw(normalize_supervisor({"policies": policies}))


def fact(sid: str = "s1", status: str = "idle", idle: float = 0.0, **kw: object) -> SessionFacts:
    return SessionFacts(sid, "n1", "alpha", status, NOW - idle, **kw)  # type: ignore[arg-type]


RES = {"enabled": True, "idle_threshold_seconds": 300, "max_retries": 2, "retry_reset_seconds": 3600}


def test_config_defaults_go_keys_and_spec_alias() -> None:
    c = PolicyConfig.from_raw(normalize_supervisor({}))
    assert not c.any_enabled and c.check_interval_seconds == 30
    assert (c.resume.max_retries, c.compaction.max_retries, c.cost.max_retries) == (3, 2, 1)
    assert c.compaction.token_threshold == 180000 and c.cost.cost_threshold_usd == 10.0
    alias = PolicyConfig.from_raw(normalize_supervisor({"auto_intervention": {
        "resume_on_idle": {"enabled": True, "idle_threshold_minutes": 10},
        "restart_on_compaction": {"enabled": True, "compaction_threshold": 2},
        "kill_on_cost": {"enabled": True, "daily_limit_usd": 50}}}))
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


def test_resume_that_never_helps_hits_the_cap_then_resets() -> None:
    c = cfg(resume_on_idle=RES)
    s = fact("a", "idle", 1000)
    st = RetryState()
    t = NOW
    events: list = []
    for _ in range(2):
        (a,) = decide(t, c, [s], {("a", RESUME): st})
        st, ev = record(st, a, c.resume, "success", None, t)
        events += ev
        t += 300
    assert [e[0] for e in events] == ["policy.action", "policy.action", "policy.retry_cap"]
    cap = events[-1][1]
    assert cap["reason"] == "max_retries_reached" and cap["retry_count"] == 2
    assert cap["last_error"] == "no activity after the intervention"
    assert decide(t, c, [s], {("a", RESUME): st}) == []  # capped
    assert len(decide(NOW + 300 + 3600, c, [s], {("a", RESUME): st})) == 1  # retry_reset_seconds later
    # Activity after the last attempt (at NOW + 300) shows the nudge worked: the count starts over.
    worked = SessionFacts("a", "n1", "alpha", "idle", NOW + 350)
    assert decide(NOW + 640, c, [worked], {("a", RESUME): st}) == []  # idle only 290 s
    (again,) = decide(NOW + 650, c, [worked], {("a", RESUME): st})
    assert again.retry_count == 0


def test_failures_count_and_cap_emits_once() -> None:
    c = cfg(kill_on_cost={"enabled": True, "cost_threshold_usd": 5, "max_retries": 2, "retry_reset_seconds": 60})
    s = fact("x", "running", cost_usd=7.5)
    (a,) = decide(NOW, c, [s], {})
    assert a.command == "kill_session" and "session cost $7.50 >= $5.00" in a.reason
    st, ev1 = record(RetryState(), a, c.cost, "failure", "agent refused", NOW)
    (a2,) = decide(NOW + 1, c, [s], {("x", COST): st})
    st, ev2 = record(st, a2, c.cost, "timeout", "no result within 30 s", NOW + 1)
    assert [e[0] for e in ev1 + ev2] == ["policy.action", "policy.action", "policy.retry_cap"]
    assert ev2[1][1]["last_error"] == "no result within 30 s"
    assert decide(NOW + 30, c, [s], {("x", COST): st}) == []
    allowed, reset = gate(st, c.cost, NOW + 62)
    assert allowed and reset.retry_count == 0 and reset.capped_at is None


def test_compaction_by_count_or_tokens_uses_handover() -> None:
    c = cfg(restart_on_compaction={"enabled": True, "compaction_threshold": 2, "token_threshold": 150000})
    sessions = [fact("a", "running", compaction_count=2), fact("b", "idle", tokens_total=150000),
                fact("c", "running", compaction_count=1, tokens_total=10), fact("d", "waiting_input",
                                                                                 compaction_count=9)]
    acts = decide(NOW, c, sessions, {})
    assert [(x.session_id, x.command) for x in acts] == [("a", "handover"), ("b", "handover")]
    assert "compacted 2 times" in acts[0].reason and "150000 tokens" in acts[1].reason
    st, ev = record(RetryState(retry_count=1), acts[0], c.compaction, "success", None, NOW)
    assert st.retry_count == 0 and len(ev) == 1


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
