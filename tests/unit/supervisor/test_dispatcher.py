"""Dispatcher: target resolution, aliases, timeouts, node loss, idempotency (in-process, fake hub)."""

from __future__ import annotations

import asyncio
import json

import pytest

from halswarm.core.model import Node
from halswarm.protocol import CommandResult, CommandTarget
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.dispatcher import CommandError, Dispatcher, normalize_type
from halswarm.supervisor.runtime.tracker import SessionTracker


class FakeHub:
    """Stands in for the WebSocket hub: records frames and answers through a script."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.dispatcher: Dispatcher | None = None
        self.reply: dict[str, tuple[str, object, str | None] | None] = {}
        self.connected = True

    async def send_command(self, node_id: str, frame: str) -> bool:
        if not self.connected:
            return False
        payload = json.loads(frame)["payload"]
        self.sent.append((node_id, payload))
        answer = self.reply.get(payload["type"], ("success", {"ok": True}, None))
        if answer is not None:
            status, output, error = answer
            asyncio.get_running_loop().call_soon(
                self.dispatcher.on_result, node_id, CommandResult(payload["command_id"], status, output, error))
        return True


@pytest.fixture
async def env(tmp_path):  # type: ignore[no-untyped-def]
    conn = connect(tmp_path / "d.db")
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    nodes = {
        "a": Node(id="a", status="online", projects=[{"name": "p", "directory": "/p"}]),
        "b": Node(id="b", status="online", projects=[{"name": "p", "directory": "/p"}, {"name": "q", "directory": ""}]),
        "z": Node(id="z", status="offline", projects=[{"name": "r", "directory": "/r"}]),
    }
    for n in nodes.values():
        await writer.run(lambda c, n=n: upsert_node(c, n))
    tracker = SessionTracker()
    tracker.apply_state("a", {"id": "s-a", "project": "p", "status": "running"})
    tracker.apply_state("z", {"id": "s-z", "project": "r", "status": "idle"})
    hub = FakeHub()
    d = Dispatcher(hub, nodes, tracker, writer, Metrics(), default_timeout=0.5)
    hub.dispatcher = d
    yield d, hub, conn
    await writer.stop()


def test_aliases_normalize_and_unknown_types_are_refused():
    assert normalize_type("/inject") == "prompt_session"
    assert normalize_type(" START ") == "create_session"
    assert normalize_type("/resume") == "resume"
    assert normalize_type("push_credentials") == "credential_push"
    with pytest.raises(CommandError) as e:
        normalize_type("format_disk")
    assert e.value.code == "BAD_REQUEST"


async def test_resolution_order_session_project_node(env):
    d, _hub, _ = env
    assert d.resolve("x", CommandTarget(session_id="s-a", project="q")) == "a"
    # project: the least busy online node that has it (a runs a session, b does not)
    assert d.resolve("x", CommandTarget(project="p")) == "b"
    assert d.resolve("x", CommandTarget(node_id="a")) == "a"
    cases = [
        (CommandTarget(session_id="nope"), "NOT_FOUND"),
        (CommandTarget(session_id="s-z"), "DISPATCH_ERROR"),
        (CommandTarget(project="r"), "DISPATCH_ERROR"),
        (CommandTarget(project="ghost"), "NOT_FOUND"),
        (CommandTarget(node_id="z"), "DISPATCH_ERROR"),
        (CommandTarget(node_id="ghost"), "NOT_FOUND"),
        (CommandTarget(), "BAD_REQUEST"),
        (CommandTarget(project="q", node_id="a"), "NOT_FOUND"),
    ]
    for target, code in cases:
        with pytest.raises(CommandError) as e:
            d.resolve("x", target)
        assert e.value.code == code, target


async def test_result_timeout_and_audit(env):
    d, hub, conn = env
    res = await d.dispatch("status", CommandTarget(session_id="s-a"), actor="bob")
    assert res.status == "success" and res.node_id == "a" and res.type == "session_status"
    hub.reply["prompt_session"] = None  # the agent never answers
    res = await d.dispatch("prompt_session", CommandTarget(session_id="s-a"), {"message": "x"}, timeout=0.2)
    assert res.status == "timeout" and "0.2" in (res.error or "")
    rows = conn.execute("SELECT actor, action, result FROM audit_log ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [("bob", "session_status", "success"), ("api", "prompt_session", "timeout")]
    statuses = conn.execute("SELECT status FROM commands ORDER BY created_at").fetchall()
    assert [r[0] for r in statuses] == ["success", "timeout"]


async def test_node_going_offline_fails_waiting_commands_fast(env):
    d, hub, _ = env
    hub.reply["handover"] = None
    task = asyncio.create_task(d.dispatch("handover", CommandTarget(session_id="s-a"), timeout=30))
    await asyncio.sleep(0.05)
    d.node_gone("a")
    res = await asyncio.wait_for(task, 2)
    assert res.status == "failure" and "went offline" in (res.error or "")


async def test_results_from_the_wrong_node_are_ignored(env):
    d, hub, _ = env
    hub.reply["session_status"] = None
    task = asyncio.create_task(d.dispatch("session_status", CommandTarget(session_id="s-a"), timeout=0.3))
    await asyncio.sleep(0.05)
    cid = hub.sent[-1][1]["command_id"]
    d.on_result("b", CommandResult(cid, "success", "forged", None))
    res = await task
    assert res.status == "timeout"


async def test_idempotency_caches_success_only_and_joins_in_flight(env):
    d, hub, _ = env
    t = CommandTarget(node_id="b")
    r1, r2 = await asyncio.gather(d.dispatch("auth_refresh", t, idempotency_key="k"),
                                  d.dispatch("auth_refresh", t, idempotency_key="k"))
    assert r1.command_id == r2.command_id and len(hub.sent) == 1
    r3 = await d.dispatch("auth_refresh", t, idempotency_key="k")
    assert r3.replayed and r3.command_id == r1.command_id and len(hub.sent) == 1
    hub.reply["env_check"] = ("failure", None, "boom")
    await d.dispatch("env_check", t, idempotency_key="f")
    again = await d.dispatch("env_check", t, idempotency_key="f")
    assert not again.replayed and len(hub.sent) == 3


async def test_replays_are_audited_as_replays(env):
    d, _hub, conn = env
    t = CommandTarget(node_id="b")
    first = await d.dispatch("auth_refresh", t, idempotency_key="r", actor="carol")
    again = await d.dispatch("auth_refresh", t, idempotency_key="r", actor="dave", ip="10.0.0.9")
    assert again.replayed
    rows = [tuple(r) for r in conn.execute(
        "SELECT actor, action, result, command_id, ip_address, error FROM audit_log ORDER BY id").fetchall()]
    assert rows[0][:4] == ("carol", "auth_refresh", "success", first.command_id)
    actor, action, result, command_id, ip, error = rows[1]
    assert (actor, action, result, command_id, ip) == ("dave", "auth_refresh", "replayed", first.command_id,
                                                        "10.0.0.9")
    assert "idempotent replay" in error and len(rows) == 2


async def test_timeout_is_the_callers_deadline_and_the_agent_gets_less(env):
    d, hub, _ = env
    hub.reply["prompt_session"] = None  # the agent never answers
    loop = asyncio.get_running_loop()
    started = loop.time()
    res = await d.dispatch("prompt_session", CommandTarget(session_id="s-a"), {"message": "x"}, timeout=1.0)
    elapsed = loop.time() - started
    assert res.status == "timeout"
    # No grace period beyond the command's own timeout (the old code waited timeout + 2 s).
    assert 0.9 <= elapsed < 2.5, elapsed
    # The agent's own deadline is a little shorter, so its `timeout` result can arrive in time.
    assert 0 < hub.sent[-1][1]["timeout_ms"] < 1000
