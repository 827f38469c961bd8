"""The agent's opencode bridge against the REAL opencode 1.18.33 and the fake LLM.

One server for the whole module (config: model ``fake/fake-model``, ``permission: {bash: ask}``); each
test works in its own project directory.  Events come from ``/global/event`` through GlobalEventStream
into a SessionReducer, and the assertions are on the tracker's state and status trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from halswarm.agent.opencode_client import OpencodeNotFound
from halswarm.agent.session_state import ERROR, IDLE, RUNNING, WAITING_INPUT, DeltaCoalescer

if TYPE_CHECKING:
    from conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

# Routes and operationIds the agent relies on (catches API drift when the pinned version changes).
USED_ROUTES = {
    ("/global/health", "get"): "global.health",
    ("/global/event", "get"): "global.event",
    ("/session", "post"): "session.create",
    ("/session", "get"): "session.list",
    ("/experimental/session", "get"): "experimental.session.list",
    ("/session/status", "get"): "session.status",
    ("/session/{sessionID}", "get"): "session.get",
    ("/session/{sessionID}", "delete"): "session.delete",
    ("/session/{sessionID}/prompt_async", "post"): "session.prompt_async",
    ("/session/{sessionID}/abort", "post"): "session.abort",
    ("/session/{sessionID}/message", "get"): "session.messages",
    ("/permission", "get"): "permission.list",
    ("/permission/{requestID}/reply", "post"): "permission.reply",
}


async def test_health_and_api_contract(harness: Harness) -> None:
    health = await harness.client.health()
    assert health == {"healthy": True, "version": "1.18.33"}
    assert harness.process.version == "1.18.33"
    doc = await harness.client.openapi()
    for (path, method), op_id in USED_ROUTES.items():
        assert doc["paths"][path][method]["operationId"] == op_id, (path, method)


async def test_prompt_runs_then_idles_with_tokens_and_model(harness: Harness) -> None:
    h = harness
    directory = h.project_dir("hello")
    sess = await h.client.create_session(directory, title="e2e hello")
    sid = sess["id"]
    assert sess["directory"] == directory
    await h.recorder.wait(lambda: h.tracker.get(sid), "session.created in the tracker")
    await h.client.prompt_async(sid, "hello e2e", directory=directory)

    state = h.tracker.get(sid)
    await h.recorder.wait(lambda: IDLE in h.recorder.statuses(sid), "running -> idle")
    assert h.recorder.statuses(sid)[:2] == [RUNNING, IDLE]
    assert state.status == IDLE
    assert state.model == "fake-model" and state.provider == "fake"
    assert state.tokens["input"] > 0 and state.tokens["output"] > 0
    assert state.tokens["total"] >= state.tokens["input"] + state.tokens["output"]
    assert state.project == "e2e" and state.directory == directory
    assert state.error is None and state.cost_usd == 0.0

    # What the LLM received and what opencode stored.
    agent_calls = [r for r in h.fake.chat_requests() if r.last_user_text == "hello e2e" and r.body.get("tools")]
    assert agent_calls and agent_calls[0].headers["authorization"] == "Bearer sk-fake"
    msgs = await h.client.messages(sid, directory=directory)
    reply = [m for m in msgs if m["info"]["role"] == "assistant"][-1]
    text = "".join(p.get("text", "") for p in reply["parts"] if p["type"] == "text")
    assert text.strip() == "FAKE-REPLY: hello e2e"

    # The streamed deltas coalesce into one event carrying the whole text.
    coalescer = DeltaCoalescer(interval=60)
    out = [o for e in h.recorder.session_events(sid) for o in coalescer.push(e)] + coalescer.flush_all()
    deltas = [e for e in out if e.type == "message.part.delta" and e.properties.get("field") == "text"]
    assert len(deltas) == 1
    assert deltas[0].properties["delta"].strip() == "FAKE-REPLY: hello e2e"
    assert deltas[0].properties["count"] == 3


async def test_abort_during_slow_reply(harness: Harness) -> None:
    h = harness
    directory = h.project_dir("slow")
    sid = (await h.client.create_session(directory, title="slow"))["id"]
    await h.client.prompt_async(sid, "SLOW please", directory=directory)
    await h.recorder.wait(
        lambda: any(r.last_user_text == "SLOW please" and r.body.get("tools") for r in h.fake.chat_requests()),
        "the slow request reaching the fake LLM",
    )
    await h.recorder.wait(
        lambda: any(e.type == "message.part.delta" for e in h.recorder.session_events(sid)), "first streamed delta"
    )
    assert h.tracker.get(sid).status == RUNNING
    assert await h.client.abort(sid, directory=directory) is True
    await h.recorder.wait(lambda: h.tracker.get(sid).aborted, "MessageAbortedError")
    state = h.tracker.get(sid)
    assert state.status == IDLE and state.error is None
    assert h.recorder.statuses(sid) == [RUNNING, IDLE]
    errors = [e for e in h.recorder.session_events(sid) if e.type == "session.error"]
    assert errors[0].properties["error"]["name"] == "MessageAbortedError"
    # kill_session = abort + delete: reported as killed, not completed.
    assert await h.client.delete_session(sid) is True
    await h.recorder.wait(lambda: state.status == "killed", "session.deleted -> killed")


async def test_upstream_401_is_an_error(harness: Harness) -> None:
    h = harness
    directory = h.project_dir("auth401")
    sid = (await h.client.create_session(directory, title="401"))["id"]
    await h.client.prompt_async(sid, "FAIL401 now", directory=directory)
    await h.recorder.wait(lambda: h.tracker.get(sid) and h.tracker.get(sid).status == ERROR, "session.error")
    state = h.tracker.get(sid)
    assert "Incorrect API key" in (state.error or "")
    assert state.error_name == "APIError"
    # opencode follows the error with idle events; the error must stay visible.
    await h.recorder.wait(
        lambda: any(e.type == "session.idle" for e in h.recorder.session_events(sid)), "session.idle after the error"
    )
    assert state.status == ERROR
    assert h.recorder.statuses(sid) == [RUNNING, ERROR]


async def test_unknown_model_is_an_error(harness: Harness) -> None:
    h = harness
    directory = h.project_dir("badmodel")
    sid = (await h.client.create_session(directory, title="bad model"))["id"]
    await h.client.prompt_async(sid, "hello", model="nope/no-such-model", directory=directory)
    await h.recorder.wait(lambda: h.tracker.get(sid) and h.tracker.get(sid).status == ERROR, "session.error")
    state = h.tracker.get(sid)
    assert (state.error or "").startswith("Model not found: nope/no-such-model")
    assert "\n    at " not in state.error  # the first message, not the repeat with a JS stack


async def test_tool_call_waits_for_permission(harness: Harness) -> None:
    h = harness
    directory = h.project_dir("tool")
    sid = (await h.client.create_session(directory, title="tool"))["id"]
    await h.client.prompt_async(sid, "TOOLCALL now", directory=directory)
    await h.recorder.wait(lambda: h.tracker.get(sid) and h.tracker.get(sid).status == WAITING_INPUT, "permission.asked")
    state = h.tracker.get(sid)
    pending = await h.client.list_permissions(directory=directory)
    assert [p["id"] for p in pending] == list(state.pending_permissions)
    assert pending[0]["permission"] == "bash" and pending[0]["patterns"] == ["echo hi-from-tool"]

    assert await h.client.reply_permission(pending[0]["id"], "once", directory=directory) is True
    await h.recorder.wait(lambda: state.status == IDLE, "idle after the tool ran")
    assert h.recorder.statuses(sid) == [RUNNING, WAITING_INPUT, RUNNING, IDLE]
    assert state.pending_permissions == ()
    tool_results = [m for r in h.fake.chat_requests() if r.last_user_text == "TOOLCALL now" for m in r.body["messages"]]
    assert any(m.get("role") == "tool" and "hi-from-tool" in str(m.get("content")) for m in tool_results)


async def test_session_crud_and_delete_states(harness: Harness) -> None:
    h = harness
    directory = h.project_dir("crud")
    sess = await h.client.create_session(directory, title="crud", model="fake/fake-model")
    sid = sess["id"]
    assert (await h.client.get_session(sid))["title"] == "crud"
    assert sid in {s["id"] for s in await h.client.list_sessions([directory])}
    assert isinstance(await h.client.session_status_map(), dict)
    await h.recorder.wait(lambda: h.tracker.get(sid), "session.created")
    assert await h.client.delete_session(sid) is True
    await h.recorder.wait(lambda: h.tracker.get(sid).status in ("completed", "killed"), "session.deleted")
    assert h.tracker.get(sid).status == "completed"  # it was idle
    with pytest.raises(OpencodeNotFound) as info:
        await h.client.delete_session(sid)
    assert info.value.status == 404 and info.value.name == "NotFoundError"
    with pytest.raises(OpencodeNotFound, match="Session not found"):
        await h.client.get_session("ses_doesnotexist")
