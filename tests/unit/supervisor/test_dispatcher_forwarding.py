"""The dispatcher's two sides of command forwarding (issue 21), in-process with a fake hub and a fake
forwarder: a command for a node another supervisor holds is forwarded and answered, audited and stored
as a local one (same timeout answer); the holder re-validates a forwarded row as an API call and sends
only what passes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from halswarm.core.model import Node
from halswarm.protocol import CommandResult, CommandTarget
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.writer import Writer
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.dispatcher import CommandError, Dispatcher
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.unit.supervisor.test_dispatcher import FakeHub

ME, OTHER = "sup-a:1", "sup-b:2"


class FakeForwarder:
    """Records forwarded rows and answers with a script (None: no result before the deadline)."""

    def __init__(self) -> None:
        self.rows: list[tuple[dict[str, Any], float]] = []
        self.answer: tuple[str, Any, str | None] | None = ("success", {"ok": "remote"}, None)
        self.run_row: Any = None

    async def forward(self, row: dict[str, Any], remaining: float) -> CommandResult | None:
        self.rows.append((row, remaining))
        if self.answer is None:
            await asyncio.sleep(remaining)  # the fake's stand-in for waiting until the deadline
            return None
        status, output, error = self.answer
        return CommandResult(row["id"], status, output, error)


@pytest.fixture
async def env(tmp_path):  # type: ignore[no-untyped-def]
    conn = connect(tmp_path / "d.db")
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    nodes = {
        "a": Node(id="a", status="online", projects=[{"name": "p", "directory": "/p"}]),
        "x": Node(id="x", status="offline", projects=[{"name": "p", "directory": "/p"}]),  # held by OTHER
        "z": Node(id="z", status="offline", projects=[{"name": "r", "directory": "/r"}]),  # held by nobody
    }
    for n in nodes.values():
        await writer.run(lambda c, n=n: upsert_node(c, n))
    tracker = SessionTracker()
    tracker.apply_state("a", {"id": "s-a", "project": "p", "status": "running"})
    tracker.apply_state("x", {"id": "s-x", "project": "p", "status": "idle"})
    hub = FakeHub()
    hub.links = {"a": object()}  # type: ignore[attr-defined]
    d = Dispatcher(hub, nodes, tracker, writer, Metrics(), default_timeout=0.5)
    hub.dispatcher = d
    fwd = FakeForwarder()
    leases = {"a": ME, "x": OTHER, "y": OTHER}
    # As the holders stored them: x gained project s since this supervisor loaded it; y is not known here.
    projects = {"a": frozenset({"p"}), "x": frozenset({"p", "s"}), "y": frozenset({"t"})}

    async def lookup() -> dict[str, tuple[str, frozenset[str]]]:
        return {n: (o, projects[n]) for n, o in leases.items()}

    d.enable_forwarding(fwd, ME, lookup)  # type: ignore[arg-type]
    yield d, hub, fwd, conn, leases
    await writer.stop()


async def test_a_node_held_elsewhere_is_forwarded_and_answered_like_a_local_one(env):
    d, hub, fwd, conn, _ = env
    local = await d.dispatch("status", CommandTarget(session_id="s-a"), actor="bob")
    remote = await d.dispatch("prompt_session", CommandTarget(session_id="s-x"), {"message": "hi"}, actor="bob",
                              ip="10.0.0.1")
    assert local.status == remote.status == "success" and remote.node_id == "x"
    assert remote.output == {"ok": "remote"} and remote.type == "prompt_session"
    assert [n for n, _ in hub.sent] == ["a"]  # only the local one went through this hub
    row, remaining = fwd.rows[0]
    assert row["id"] == remote.command_id and row["node_id"] == "x" and row["requested_by"] == ME
    assert json.loads(row["target"]) == {"session_id": "s-x"} and json.loads(row["args"]) == {"message": "hi"}
    assert 0 < remaining <= 0.5 and 0 < row["timeout_ms"] < 500  # the command's deadline, the agent's margin
    # The same audit and commands rows as a local command.
    rows = [tuple(r) for r in conn.execute("SELECT actor, action, target, result, ip_address FROM audit_log"
                                           " ORDER BY id").fetchall()]
    assert rows == [("bob", "session_status", "s-a@a", "success", None),
                    ("bob", "prompt_session", "s-x@x", "success", "10.0.0.1")]
    assert tuple(conn.execute("SELECT status, node_id FROM commands WHERE command_id=?",
                              (remote.command_id,)).fetchone()) == ("success", "x")
    # A node target and a project target reach a node held elsewhere too.
    assert (await d.dispatch("auth_refresh", CommandTarget(node_id="y"))).node_id == "y"
    assert (await d.dispatch("env_check", CommandTarget(node_id="x", project="p"))).node_id == "x"
    # Projects of nodes held elsewhere are the ones their holders stored.
    assert (await d.dispatch("create_session", CommandTarget(project="t"))).node_id == "y"
    assert (await d.dispatch("create_session", CommandTarget(project="s"))).node_id == "x"
    assert (await d.dispatch("env_check", CommandTarget(node_id="x", project="s"))).node_id == "x"
    with pytest.raises(CommandError) as e:
        await d.dispatch("env_check", CommandTarget(node_id="y", project="p"))
    assert e.value.code == "NOT_FOUND"


async def test_no_result_by_the_deadline_is_the_local_timeout_answer(env):
    d, hub, fwd, _, _ = env
    hub.reply["prompt_session"] = None
    fwd.answer = None
    local = await d.dispatch("prompt_session", CommandTarget(session_id="s-a"), {"message": "x"}, timeout=0.2)
    remote = await d.dispatch("prompt_session", CommandTarget(session_id="s-x"), {"message": "x"}, timeout=0.2)
    assert (local.status, local.error) == (remote.status, remote.error) == ("timeout", "no result within 0.2 s")


async def test_a_node_nobody_holds_is_offline_as_before(env):
    d, _hub, fwd, _, leases = env
    for target, code in [(CommandTarget(node_id="z"), "DISPATCH_ERROR"), (CommandTarget(project="r"), "DISPATCH_ERROR"),
                         (CommandTarget(node_id="ghost"), "NOT_FOUND")]:
        with pytest.raises(CommandError) as e:
            await d.dispatch("env_check", target)
        assert e.value.code == code
    del leases["x"]  # its holder let it go: offline again, read afresh for each command
    with pytest.raises(CommandError) as e:
        await d.dispatch("status", CommandTarget(session_id="s-x"))
    assert e.value.code == "DISPATCH_ERROR" and "offline" in e.value.message
    assert fwd.rows == []


def forwarded(**kw: Any) -> dict[str, Any]:
    return {"id": "c1", "node_id": "a", "type": "prompt_session", "target": json.dumps({"session_id": "s-a"}),
            "args": json.dumps({"message": "hi"}), "timeout_ms": 4500, "requested_by": OTHER, "actor": "bob",
            "remaining": 5.0} | kw


async def test_the_holder_sends_a_valid_forwarded_command_to_its_agent(env):
    d, hub, _fwd, conn, _ = env
    res = await d.run_forwarded(forwarded())
    assert (res.command_id, res.status) == ("c1", "success")
    node, payload = hub.sent[-1]
    assert node == "a" and payload["command_id"] == "c1" and payload["type"] == "prompt_session"
    assert payload["args"] == {"message": "hi"} and payload["target"] == {"session_id": "s-a"}
    assert 0 < payload["timeout_ms"] <= 4500
    # The asker writes the audit and commands rows; the holder writes none.
    assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 0
    res = await d.run_forwarded(forwarded(id="c2", type="inject", target=json.dumps({"project": "p"})))
    assert res.status == "success" and hub.sent[-1][1]["type"] == "prompt_session"  # an alias, normalised


@pytest.mark.parametrize(("change", "why"), [
    ({"type": "format_disk"}, "unsupported command type"),
    ({"type": None}, "type"),
    ({"target": json.dumps({"session_id": "s-x"})}, "node x is offline"),  # a session of another node
    ({"target": json.dumps({"project": "r"})}, "has no project r"),
    ({"node_id": "x", "target": json.dumps({"node_id": "x"})}, "not connected here"),
    ({"target": "[1]"}, "target"),
    ({"args": "[1, 2]"}, "args"),
    ({"args": "{not json"}, "Expecting"),
    ({"target": json.dumps({"session_id": 7})}, "session_id"),
])
async def test_the_holder_refuses_a_row_an_api_call_could_not_send(env, change: dict[str, Any], why: str):
    d, hub, _fwd, _, _ = env
    before = len(hub.sent)
    res = await d.run_forwarded(forwarded(**change))
    assert res.status == "failure" and res.error.startswith("forwarded command refused: ") and why in res.error
    assert len(hub.sent) == before  # nothing reached an agent
