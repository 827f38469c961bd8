"""Approvals end to end on the supervisor's side (issue 19): a real supervisor, a protocol-speaking agent
that asks permissions and answers `permission_reply` like the real agent (and forwards opencode's
`permission.replied`), the API, halctl, roles, audit, the 409 on a second answer, a restart, and the
unanswered-request policy (reject and escalate)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from halswarm.protocol import Command, CommandResult
from tests.fakes.receivers import Receiver, receivers
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import ADMIN_NAME, SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(120)

HALCTL = shutil.which("halctl", path=str(Path(sys.executable).parent)) or "halctl"
VIEWER_TOKEN, OPERATOR_TOKEN = "v" * 8 + "0123456789abcdef" * 3, "o" * 8 + "fedcba9876543210" * 3
NODE, PROJECT = "appr-node", "alpha"


def asked(rid: str, sid: str, command: str = "echo hi") -> dict[str, Any]:
    return {"id": rid, "sessionID": sid, "permission": "bash", "patterns": [command], "always": ["echo *"],
            "metadata": {"command": command}, "tool": {"messageID": "msg_1", "callID": "call_1"}}


class Node:
    """The agent: sessions waiting for permissions; answers permission_reply as the real agent does."""

    def __init__(self, sup: SupervisorProc) -> None:
        self.agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
        self.agent.handler = self.handle
        self.seq = 0
        self.pending: dict[str, str] = {}  # request id -> session id
        self.replies: list[Command] = []
        self.forward_replied = True
        self.hold: asyncio.Event | None = None  # set: a reply waits for it (an answer in flight)

    async def connect(self, sessions: tuple[str, ...] = ("ses_a", "ses_b")) -> None:
        await self.agent.connect(sessions=[session_state(s, PROJECT, "waiting_input") for s in sessions],
                                 last_acked_seq=self.seq)

    async def send(self, ev_type: str, sid: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.agent.send_event(self.seq, ev_type, session_id=sid, project=PROJECT, data=data)
        await self.agent.wait_acked(self.seq)

    async def ask(self, rid: str, sid: str, command: str = "echo hi") -> None:
        self.pending[rid] = sid
        await self.send("permission.asked", sid, asked(rid, sid, command))

    async def handle(self, cmd: Command) -> CommandResult:
        if cmd.type != "permission_reply":
            return CommandResult(cmd.command_id, "failure", None, f"unsupported {cmd.type}")
        self.replies.append(cmd)
        if self.hold is not None:
            await self.hold.wait()
        rid, sid = cmd.args.get("permission_id"), cmd.target.session_id or cmd.args.get("session_id")
        if self.pending.get(rid) != sid:
            return CommandResult(cmd.command_id, "failure", None,
                                 f"permission request is not pending: {rid} for session {sid} on this node")
        del self.pending[rid]
        if self.forward_replied:  # opencode's own event, forwarded a moment later
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(
                self.send("permission.replied", sid, {"sessionID": sid, "requestID": rid, "reply": cmd.args["reply"]})))
        return CommandResult(cmd.command_id, "success", {"session_id": sid, "permission_id": rid,
                                                         "reply": cmd.args["reply"], "accepted": True})


def _with_roles(sup: SupervisorProc) -> SupervisorProc:
    sup.extra["security"] = {"operators": [{"name": ADMIN_NAME, "role": "admin", "token": sup.token},
                                           {"name": "dash", "role": "viewer", "token": VIEWER_TOKEN},
                                           {"name": "oncall", "role": "operator", "token": OPERATOR_TOKEN}]}
    return sup


async def api(sup: SupervisorProc, method: str, path: str, token: str | None = None,
              body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sup.api, timeout=30,
                                 headers={"Authorization": f"Bearer {token or sup.token}"}) as c:
        return await c.request(method, "/api/v1" + path, json=body)


async def halctl(sup: SupervisorProc, *args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    env |= {"HOME": str(sup.workdir), "HALCTL_SUPERVISOR_URL": sup.api, "HALCTL_AUTH_TOKEN": token or sup.token}
    proc = await asyncio.create_subprocess_exec(HALCTL, *args, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def pending_ids(sup: SupervisorProc, query: str = "") -> list[str]:
    r = await api(sup, "GET", "/approvals" + query, VIEWER_TOKEN if "security" in sup.extra else None)
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["data"]]


async def test_list_approve_deny_conflict_roles_and_audit(make_supervisor):
    sup = _with_roles(make_supervisor()).start()
    node = Node(sup)
    await node.connect()
    try:
        await node.ask("per_one1", "ses_a", "echo hi")
        await node.ask("per_two2", "ses_b", "rm -rf build")
        r = await api(sup, "GET", "/approvals", VIEWER_TOKEN)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"]["total"] == 2 and [a["id"] for a in body["data"]] == ["per_one1", "per_two2"]
        first = body["data"][0]
        assert {k: first[k] for k in ("node_id", "session_id", "project", "permission", "patterns", "command",
                                      "status", "approve_command")} == {
            "node_id": NODE, "session_id": "ses_a", "project": PROJECT, "permission": "bash",
            "patterns": ["echo hi"], "command": "echo hi", "status": "pending",
            "approve_command": "halctl approvals approve per_one1"}
        assert first["age_sec"] >= 0 and first["asked_at"].endswith("Z")
        # cursor paging like the other lists
        page1 = (await api(sup, "GET", "/approvals?limit=1")).json()
        assert [a["id"] for a in page1["data"]] == ["per_one1"] and page1["meta"]["next"]
        page2 = (await api(sup, "GET", f"/approvals?limit=1&after={page1['meta']['next']}")).json()
        assert [a["id"] for a in page2["data"]] == ["per_two2"] and page2["meta"]["next"] is None
        assert await pending_ids(sup, "?session_id=ses_b") == ["per_two2"]

        # a viewer sees but cannot answer; nothing reaches the agent
        r = await api(sup, "POST", "/approvals/per_one1", VIEWER_TOKEN, {"reply": "once"})
        assert (r.status_code, r.json()["code"]) == (403, "FORBIDDEN")
        # bad bodies and unknown ids: one clear line, nothing sent
        for bad in ({"reply": "yes"}, {"reply": "once", "message": "x" * 2001}, {"reply": "once", "extra": 1}, {}):
            r = await api(sup, "POST", "/approvals/per_one1", OPERATOR_TOKEN, bad)
            assert r.status_code == 400, (bad, r.text)
        r = await api(sup, "POST", "/approvals/per_nothere9", OPERATOR_TOKEN, {"reply": "once"})
        assert (r.status_code, r.json()["code"]) == (404, "NOT_FOUND"), r.text
        r = await api(sup, "POST", "/approvals/not-an-id", OPERATOR_TOKEN, {"reply": "once"})
        assert (r.status_code, r.json()["code"]) == (400, "VALIDATION_ERROR"), r.text
        assert "'permission_id' must look like per_" in r.json()["error"]
        assert node.replies == []

        r = await api(sup, "POST", "/approvals/per_one1", OPERATOR_TOKEN, {"reply": "once"})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["status"], data["reply"], data["replied_by"]) == ("answered", "once", "oncall")
        [cmd] = node.replies
        assert (cmd.type, cmd.target.session_id, cmd.args) == (
            "permission_reply", "ses_a", {"permission_id": "per_one1", "reply": "once", "session_id": "ses_a"})
        assert await pending_ids(sup) == ["per_two2"]

        # idempotent: a second answer is refused with what happened, and nothing is sent again
        r = await api(sup, "POST", "/approvals/per_one1", OPERATOR_TOKEN, {"reply": "reject"})
        assert (r.status_code, r.json()["code"]) == (409, "CONFLICT"), r.text
        assert "already answered (once by oncall" in r.json()["error"]
        await until(lambda: node.seq >= 3, "opencode's permission.replied forwarded", 10)
        r = await api(sup, "POST", "/approvals/per_one1", OPERATOR_TOKEN, {"reply": "once"})
        assert r.status_code == 409 and len(node.replies) == 1

        # halctl: list, deny with a message, and the same 409 as one error line
        rc, out, err = await halctl(sup, "approvals", "list", token=VIEWER_TOKEN)
        assert rc == 0 and "per_two2" in out and "rm -rf build" in out and "per_one1" not in out, (out, err)
        rc, out, err = await halctl(sup, "approvals", "deny", "per_two2", "--message", "not in prod",
                                    token=VIEWER_TOKEN)
        assert rc == 4 and "error:" in err and node.replies[-1].args["permission_id"] == "per_one1", (rc, out, err)
        rc, out, err = await halctl(sup, "approvals", "deny", "per_two2", "--message", "not in prod",
                                    token=OPERATOR_TOKEN)
        assert rc == 0 and "denied per_two2" in out, (out, err)
        assert node.replies[-1].args == {"permission_id": "per_two2", "reply": "reject", "message": "not in prod",
                                         "session_id": "ses_b"}
        rc, out, err = await halctl(sup, "approvals", "approve", "per_two2", token=OPERATOR_TOKEN)
        assert rc != 0 and "already answered (reject by oncall" in err, (out, err)
        assert await pending_ids(sup) == []

        # every answer is audited with the operator's name; the answers are events
        audit = (await api(sup, "GET", "/audit?action=permission_reply")).json()["data"]
        mine = [a for a in audit if a["action"] == "permission_reply"]
        assert {(a["actor"], a["result"]) for a in mine} == {("oncall", "success")} and len(mine) == 2
        events = (await api(sup, "GET", "/events?type=approval.replied")).json()["data"]
        assert sorted((e["data"]["id"], e["data"]["reply"], e["data"]["actor"]) for e in events) == [
            ("per_one1", "once", "oncall"), ("per_two2", "reject", "oncall")]
        assert events[0]["session_id"] in ("ses_a", "ses_b") and events[0]["node_id"] == NODE
    finally:
        await node.agent.close()


async def test_sessions_approve_needs_a_single_pending_request(make_supervisor):
    sup = make_supervisor().start()
    node = Node(sup)
    await node.connect()
    try:
        rc, _, err = await halctl(sup, "sessions", "approve", "ses_a")
        assert rc != 0 and "session ses_a has no pending approval" in err, err
        await node.ask("per_aa1", "ses_a", "ls")
        await node.ask("per_aa2", "ses_a", "make test")
        rc, _, err = await halctl(sup, "sessions", "approve", "ses_a")
        assert rc != 0 and "2 pending approvals" in err and "per_aa1 (bash: ls)" in err and "per_aa2" in err, err
        assert node.replies == []
        rc, out, err = await halctl(sup, "approvals", "approve", "per_aa1", "--always")
        assert rc == 0 and "approved (always) per_aa1" in out, (out, err)
        rc, out, err = await halctl(sup, "sessions", "deny", "ses_a", "-m", "no")
        assert rc == 0 and "denied per_aa2" in out, (out, err)
        assert [(c.args["permission_id"], c.args["reply"]) for c in node.replies] == [
            ("per_aa1", "always"), ("per_aa2", "reject")]
    finally:
        await node.agent.close()


async def test_a_request_the_agent_no_longer_has_is_a_conflict_not_a_retry(make_supervisor):
    """Answered at the node (opencode's event not yet here): the agent refuses, the API says 409, the row closes."""
    sup = make_supervisor().start()
    node = Node(sup)
    await node.connect()
    try:
        await node.ask("per_gone1", "ses_a")
        node.pending.clear()
        r = await api(sup, "POST", "/approvals/per_gone1", None, {"reply": "once"})
        assert (r.status_code, r.json()["code"]) == (409, "CONFLICT"), r.text
        assert "no longer pending" in r.json()["error"]
        assert await pending_ids(sup) == []
    finally:
        await node.agent.close()


async def test_two_answers_at_once_send_one(make_supervisor):
    """A double click, or two operators: while one answer is in flight the other gets 409, nothing twice."""
    sup = make_supervisor().start()
    node = Node(sup)
    await node.connect()
    node.hold = asyncio.Event()
    try:
        await node.ask("per_race1", "ses_a")
        first = asyncio.create_task(api(sup, "POST", "/approvals/per_race1", None, {"reply": "once"}))
        await until(lambda: node.replies, "the first answer reached the agent", 10)
        r = await api(sup, "POST", "/approvals/per_race1", None, {"reply": "reject"})
        assert (r.status_code, r.json()["code"]) == (409, "CONFLICT") and "already being sent" in r.json()["error"]
        node.hold.set()
        assert (await first).status_code == 200
        assert [c.args["reply"] for c in node.replies] == ["once"]
    finally:
        node.hold.set()
        await node.agent.close()


async def test_pending_requests_survive_a_restart_and_ended_sessions_drop_theirs(make_supervisor):
    sup = make_supervisor().start()
    node = Node(sup)
    await node.connect()
    try:
        await node.ask("per_keep1", "ses_a")
        await node.ask("per_drop1", "ses_b")
        await node.agent.close()
        sup.stop()
        sup.start()
        assert await pending_ids(sup) == ["per_keep1", "per_drop1"]
        r = await api(sup, "POST", "/approvals/per_keep1", None, {"reply": "once"})  # its node is offline
        assert r.status_code in (502, 503) and r.json()["code"] in ("DISPATCH_ERROR", "SERVICE_UNAVAILABLE"), r.text
        node.agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
        node.agent.handler = node.handle
        await node.connect()
        await node.send("session.state", "ses_b", session_state("ses_b", PROJECT, "killed"))
        assert await pending_ids(sup) == ["per_keep1"]
        r = await api(sup, "POST", "/approvals/per_keep1", None, {"reply": "once"})
        assert r.status_code == 200, r.text
        r = await api(sup, "POST", "/approvals/per_drop1", None, {"reply": "once"})
        assert r.status_code == 409 and "no longer pending" in r.json()["error"], r.text
    finally:
        await node.agent.close()


async def test_timeout_policy_rejects_an_unanswered_request(make_supervisor):
    sup = make_supervisor(approvals={"timeout_minutes": 0.02, "on_timeout": "reject"}).start()  # 1.2 s
    node = Node(sup)
    await node.connect()
    try:
        await node.ask("per_late1", "ses_a")
        await until(lambda: node.replies, "the policy's rejection reaches the agent", 20)
        [cmd] = node.replies
        assert cmd.args["reply"] == "reject" and "no answer within 0.02 minutes" in cmd.args["message"]
        assert await pending_ids(sup) == []

        # Overdue while its node is offline: no command is tried (and audited as failed) at every check;
        # it is rejected once the node is back.
        await node.ask("per_late2", "ses_b")
        await node.agent.close()

        async def overdue_offline() -> bool:
            [row] = (await api(sup, "GET", "/approvals")).json()["data"]
            return bool(row["age_sec"] >= 3.0)  # the timeout, then several checks (every 0.3 s)

        await until(overdue_offline, "per_late2 overdue for several checks", 20)
        assert len(node.replies) == 1
        node.agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [(PROJECT, "/srv/alpha")])
        node.agent.handler = node.handle
        await node.connect()
        await until(lambda: len(node.replies) == 2, "the rejection once the node is back", 20)
        assert await pending_ids(sup) == []
        audit = (await api(sup, "GET", "/audit")).json()["data"]
        mine = [(a["actor"], a["result"]) for a in audit if a["action"] == "permission_reply"]
        assert mine == [("approvals-policy", "success")] * 2, mine
    finally:
        await node.agent.close()


