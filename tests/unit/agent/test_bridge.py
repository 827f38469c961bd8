"""EventBridge: opencode events in, outbox events (raw + session.state) out."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from halswarm.agent.bridge import NOISE_TYPES, STATE_EVENT, EventBridge, session_object
from halswarm.agent.opencode_events import OpencodeEvent, parse_global_stream
from halswarm.agent.session_state import SessionReducer

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "opencode"  # captured opencode 1.x streams

PROJ = "/srv/alpha"


class Sink:
    """Stands in for AsyncOutbox.append; ``refuse`` makes it answer like a full outbox."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.refuse = False

    async def __call__(self, event_id: str | None, etype: str, sid: str | None, project: str | None, data: Any) -> Any:
        if self.refuse:
            return None
        ev = {"event_id": event_id, "type": etype, "session_id": sid, "project": project, "data": data}
        self.events.append(ev)
        return ev

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def states(self, sid: str | None = None) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["type"] == STATE_EVENT and (sid is None or e["session_id"] == sid)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(projects: dict[str, str] | None = None, **kw: Any) -> tuple[EventBridge, Sink, SessionReducer]:
    tracker = SessionReducer(projects or {"alpha": PROJ}, clock=itertools.count(1000).__next__)
    sink = Sink()
    return EventBridge(tracker, sink, **kw), sink, tracker


def ev(etype: str, sid: str | None = "ses_1", directory: str | None = PROJ, eid: str | None = None, **props: Any
       ) -> OpencodeEvent:
    if sid is not None:
        props.setdefault("sessionID", sid)
    return OpencodeEvent(etype, props, directory=directory, project="global", id=eid)


def created(sid: str = "ses_1", directory: str = PROJ, **info: Any) -> OpencodeEvent:
    body = {"id": sid, "directory": directory, "title": "t", "time": {"created": 1795770000000}, **info}
    return ev("session.created", sid, directory, eid=f"evt_c_{sid}", info=body)


async def test_created_session_gives_raw_event_then_state() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created())
    assert sink.types() == ["session.created", STATE_EVENT]
    raw, state = sink.events
    assert raw["event_id"] == "evt_c_ses_1" and raw["project"] == "alpha" and raw["session_id"] == "ses_1"
    assert raw["data"]["info"]["id"] == "ses_1"  # data is opencode's properties
    obj = state["data"]
    assert list(obj) == ["id", "project", "directory", "status", "model", "tokens", "cost_usd", "compaction_count",
                         "current_task", "error", "title", "started_at", "last_activity"]
    assert obj["status"] == "idle" and obj["project"] == "alpha" and obj["started_at"] == 1795770000.0
    assert state["event_id"] is None  # the outbox makes one


async def test_noise_sessionless_and_foreign_events_are_dropped() -> None:
    bridge, sink, _ = make()
    await bridge.handle(ev("plugin.added", None, None, name="x"))
    await bridge.handle(ev("catalog.updated", None))
    await bridge.handle(ev("project.updated", None, "global", id="global"))
    await bridge.handle(ev("server.connected", None, None))
    await bridge.handle(created("ses_other", "/home/op/private"))
    await bridge.handle(ev("session.status", "ses_other", "/home/op/private", status={"type": "busy"}))
    assert sink.events == []
    assert bridge.snapshot() == [] and bridge.get("ses_other") is None
    assert bridge.counters["noise"] == 3 and bridge.counters["sessionless"] == 1
    assert bridge.counters["foreign"] == 2
    assert "plugin.added" in NOISE_TYPES


async def test_subdirectory_of_a_project_belongs_to_it() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created("ses_sub", PROJ + "/pkg/api"))
    assert sink.events[0]["project"] == "alpha"
    assert bridge.get("ses_sub")["directory"] == PROJ + "/pkg/api"


async def test_state_only_when_reported_fields_change() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created())
    await bridge.handle(ev("session.updated", info={"id": "ses_1", "directory": PROJ, "title": "t"}))
    assert sink.types() == ["session.created", STATE_EVENT, "session.updated"]
    await bridge.handle(ev("session.updated", info={"id": "ses_1", "directory": PROJ, "title": "renamed"}))
    assert sink.types()[-1] == STATE_EVENT and sink.states()[-1]["title"] == "renamed"


