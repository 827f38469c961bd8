"""SessionReducer (reducer) and DeltaCoalescer, fed with real opencode 1.18.33 captures: facts in, state out."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from halswarm.agent.opencode_events import OpencodeEvent, parse_global_stream
from halswarm.agent.session_state import (
    COMPLETED,
    ERROR,
    IDLE,
    KILLED,
    RUNNING,
    WAITING_INPUT,
    DeltaCoalescer,
    SessionReducer,
    read_current_task,
    tokens_from,
)

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "opencode"  # captured opencode 1.x streams

SES2 = "ses_de3e2b453ffe5noCMIaThNyXxn"  # sse2: ok prompt, SLOW + abort, upstream 401
SES4 = "ses_de3dd9883ffegxaIJEKrxCGqWQ"  # sse4: tool call with permission ask
SES1 = "ses_de3e46759ffe5Apq37ymiRnBe1"  # sse_global: retry loop, bad models, deleted


def events(name: str) -> list[OpencodeEvent]:
    return list(parse_global_stream((SAMPLES / name).read_bytes()))


def fake_clock() -> itertools.count:
    return itertools.count(1000)


def tracker(**kw) -> SessionReducer:
    clock = fake_clock()
    return SessionReducer(kw.pop("projects", {"proj": "/srv/work/home.Y6EL/proj"}), clock=lambda: next(clock), **kw)


def replay_until(t: SessionReducer, evs: list[OpencodeEvent], stop: int) -> None:
    for ev in evs[:stop]:
        t.apply(ev)


def status_trail(t: SessionReducer, evs: list[OpencodeEvent], sid: str) -> list[str]:
    trail: list[str] = []
    for ev in evs:
        for ch in t.apply(ev):
            if ch.session_id == sid and ch.status_changed:
                trail.append(ch.fields["status"][1])
    return trail


# -- sse2: normal turn, abort, upstream 401 ----------------------------------------------------------
def test_successful_turn_then_abort_then_auth_error() -> None:
    t = tracker()
    evs = events("sse2_global.raw")
    trail = status_trail(t, evs, SES2)
    # ok turn: running -> idle; SLOW + abort: running -> idle (aborted, not an error);
    # 401 turn: running -> error, and the idle events after session.error do not hide it.
    assert trail == [RUNNING, IDLE, RUNNING, IDLE, RUNNING, ERROR]
    s = t.get(SES2)
    assert s is not None
    assert s.status == ERROR
    assert s.error == "Incorrect API key provided"
    assert s.error_name == "APIError"
    assert s.model == "fake-model" and s.provider == "fake"
    assert s.tokens == {"input": 5, "output": 3, "total": 8}
    assert s.cost_usd == 0.0
    assert s.project == "proj"
    assert s.directory == "/srv/work/home.Y6EL/proj"
    assert s.title == "fake"
    assert s.started_at == pytest.approx(1795768011.692)


def test_abort_is_idle_with_aborted_flag() -> None:
    t = tracker()
    evs = events("sse2_global.raw")
    abort_at = next(i for i, e in enumerate(evs) if e.type == "session.error")
    replay_until(t, evs, abort_at)
    assert t.get(SES2).status == RUNNING
    changes = t.apply(evs[abort_at])
    assert changes[0].fields["status"] == (RUNNING, IDLE)
    assert changes[0].fields["aborted"] == (False, True)
    s = t.get(SES2)
    assert s.error is None and s.aborted
    # The next turn clears the flag.
    nxt = next(
        i
        for i, e in enumerate(evs)
        if i > abort_at and e.type == "session.status" and e.properties["status"]["type"] == "busy"
    )
    replay_until(t, evs[abort_at + 1 :], nxt - abort_at)
    assert t.get(SES2).status == RUNNING and not t.get(SES2).aborted


def test_tokens_come_from_assistant_message() -> None:
    t = tracker()
    evs = events("sse2_global.raw")
    first_idle = next(i for i, e in enumerate(evs) if e.type == "session.idle")
    changes = []
    for ev in evs[:first_idle]:
        changes += [c for c in t.apply(ev) if "tokens" in c.fields]
    assert len(changes) == 1
    assert changes[0].event_type == "message.updated"
    assert changes[0].fields["tokens"] == ({"input": 0, "output": 0, "total": 0}, {"input": 5, "output": 3, "total": 8})
    assert changes[0].snapshot["tokens"] == {"input": 5, "output": 3, "total": 8}


# -- sse4: permission ask ------------------------------------------------------------------------------
def test_permission_ask_and_reply() -> None:
    t = tracker(projects={"tooling": "/srv/work/home.sIPD"})
    evs = events("sse4_global.raw")
    assert status_trail(t, evs, SES4) == [RUNNING, WAITING_INPUT, RUNNING, IDLE]
    s = t.get(SES4)
    assert s.pending_permissions == ()
    assert s.project == "tooling"  # the session dir is below the project dir
    assert s.tokens == {"input": 5, "output": 3, "total": 8}


def test_waiting_input_snapshot_lists_pending_request() -> None:
    t = tracker()
    evs = events("sse4_global.raw")
    i = next(i for i, e in enumerate(evs) if e.type == "permission.asked")
    replay_until(t, evs, i + 1)
    snap = t.get(SES4).to_dict()
    assert snap["status"] == WAITING_INPUT
    assert snap["pending_permissions"] == [evs[i].properties["id"]]


# -- sse_global: retry loop, unknown models, delete ----------------------------------------------------
def test_retry_loop_bad_models_and_delete() -> None:
    t = tracker(projects={"proj": "/srv/work/home.rn0I/proj", "projA": "/srv/work/home.rn0I/projA"})
    evs = events("sse_global.raw")
    retries: list[dict] = []
    errors: list[str] = []
    deleted = None
    for ev in evs:
        for ch in t.apply(ev):
            if ch.session_id != SES1:
                continue
            if ch.fields.get("retry", (None, None))[1]:
                retries.append(ch.fields["retry"][1])
            if ch.fields.get("error", (None, None))[1]:
                errors.append(ch.fields["error"][1])
            if ch.event_type == "session.deleted":
                deleted = ch
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4, 5]
    assert retries[0]["message"].startswith("Cannot connect to API")
    assert errors[0].startswith("Model not found: anthropic/claude-sonnet-4-5")
    # prompt_async with a bad model emits session.error twice (2nd with a stack): the first is kept.
    assert errors[1].startswith("Model not found: nope/x")
    assert len(errors) == 3  # one per turn: sync anthropic model, sync nope/x, async nope/x
    assert deleted is not None and deleted.fields["status"] == (ERROR, KILLED)
    # Sessions created in other directories map to their projects (or None when unknown).
    projects = {s.title: s.project for s in t.sessions.values()}
    assert projects["A"] == "projA" and projects["C"] == "proj"
    assert projects["B"] is None and projects["D"] is None


def test_deleting_an_idle_session_completes_it() -> None:
    t = tracker()
    evs = events("sse_global.raw")
    t.apply_all(evs)
    completed = [s for s in t.sessions.values() if s.status == COMPLETED]
    assert len(completed) == 1


def test_terminal_sessions_ignore_late_events() -> None:
    t = tracker()
    evs = events("sse2_global.raw")
    t.apply_all(evs)
    t.apply(OpencodeEvent("session.deleted", {"sessionID": SES2, "info": {"id": SES2}}))
    assert t.get(SES2).status == KILLED  # it was in error
    assert t.apply(OpencodeEvent("session.status", {"sessionID": SES2, "status": {"type": "busy"}})) == []
    assert t.get(SES2).status == KILLED
    t.forget(SES2)
    assert t.get(SES2) is None


# -- synthetic facts -------------------------------------------------------------------------------------
def ev(etype: str, sid: str = "ses_1", directory: str | None = "/p", **props) -> OpencodeEvent:
    return OpencodeEvent(etype, {"sessionID": sid, **props}, directory, "global", "evt_x")


def created(sid: str = "ses_1", directory: str = "/p") -> OpencodeEvent:
    info = {"id": sid, "directory": directory, "title": "t", "time": {"created": 5000, "updated": 5000}}
    return OpencodeEvent("session.created", {"sessionID": sid, "info": info}, directory, "global")


def test_delete_after_abort_is_killed() -> None:
    """kill_session = abort, then delete: the abort leaves it idle, yet it was killed, not completed."""
    t = tracker()
    t.apply(created())
    t.apply(ev("session.status", status={"type": "busy"}))
    t.apply(ev("session.error", error={"name": "MessageAbortedError", "data": {"message": "Aborted"}}))
    t.apply(ev("session.idle"))
    changes = t.apply(ev("session.deleted", info={"id": "ses_1"}))
    assert changes[0].fields["status"] == (IDLE, KILLED)


def test_compaction_counts() -> None:
    t = tracker()
    t.apply(created())
    t.apply(ev("session.compacted"))
    changes = t.apply(ev("session.compacted"))
    assert changes[0].fields == {"compaction_count": (1, 2)}
    assert t.get("ses_1").compaction_count == 2


def test_events_for_unknown_sessions_make_no_phantoms() -> None:
    """opencode answers abort for any id with session.status idle + session.idle."""
    t = tracker()
    assert t.apply(ev("session.status", sid="ses_ghost", status={"type": "idle"})) == []
    assert t.apply(ev("session.idle", sid="ses_ghost")) == []
    assert t.apply(ev("session.error", sid="ses_ghost", error={"name": "UnknownError"})) == []
    assert t.sessions == {}


def test_message_updated_creates_session_and_sums_messages() -> None:
    t = tracker()

    def msg(mid: str, inp: int, out: int, cost: float) -> OpencodeEvent:
        info = {
            "id": mid,
            "role": "assistant",
            "modelID": "m1",
            "providerID": "p1",
            "cost": cost,
            "tokens": {
                "total": inp + out,
                "input": inp,
                "output": out,
                "reasoning": 0,
                "cache": {"read": 0, "write": 0},
            },
        }
        return ev("message.updated", info=info)

    changes = t.apply(msg("msg_a", 10, 2, 0.01))
    assert changes[0].created
    t.apply(msg("msg_a", 10, 2, 0.01))  # repeated update of the same message is not double counted
    t.apply(msg("msg_b", 20, 4, 0.02))
    s = t.get("ses_1")
    assert s.tokens == {"input": 30, "output": 6, "total": 36}
    assert s.cost_usd == pytest.approx(0.03)
    assert (s.model, s.provider) == ("m1", "p1")
    # Session totals from before we attached win when they are larger.
    info = {
        "id": "ses_1",
        "tokens": {"input": 100, "output": 50, "reasoning": 0, "cache": {"read": 7, "write": 3}},
        "cost": 1.5,
    }
    t.apply(ev("session.updated", info=info))
    assert s.tokens == {"input": 100, "output": 50, "total": 160}
    assert s.cost_usd == 1.5


def test_retry_keeps_reason_until_idle() -> None:
    t = tracker()
    t.apply(created())
    t.apply(ev("session.status", status={"type": "retry", "attempt": 1, "message": "Cannot connect", "next": 1}))
    t.apply(ev("session.status", status={"type": "busy"}))
    s = t.get("ses_1")
    assert s.status == RUNNING and s.retry == {"attempt": 1, "message": "Cannot connect"}
    t.apply(ev("session.status", status={"type": "idle"}))
    assert s.status == IDLE and s.retry is None


def test_error_is_sticky_until_next_turn() -> None:
    t = tracker()
    t.apply(created())
    t.apply(ev("session.status", status={"type": "busy"}))
    t.apply(ev("session.error", error={"name": "ProviderAuthError", "data": {"message": "bad key"}}))
    t.apply(ev("session.idle"))
    s = t.get("ses_1")
    assert (s.status, s.error) == (ERROR, "bad key")
    t.apply(ev("session.status", status={"type": "busy"}))
    assert (s.status, s.error, s.error_name) == (RUNNING, None, None)


def test_error_without_message_uses_name() -> None:
    t = tracker()
    t.apply(created())
    t.apply(ev("session.error", error={"name": "ContextOverflowError"}))
    assert t.get("ses_1").error == "ContextOverflowError"


def test_reject_or_abort_while_waiting() -> None:
    t = tracker()
    t.apply(created())
    t.apply(ev("session.status", status={"type": "busy"}))
    t.apply(ev("permission.asked", id="per_1"))
    t.apply(ev("permission.asked", id="per_2"))
    t.apply(ev("permission.replied", requestID="per_1", reply="once"))
    assert t.get("ses_1").status == WAITING_INPUT  # one still pending
    t.apply(ev("session.status", status={"type": "busy"}))
    assert t.get("ses_1").status == WAITING_INPUT
    t.apply(ev("session.error", error={"name": "MessageAbortedError", "data": {"message": "Aborted"}}))
    s = t.get("ses_1")
    assert s.status == IDLE and s.pending_permissions == ()


def test_current_task_reader_and_timestamps(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / ".context").mkdir(parents=True)
    (proj / ".context" / "CURRENT_TASK.md").write_text("\n\n# Fix the flaky test  \nmore\n")
    reads: list[str] = []

    def reader(directory: str) -> str | None:
        reads.append(directory)
        return read_current_task(directory)

    t = tracker(projects={"proj": str(proj)}, task_reader=reader)
    changes = t.apply(created(directory=str(proj)))
    s = t.get("ses_1")
    assert s.current_task == "Fix the flaky test"
    assert changes[0].created and changes[0].snapshot["current_task"] == "Fix the flaky test"
    assert s.started_at == 5.0  # info.time.created (ms)
    assert s.last_activity == 1001  # injected clock
    t.apply(ev("session.status", directory=str(proj), status={"type": "busy"}))
    assert reads == [str(proj)]  # read once at creation, not per event
    (proj / ".context" / "CURRENT_TASK.md").write_text("Next task\n")
    assert t.refresh_current_task("ses_1")[0].fields == {"current_task": ("Fix the flaky test", "Next task")}
    assert read_current_task(str(tmp_path / "missing")) is None


def test_last_activity_alone_is_not_a_change() -> None:
    t = tracker()
    t.apply(created())
    assert t.apply(ev("session.diff", diff=[])) == []  # unknown types are ignored
    assert t.apply(ev("session.idle")) == []  # already idle


def test_seed_from_api() -> None:
    t = tracker()
    info = {
        "id": "ses_9",
        "directory": "/srv/work/home.Y6EL/proj",
        "title": "old",
        "model": {"id": "x", "providerID": "y"},
    }
    changes = t.seed(info, {"type": "busy"})
    s = t.get("ses_9")
    assert (s.status, s.project, s.model) == (RUNNING, "proj", "x")
    assert changes[0].created


def test_tokens_from() -> None:
    assert tokens_from(None) == {"input": 0, "output": 0, "total": 0}
    assert tokens_from({"input": 1, "output": 2, "reasoning": 3, "cache": {"read": 4, "write": 5}}) == {
        "input": 1,
        "output": 2,
        "total": 15,
    }
    assert tokens_from({"input": 1, "output": 2, "total": 9}) == {"input": 1, "output": 2, "total": 9}


# -- coalescer -------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def delta(text: str, part: str = "prt_1", sid: str = "ses_1") -> OpencodeEvent:
    return OpencodeEvent(
        "message.part.delta",
        {"sessionID": sid, "messageID": "msg_1", "partID": part, "field": "text", "delta": text},
        "/p",
        "global",
    )


def test_coalescer_on_capture_keeps_order_and_text() -> None:
    evs = events("sse2_global.raw")
    c = DeltaCoalescer(interval=10, clock=Clock())
    out = [o for e in evs for o in c.push(e)] + c.flush_all()
    deltas_in = [e for e in evs if e.type == "message.part.delta"]
    deltas_out = [e for e in out if e.type == "message.part.delta"]
    assert len(deltas_in) == 3 and len(deltas_out) == 1
    assert deltas_out[0].properties["delta"] == "FAKE-REPLY: hello opencode "
    assert deltas_out[0].properties["count"] == 3
    # Everything else passes through untouched and in order; the merged delta sits where the run ended.
    assert [e for e in out if e.type != "message.part.delta"] == [e for e in evs if e.type != "message.part.delta"]
    i = out.index(deltas_out[0])
    assert out[i + 1].type == "message.part.updated"
    assert out[i + 1].properties["part"]["text"] == "FAKE-REPLY: hello opencode "


def test_coalescer_flushes_per_interval() -> None:
    clock = Clock()
    c = DeltaCoalescer(interval=0.5, clock=clock)
    assert c.push(delta("a")) == []
    clock.now = 0.2
    assert c.push(delta("b")) == []
    assert c.flush_due() == []
    clock.now = 0.6
    assert [e.properties["delta"] for e in c.flush_due()] == ["ab"]
    assert c.push(delta("c")) == []
    clock.now = 1.2
    out = c.push(delta("d"))  # run is older than the interval: forwarded, new run starts
    assert [(e.properties["delta"], e.properties["count"]) for e in out] == [("c", 1)]
    assert [e.properties["delta"] for e in c.flush_all()] == ["d"]
    assert c.pending_count == 0


def test_coalescer_part_switch_and_sessions() -> None:
    c = DeltaCoalescer(interval=10, clock=Clock())
    assert c.push(delta("a1", sid="ses_a")) == []
    assert c.push(delta("b1", sid="ses_b")) == []
    assert c.push(delta("a2", sid="ses_a")) == []
    out = c.push(delta("x", part="prt_2", sid="ses_a"))  # other part of ses_a: flush a's run only
    assert [(e.session_id, e.properties["delta"]) for e in out] == [("ses_a", "a1a2")]
    idle = OpencodeEvent("session.idle", {"sessionID": "ses_b"})
    out = c.push(idle)  # any other event of ses_b flushes ses_b first
    assert [(e.type, e.properties.get("delta")) for e in out] == [("message.part.delta", "b1"), ("session.idle", None)]
    assert c.pending_count == 1
    assert c.received == 5