def lambda_async(fn, n: int):  # type: ignore[no-untyped-def]
    async def pred() -> bool:
        return len(await fn()) >= n
    return pred


async def test_timeout_policy_escalates_once_and_notifications_name_the_command(make_supervisor):
    with receivers("hook") as (hook,):
        sup = make_supervisor(approvals={"timeout_minutes": 0.01, "on_timeout": "escalate"},
                              routes=[{"match": "permission.asked", "target": f"webhook:{hook.url}/ask"},
                                      {"match": "approval.*", "target": f"webhook:{hook.url}/approval"}],
                              routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        node = Node(sup)
        await node.connect()
        try:
            await _escalates(sup, node, hook)
        finally:
            await node.agent.close()


async def _escalates(sup: SupervisorProc, node: Node, hook: Receiver) -> None:
    await node.ask("per_esc1", "ses_a", "deploy")

    async def escalated() -> list[dict[str, Any]]:
        return list((await api(sup, "GET", "/events?type=approval.escalated")).json()["data"])

    [ev] = await until(escalated, "approval.escalated stored", 20)
    assert ev["data"]["id"] == "per_esc1" and ev["data"]["approve_command"] == "halctl approvals approve per_esc1"
    assert ev["session_id"] == "ses_a" and ev["node_id"] == NODE
    # A later request escalates in a later check: by then the first one was looked at again, not re-sent.
    await node.ask("per_esc2", "ses_b", "deploy again")
    await until(lambda_async(escalated, 2), "the second request escalated", 20)
    assert sorted(e["data"]["id"] for e in await escalated()) == ["per_esc1", "per_esc2"]
    rows = (await api(sup, "GET", "/approvals")).json()["data"]
    assert [(r["id"], r["status"], r["escalated_at"] is not None) for r in rows] == [
        ("per_esc1", "pending", True), ("per_esc2", "pending", True)]
    assert node.replies == []
    routed = await until(lambda: {b["event"]["type"]: b for b in hook.bodies()} if len(hook.bodies()) >= 3
                         else None, "permission.asked (twice) and approval.escalated routed", 20)
    ask = next(b for b in hook.bodies() if b["event"]["data"]["id"] == "per_esc1" and
               b["event"]["type"] == "permission.asked")
    assert ask["approve_command"] == "halctl approvals approve per_esc1"
    assert "halctl approvals approve per_esc1" in ask["text"] and "deploy" in ask["text"]
    assert routed["approval.escalated"]["event"]["data"]["approve_command"].startswith("halctl approvals approve")
