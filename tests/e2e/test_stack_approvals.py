"""Approvals through the whole real stack (issue 19): halctl -> supervisor -> hal-agent -> opencode serve
(`permission.bash=ask`) -> the loopback fake LLM. A bash tool call asks permission; `halctl approvals
approve` unblocks it, the tool runs and the session goes idle; another is denied and the tool is
rejected. Skipped only when the pinned opencode is not installed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakes.fake_llm import FakeLLM, opencode_config_content
from tests.support.agent_proc import AgentProc, api_get, opencode_env, session_events, wait_status
from tests.support.halctl import halctl, halctl_json
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NODE = "e2e-approvals"


@dataclass
class Stack:
    sup: SupervisorProc
    fake: FakeLLM

    def waiting(self, prompt: str) -> tuple[str, dict[str, Any]]:
        """A new session whose bash tool call waits for permission, and its pending request (via halctl)."""
        sid = halctl_json(self.sup, "sessions", "start", "demo", "--prompt", prompt)["id"]
        wait_status(self.sup, sid, "waiting_input")
        [req] = wait_for(lambda: halctl_json(self.sup, "approvals", "list", "--session", sid),
                         "the request listed by halctl", 15)
        return sid, req

    def tool_results(self, prompt: str) -> list[str]:
        return [str(m.get("content")) for r in self.fake.chat_requests() if r.last_user_text == prompt
                for m in r.body.get("messages", []) if m.get("role") == "tool"]


@pytest.fixture(scope="module")
def stack(opencode_bin: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("approvals")
    project = root / "projects" / "demo"
    project.mkdir(parents=True)
    sup = SupervisorProc(root / "sup", extra={"server": {"heartbeat_interval_sec": 1}}).start()
    env = opencode_env(root / "home", opencode_config_content(fake_llm.base_url, permission_ask_bash=True))
    agent = AgentProc(root / "agent", sup.ws_url, sup.agent_token, node_id=NODE, projects=[("demo", str(project))],
                      manage=True, binary=opencode_bin, env=env, clean_env=True, opencode_port=0)
    try:
        agent.start()
        agent.wait_online(sup, timeout=60, sessions_available=True)
        yield Stack(sup, fake_llm)
    finally:
        agent.cleanup()
        sup.stop()


def test_approve_unblocks_the_tool_and_the_session_goes_idle(stack: Stack) -> None:
    sid, req = stack.waiting("TOOLCALL approve me")
    assert req["id"].startswith("per_") and req["node_id"] == NODE and req["project"] == "demo"
    assert (req["permission"], req["patterns"]) == ("bash", ["echo hi-from-tool"])
    assert stack.tool_results("TOOLCALL approve me") == []  # nothing ran while waiting

    res = halctl(stack.sup, "approvals", "approve", req["id"])
    assert res.returncode == 0 and f"approved {req['id']}" in res.stdout, (res.stdout, res.stderr)
    wait_status(stack.sup, sid, "idle")
    assert any("hi-from-tool" in t for t in stack.tool_results("TOOLCALL approve me"))
    replied = wait_for(lambda: session_events(stack.sup, sid, "permission.replied"), "opencode's reply stored", 10)
    assert replied[0]["data"]["requestID"] == req["id"] and replied[0]["data"]["reply"] == "once"
    assert halctl_json(stack.sup, "approvals", "list", "--session", sid) == []

    again = halctl(stack.sup, "approvals", "approve", req["id"])
    assert again.returncode != 0 and "already answered" in again.stderr, (again.stdout, again.stderr)
    audit = api_get(stack.sup, "/api/v1/audit", limit=50)
    assert [a["result"] for a in audit if a["action"] == "permission_reply" and req["id"] in str(a["args"])] == [
        "success"]


def test_deny_rejects_the_tool(stack: Stack) -> None:
    sid, req = stack.waiting("TOOLCALL deny me")
    res = halctl(stack.sup, "sessions", "deny", sid, "--message", "not on this box")
    assert res.returncode == 0 and f"denied {req['id']}" in res.stdout, (res.stdout, res.stderr)
    replied = wait_for(lambda: session_events(stack.sup, sid, "permission.replied"), "opencode's reply stored", 10)
    assert replied[0]["data"]["reply"] == "reject"
    wait_status(stack.sup, sid, "idle")  # opencode ends the turn; the session is not an error
    assert not any("hi-from-tool" in t for t in stack.tool_results("TOOLCALL deny me"))  # the command never ran
    rows = api_get(stack.sup, "/api/v1/events", session_id=sid, type="approval.replied")
    assert [(e["data"]["reply"], e["data"].get("message")) for e in rows] == [("reject", "not on this box")]