async def test_status_trail_model_tokens_and_error() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created())
    await bridge.handle(ev("session.status", status={"type": "busy"}))
    await bridge.handle(ev("message.updated", info={
        "id": "msg_a", "sessionID": "ses_1", "role": "assistant", "modelID": "fake-model", "providerID": "fake",
        "tokens": {"input": 10, "output": 3, "reasoning": 0, "cache": {"read": 0, "write": 0}, "total": 13},
        "cost": 0.0012}))
    await bridge.handle(ev("permission.asked", id="per_1", permission="bash"))
    await bridge.handle(ev("permission.replied", requestID="per_1", reply="once"))
    await bridge.handle(ev("session.error", error={"name": "APIError", "data": {"message": "Incorrect API key"}}))
    await bridge.handle(ev("session.status", status={"type": "idle"}))
    await bridge.handle(ev("session.idle"))
    states = sink.states("ses_1")
    assert [s["status"] for s in states] == ["idle", "running", "running", "waiting_input", "running", "error"]
    last = states[-1]
    assert last["model"] == "fake/fake-model"
    assert last["tokens"] == {"input": 10, "output": 3, "total": 13} and last["cost_usd"] == 0.0012
    assert last["error"] == "Incorrect API key"
    assert bridge.turn_ends("ses_1") == 1


async def test_deltas_are_coalesced_in_order_with_the_next_event() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created())
    for i, word in enumerate(["FAKE-", "REPLY: ", "hi"]):
        await bridge.handle(ev("message.part.delta", eid=f"evt_d{i}", messageID="msg_a", partID="prt_1",
                               field="text", delta=word))
    assert sink.types() == ["session.created", STATE_EVENT]  # held back
    await bridge.handle(ev("message.part.updated", part={"id": "prt_1", "type": "text", "text": "FAKE-REPLY: hi"}))
    assert sink.types()[2:] == ["message.part.delta", "message.part.updated"]
    delta = sink.events[2]
    assert delta["event_id"] == "evt_d0"
    assert delta["data"] == {"sessionID": "ses_1", "messageID": "msg_a", "partID": "prt_1", "field": "text",
                             "delta": "FAKE-REPLY: hi", "count": 3}


async def test_pending_deltas_flush_on_the_timer_and_at_shutdown() -> None:
    clock = Clock()
    bridge, sink, _ = make(coalesce_interval=0.5, clock=clock)
    await bridge.handle(created())
    await bridge.handle(ev("message.part.delta", messageID="m", partID="p", field="text", delta="a"))
    await bridge.flush_due()
    assert "message.part.delta" not in sink.types()
    clock.now += 0.6
    await bridge.flush_due()
    assert sink.types()[-1] == "message.part.delta"
    await bridge.handle(ev("message.part.delta", messageID="m", partID="p", field="text", delta="b"))
    await bridge.flush_all()
    assert [e["data"]["delta"] for e in sink.events if e["type"] == "message.part.delta"] == ["a", "b"]


async def test_deleted_session_is_reported_once_then_forgotten() -> None:
    bridge, sink, tracker = make()
    await bridge.handle(created())
    await bridge.handle(ev("session.status", status={"type": "busy"}))
    await bridge.handle(ev("session.deleted", info={"id": "ses_1", "directory": PROJ}))
    assert sink.states()[-1]["status"] == "killed"  # deleted while running
    assert tracker.get("ses_1") is None and bridge.is_gone("ses_1")
    n = len(sink.events)
    await bridge.handle(ev("session.status", status={"type": "idle"}))  # opencode does this after a delete
    await bridge.handle(ev("session.updated", info={"id": "ses_1", "directory": PROJ}))
    assert len(sink.events) == n and bridge.counters["after_end"] == 2
    assert bridge.snapshot() == [] and bridge.last_reported("ses_1")["status"] == "killed"


async def test_idle_session_deleted_is_completed_unless_the_agent_kills_it() -> None:
    bridge, sink, _ = make()
    for sid in ("ses_a", "ses_b"):
        await bridge.handle(created(sid))
        await bridge.handle(ev("session.status", sid, status={"type": "busy"}))
        await bridge.handle(ev("session.status", sid, status={"type": "idle"}))
    bridge.mark_killing("ses_b")
    for sid in ("ses_a", "ses_b"):
        await bridge.handle(ev("session.deleted", sid, info={"id": sid, "directory": PROJ}))
    assert sink.states("ses_a")[-1]["status"] == "completed"
    assert sink.states("ses_b")[-1]["status"] == "killed"


