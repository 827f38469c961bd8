"""The policy engine against the whole real stack: supervisor -> hal-agent -> opencode serve -> fake LLM.

tests/integration/test_policies.py drives the same policies with a simulated agent; here the sessions
are real opencode sessions created through the API, so "idle" and "cost" are what opencode reported.

- resume_on_idle: a session that went idle after the fake LLM replied is resumed with the configured
  message, once per idle period (a successful resume restarts the idle clock), audited as actor
  `policy`, with a `policy.action` event, and the fake LLM answers the message.
- kill_on_cost: opencode computes a message's cost from the model's configured `cost` (USD per million
  tokens); the fake model has none (cost 0), so the opencode config here adds a second model on the
  same fake provider, `costly-model`, with a cost. A session on it is over the tiny threshold as soon
  as its first reply is in, and the supervisor kills it. The resume session (on the free model) is
  never touched by kill_on_cost.
- restart_on_compaction, retry cap, restart: the supervisor is restarted with a second policy set
  (`token_threshold` between a fresh session's tokens and those of a session given a long prompt; the
  fake LLM reports usage from the text it sees): the long session is handed over for real (the agent
  asks it for its notes, kills it, starts a new session), the new session's idle resume hits
  `max_retries: 1` (`policy.retry_cap`), and the retry state is the same after another restart.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_llm import MODEL_ID, PROVIDER_ID, FakeLLM, opencode_config
from tests.support.agent_proc import AgentProc, api_get, db_rows, opencode_env, reply_text, session_of, wait_status
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NODE = "e2e-policy-node"
IDLE_THRESHOLD = 2
MESSAGE = "POLICY-NUDGE carry on with the next step"
COSTLY_MODEL = "costly-model"
POLICIES = {
    "check_interval_seconds": 1,
    "resume_on_idle": {"enabled": True, "idle_threshold_seconds": IDLE_THRESHOLD, "max_retries": 2,
                       "retry_reset_seconds": 3600, "message": MESSAGE},
    "kill_on_cost": {"enabled": True, "cost_threshold_usd": 0.0000001, "max_retries": 1},
}


@dataclass
class Stack:
    sup: SupervisorProc
    agent: AgentProc
    fake: FakeLLM

    def create(self, prompt: str, model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"project": "demo", "prompt": prompt}
        if model is not None:
            body["model"] = model
        with self.sup.client() as c:
            r = c.post("/api/v1/sessions", json=body)
        assert r.status_code == 201, r.text
        return r.json()["data"]

    def llm_requests_with(self, needle: str) -> int:
        """Agent turns (requests offering tools, not title generation) whose last user text has ``needle``."""
        return sum(1 for r in self.fake.chat_requests() if r.body.get("tools") and needle in r.last_user_text)


def policy_actions(sup: SupervisorProc, sid: str) -> list[dict[str, Any]]:
    return api_get(sup, "/api/v1/events", session_id=sid, type="policy.action", limit=1000)


def settled_resumes(sup: SupervisorProc, sid: str) -> tuple[list[float], list[dict[str, Any]]] | None:
    """(sent resumes, policy.action events) once there is an event for each sent resume, else None."""
    sent = policy_commands(sup, sid, "resume")
    actions = policy_actions(sup, sid)
    return (sent, actions) if len(actions) == len(sent) else None


def policy_commands(sup: SupervisorProc, sid: str, ctype: str) -> list[float]:
    """created_at (epoch seconds) of the commands the policy engine sent for this session."""
    out = []
    for created, target, args in db_rows(sup, "SELECT created_at, target, args FROM commands WHERE actor='policy' "
                                              "AND type=? ORDER BY created_at", ctype):
        if sid not in (target or "") + (args or ""):
            continue
        out.append(float(created) if isinstance(created, int | float) else datetime.fromisoformat(created).timestamp())
    return out


@pytest.fixture(scope="module")
def stack(opencode_bin: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("policystack")
    project = root / "projects" / "demo"
    project.mkdir(parents=True)
    sup = SupervisorProc(root / "sup", extra={"server": {"heartbeat_interval_sec": 1}, "policies": POLICIES}).start()
    cfg = opencode_config(fake_llm.base_url)
    models = cfg["provider"][PROVIDER_ID]["models"]
    models[COSTLY_MODEL] = {"name": "Costly Fake Model", "cost": {"input": 1000, "output": 1000}}
    env = opencode_env(Path(root / "home"), json.dumps(cfg)) | {"npm_config_offline": "true"}
    agent = AgentProc(root / "agent", sup.ws_url, sup.agent_token, node_id=NODE, projects=[("demo", str(project))],
                      manage=True, binary=opencode_bin, env=env, clean_env=True)
    try:
        agent.start()
        agent.wait_online(sup, timeout=60, sessions_available=True)
        yield Stack(sup, agent, fake_llm)
    finally:
        agent.cleanup()
        sup.stop()


def test_policies_endpoint_reports_the_config(stack: Stack) -> None:
    data = api_get(stack.sup, "/api/v1/policies")
    assert data["enabled"] and data["running"] and data["check_interval_seconds"] == 1
    resume = data["policies"]["resume_on_idle"]
    assert resume["enabled"] and resume["idle_threshold_seconds"] == IDLE_THRESHOLD and resume["message"] == MESSAGE
    assert resume["max_retries"] == 2
    assert data["policies"]["kill_on_cost"]["enabled"]
    assert data["policies"]["restart_on_compaction"]["enabled"] is False


def test_idle_session_is_resumed_once_per_idle_period(stack: Stack) -> None:
    sess = stack.create("hello policies")
    sid = sess["id"]
    assert sess["node_id"] == NODE and sess["model"] in (None, f"{PROVIDER_ID}/{MODEL_ID}")
    wait_status(stack.sup, sid, "idle")
    wait_for(lambda: "FAKE-REPLY: hello policies" in reply_text(stack.sup, sid), "the first reply")

    # After idle_threshold_seconds (checked every second) the supervisor resumes it with the message.
    first = wait_for(lambda: policy_actions(stack.sup, sid), "a policy.action for the idle session", 15)
    seen = time.monotonic()
    data = first[0]["data"]
    assert (data["policy"], data["action"], data["result"]) == ("resume_on_idle", "resume", "success"), data
    assert first[0]["node_id"] == NODE and first[0]["project"] == "demo"
    wait_for(lambda: stack.llm_requests_with(MESSAGE) >= 1, "the resume message at the fake LLM", 15)
    wait_for(lambda: f"FAKE-REPLY: {MESSAGE}" in reply_text(stack.sup, sid), "the reply to the resume message", 15)
    wait_status(stack.sup, sid, "idle")

    # Not on every 1 s check: the accepted resume restarts the idle clock, so within the threshold after
    # it nothing more is sent (the next resume is due only after another full idle period).
    time.sleep(max(0.0, seen + IDLE_THRESHOLD - 0.8 - time.monotonic()))
    assert len(policy_commands(stack.sup, sid, "resume")) == 1
    assert len(policy_actions(stack.sup, sid)) == 1

    # Let a second idle period pass: at most one more resume, a full threshold after the first.
    time.sleep(IDLE_THRESHOLD + 1.5)
    # The command row is written when the resume is sent, its policy.action once the agent answered:
    # read both until every sent resume has its recorded outcome.
    sent, actions = wait_for(lambda: settled_resumes(stack.sup, sid), "a policy.action for every sent resume", 15)
    assert 1 <= len(sent) <= 2, sent
    for a, b in itertools.pairwise(sent):
        assert b - a >= IDLE_THRESHOLD - 0.1, sent  # once per idle period, never back to back
    assert all(e["data"]["action"] == "resume" and e["data"]["result"] == "success" for e in actions)
    # Every resume reached the LLM exactly once (the agent prompted opencode, which asked the model).
    wait_for(lambda: stack.llm_requests_with(MESSAGE) >= len(sent), "one LLM request per resume", 15)

    audit = [a for a in api_get(stack.sup, "/api/v1/audit", actor="policy", limit=100)
             if a["args"].get("session_id") == sid]
    assert audit and {a["action"] for a in audit} == {"resume"}
    assert all(a["actor"] == "policy" and a["args"]["policy"] == "resume_on_idle" for a in audit)
    assert audit[0]["args"]["message"] == MESSAGE

    state = {(r["session_id"], r["policy"]): r for r in api_get(stack.sup, "/api/v1/policies")["state"]}
    row = state[(sid, "resume_on_idle")]
    assert row["last_result"] == "success" and row["last_success"]
    assert (sid, "kill_on_cost") not in state  # the free model costs nothing
    assert session_of(stack.sup, sid)["status"] in ("idle", "running")

    # Stop it so it does not keep being nudged while the next test runs.
    with stack.sup.client() as c:
        assert c.delete(f"/api/v1/sessions/{sid}").status_code == 200
    wait_status(stack.sup, sid, "killed", timeout=15)


def test_costly_session_is_killed(stack: Stack) -> None:
    sess = stack.create("spend some money", model=f"{PROVIDER_ID}/{COSTLY_MODEL}")
    sid = sess["id"]
    wait_for(lambda: stack.llm_requests_with("spend some money") >= 1, "the costly prompt at the fake LLM", 15)
    killed = wait_status(stack.sup, sid, "killed", timeout=20)
    assert killed["cost_usd"] > 0.0000001, killed  # opencode priced the reply with the model's cost

    # The session shows killed when the agent reports it; the engine records the outcome right after.
    actions = wait_for(lambda: policy_actions(stack.sup, sid), "the kill_on_cost policy.action", 15)
    assert [(e["data"]["policy"], e["data"]["action"], e["data"]["result"]) for e in actions] == [
        ("kill_on_cost", "kill_session", "success")], actions
    assert "session cost" in actions[0]["data"]["reason"]
    audit = [a for a in api_get(stack.sup, "/api/v1/audit", actor="policy", limit=100)
             if a["args"].get("session_id") == sid]
    assert [(a["action"], a["args"]["policy"]) for a in audit] == [("kill_session", "kill_on_cost")]
    assert policy_commands(stack.sup, sid, "resume") == []  # killed, never resumed


# A turn of a fresh session is ~2500 tokens (opencode's system prompt), each resume adds ~3000; the long
# prompt (one 40000-character word: ~10000 prompt tokens, echoed as one reply chunk) puts a session >12000.
TOKEN_THRESHOLD = 9_000
POLICIES_B = {
    "check_interval_seconds": 1,
    "resume_on_idle": {"enabled": True, "idle_threshold_seconds": IDLE_THRESHOLD, "max_retries": 1,
                       "retry_reset_seconds": 3600, "message": MESSAGE},
    "restart_on_compaction": {"enabled": True, "token_threshold": TOKEN_THRESHOLD, "max_retries": 1},
}


def restart_supervisor(stack: Stack, policies: dict[str, Any] | None = None) -> None:
    stack.sup.stop()
    if policies is not None:
        stack.sup.extra["policies"] = policies
    stack.sup.start()
    stack.agent.wait_online(stack.sup, timeout=60, sessions_available=True)


def test_handover_retry_cap_and_state_across_restarts(stack: Stack) -> None:
    """Runs last in this module: it restarts the shared supervisor with POLICIES_B."""
    restart_supervisor(stack, POLICIES_B)
    compaction = api_get(stack.sup, "/api/v1/policies")["policies"]["restart_on_compaction"]
    assert compaction["enabled"] and compaction["token_threshold"] == TOKEN_THRESHOLD

    # restart_on_compaction: the long session goes over the token threshold -> real handover.
    long_prompt = "LONGTASK " + "x" * 40_000
    old = stack.create(long_prompt)["id"]
    acts = wait_for(lambda: policy_actions(stack.sup, old), "the handover policy.action", 60)
    data = acts[0]["data"]
    assert (data["policy"], data["action"], data["result"]) == ("restart_on_compaction", "handover", "success"), data
    assert f"tokens (threshold {TOKEN_THRESHOLD})" in data["reason"]
    assert session_of(stack.sup, old)["tokens"]["total"] >= TOKEN_THRESHOLD
    wait_status(stack.sup, old, "killed", timeout=15)
    assert stack.llm_requests_with("HANDOVER:") >= 1  # the old session was asked for its notes first
    new_sessions = [s for s in api_get(stack.sup, "/api/v1/sessions") if s["id"] != old
                    and s["status"] not in ("killed", "completed")]
    assert len(new_sessions) == 1, new_sessions
    new = new_sessions[0]["id"]
    assert new_sessions[0]["project"] == "demo"
    audit = [a for a in api_get(stack.sup, "/api/v1/audit", actor="policy", limit=100)
             if a["args"].get("session_id") == old]
    assert [(a["action"], a["args"]["policy"]) for a in audit] == [("handover", "restart_on_compaction")]

    # The new session is small (no second handover); idle, it is resumed once and hits max_retries: 1.
    cap = wait_for(lambda: api_get(stack.sup, "/api/v1/events", session_id=new, type="policy.retry_cap"),
                   "a policy.retry_cap for the new session", 30)
    assert cap[0]["data"]["policy"] == "resume_on_idle" and cap[0]["data"]["max_retries"] == 1
    assert cap[0]["data"]["reason"] == "max_retries_reached" and cap[0]["data"]["retry_after"]
    assert [e["data"]["policy"] for e in policy_actions(stack.sup, new)] == ["resume_on_idle"]
    assert session_of(stack.sup, new)["tokens"]["total"] < TOKEN_THRESHOLD
    with stack.sup.client() as c:  # freeze its state: no live session, no further actions
        assert c.delete(f"/api/v1/sessions/{new}").status_code == 200
    wait_status(stack.sup, new, "killed", timeout=15)

    def rows() -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["session_id"], r["policy"]): r for r in api_get(stack.sup, "/api/v1/policies")["state"]
                if r["session_id"] in (old, new)}

    before = wait_for(lambda: (r := rows()) and len(r) == 2 and r, "both policy state rows")
    assert before[(old, "restart_on_compaction")]["last_result"] == "success"
    assert before[(new, "resume_on_idle")]["retry_count"] == 1 and before[(new, "resume_on_idle")]["capped"]
    restart_supervisor(stack)
    assert rows() == before  # retry counts, attempts, cap: all loaded from the database
    assert len(api_get(stack.sup, "/api/v1/events", session_id=new, type="policy.retry_cap")) == 1