async def test_seed_sets_missing_statuses_to_idle_and_vanished_sessions_end() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created("ses_run"))
    await bridge.handle(ev("session.status", "ses_run", status={"type": "busy"}))
    # opencode restarted: its session list and status map, where idle sessions are absent.
    infos = [{"id": "ses_run", "directory": PROJ, "title": "t"},
             {"id": "ses_busy", "directory": PROJ, "title": "b"},
             {"id": "ses_foreign", "directory": "/elsewhere", "title": "f"}]
    await bridge.seed(infos, {"ses_busy": {"type": "busy"}})
    assert bridge.get("ses_run")["status"] == "idle"
    assert bridge.get("ses_busy")["status"] == "running"
    assert {s["id"] for s in bridge.snapshot()} == {"ses_run", "ses_busy"}
    await bridge.vanished("ses_busy")
    assert sink.states("ses_busy")[-1]["status"] == "killed"
    assert {s["id"] for s in bridge.snapshot()} == {"ses_run"}
    await bridge.seed([{"id": "ses_busy", "directory": PROJ}], {})  # a gone id is never resurrected
    assert bridge.get("ses_busy") is None


async def test_seed_with_unknown_status_keeps_the_status() -> None:
    bridge, _, _ = make()
    await bridge.handle(created())
    await bridge.handle(ev("session.status", status={"type": "busy"}))
    await bridge.seed([{"id": "ses_1", "directory": PROJ, "title": "t"}], None)
    assert bridge.get("ses_1")["status"] == "running"


async def test_current_task_is_read_when_a_turn_ends_and_on_refresh(tmp_path: Path) -> None:
    proj = str(tmp_path)
    tracker = SessionReducer({"alpha": proj}, task_reader=lambda d: _read_task(d))
    sink = Sink()
    bridge = EventBridge(tracker, sink)
    await bridge.handle(created(directory=proj))
    assert sink.states()[-1]["current_task"] is None
    (tmp_path / ".context").mkdir()
    (tmp_path / ".context" / "CURRENT_TASK.md").write_text("# Fix the build\nmore\n")
    await bridge.handle(ev("session.idle", directory=proj))
    assert sink.states()[-1]["current_task"] == "Fix the build"
    (tmp_path / ".context" / "CURRENT_TASK.md").write_text("Ship it\n")
    await bridge.refresh_tasks()
    assert sink.states()[-1]["current_task"] == "Ship it"


def _read_task(directory: str) -> str | None:
    from halswarm.agent.session_state import read_current_task

    return read_current_task(directory)


async def test_reassert_resends_when_a_command_returned_an_older_state() -> None:
    bridge, sink, _ = make()
    await bridge.handle(created())
    returned = {**bridge.get("ses_1"), "status": "running"}  # what a command answered
    bridge.reassert_later(returned, delay=0.01)
    await asyncio.sleep(0.05)
    assert sink.types()[-1] == STATE_EVENT and sink.states()[-1]["status"] == "idle"
    n = len(sink.events)
    bridge.reassert_later(bridge.get("ses_1"), delay=0.01)  # same state: nothing to repeat
    await asyncio.sleep(0.05)
    assert len(sink.events) == n
    await bridge.close()


async def test_refused_appends_are_counted() -> None:
    bridge, sink, _ = make()
    sink.refuse = True
    await bridge.handle(created())
    assert bridge.counters["refused"] == 2 and sink.events == []


def test_session_object_model_is_provider_slash_model() -> None:
    base = {"id": "s", "tokens": {"input": 1, "output": 2, "total": 3}}
    assert session_object({**base, "model": "m", "provider": "p"})["model"] == "p/m"
    assert session_object({**base, "model": "p/m", "provider": "p"})["model"] == "p/m"
    assert session_object({**base, "model": "m", "provider": None})["model"] == "m"
    assert session_object({**base, "model": None, "provider": "p"})["model"] is None


async def test_real_capture_prompt_abort_and_401() -> None:
    """sse2: a prompt, a SLOW prompt aborted, then an upstream 401 (opencode 1.18.33)."""
    events = list(parse_global_stream((SAMPLES / "sse2_global.raw").read_bytes()))
    directory = next(e.directory for e in events if e.type == "session.created")
    bridge, sink, _ = make({"proj": directory})
    for e in events:
        await bridge.handle(e)
    await bridge.flush_all()
    types = sink.types()
    assert "plugin.added" not in types and "sync" not in types and "server.heartbeat" not in types
    assert all(e["project"] == "proj" for e in sink.events)
    assert len({e["event_id"] for e in sink.events if e["event_id"]}) == len([e for e in sink.events if e["event_id"]])
    statuses = [s["status"] for s in sink.states()]
    assert statuses[0] == "idle" and "running" in statuses and statuses[-1] == "error"
    assert "Incorrect API key" in sink.states()[-1]["error"]
    deltas = [e for e in sink.events if e["type"] == "message.part.delta"]
    raw_deltas = [e for e in events if e.type == "message.part.delta"]
    assert 0 < len(deltas) < len(raw_deltas)
    assert "".join(d["data"]["delta"] for d in deltas) == "".join(e.properties["delta"] for e in raw_deltas)
