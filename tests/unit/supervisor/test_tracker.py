"""Session tracker: snapshots, state events and node loss (facts in, state out)."""

from __future__ import annotations

from halswarm.core.model import Session
from halswarm.supervisor.runtime.tracker import SessionTracker


def test_state_event_creates_and_updates_session():
    t = SessionTracker()
    s = t.apply_event("n", "session.state", "ses_1", "p",
                      {"status": "running", "tokens": {"input": 3, "output": 4}, "model": "m"}, 100.0)
    assert s is not None and s.status == "running" and s.tokens_total == 7 and s.project == "p"
    assert s.last_activity == 100.0
    assert t.apply_event("n", "session.state", "ses_1", "p", {"status": "running", "tokens": {"input": 3,
                                                                                          "output": 4}}, 100.0) is None
    s = t.apply_event("n", "session.state", "ses_1", None, {"status": "waiting_input"}, 101.0)
    assert s is not None and s.status == "waiting_input" and s.model == "m"


def test_unknown_statuses_and_bad_values_are_ignored():
    t = SessionTracker()
    s = t.apply_state("n", {"id": "s", "status": "exploded", "tokens": {"input": -5, "output": "many"},
                            "cost_usd": "free", "compaction_count": True})
    assert s is not None
    assert (s.status, s.tokens_input, s.tokens_output, s.cost_usd, s.compaction_count) == ("running", 0, 0, 0.0, 0)
    assert t.apply_state("n", {"status": "idle"}) is None  # no id: nothing to track


def test_agent_cannot_claim_unreachable():
    t = SessionTracker()
    s = t.apply_state("n", {"id": "s", "status": "unreachable"})
    assert s is not None and s.status == "running"


def test_node_loss_and_return():
    t = SessionTracker()
    t.apply_state("n", {"id": "a", "status": "running"})
    t.apply_state("n", {"id": "b", "status": "killed"})
    t.apply_state("m", {"id": "c", "status": "idle"})
    changed = t.mark_node_unreachable("n")
    assert [s.id for s in changed] == ["a"]
    assert t.get("b").status == "killed" and t.get("c").status == "idle"
    t.apply_snapshot("n", [], at=5.0)
    assert t.get("a").status == "unreachable" and "not reported" in (t.get("a").error or "")
    t.apply_snapshot("n", [{"id": "a", "status": "idle"}], at=6.0)
    assert t.get("a").status == "idle"


def test_plain_events_touch_activity_and_revive_unreachable():
    t = SessionTracker()
    t.load([Session(id="s", node_id="n", status="running")])
    assert t.get("s").status == "unreachable"
    s = t.apply_event("n", "message.part.delta", "s", "p", {}, 50.0)
    assert s is not None and s.status == "running" and s.last_activity == 50.0
    new = t.apply_event("n", "message.updated", "fresh", "p", {}, 51.0)
    assert new is not None and new.project == "p" and new.status == "running"


def test_listing_filters():
    t = SessionTracker()
    t.apply_state("n", {"id": "a", "project": "p", "status": "running", "started_at": 1})
    t.apply_state("n", {"id": "b", "project": "q", "status": "idle", "started_at": 2})
    t.apply_state("m", {"id": "c", "project": "p", "status": "idle", "started_at": 3})
    assert [s.id for s in t.list(project="p")] == ["c", "a"]
    assert [s.id for s in t.list(status="idle", node_id="n")] == ["b"]
    assert t.counts() == {"running": 1, "idle": 2}


def test_claim_reads_the_store_once_per_new_session_not_once_per_event():
    """The hub claims the ids of every accepted event before its batch commits; the tracker's loader is a
    synchronous store read on the event loop (a PostgreSQL round trip). Per event, 100 agents x 200 events
    of new sessions held a supervisor's loop for 30 s and more before its first ack (bench/ha_ingest.py)."""
    loads: list[str] = []

    def loader(sid: str) -> Session | None:
        loads.append(sid)
        return None

    t = SessionTracker(loader=loader)

    def accept(node_id: str, sid: str) -> None:  # the hub's order for an accepted event
        claimed, foreign = t.event_claims(node_id, "message.part.delta", sid, {})
        assert foreign == []
        t.claim(node_id, claimed)

    accept("n1", "ses_a")
    after_first = len(loads)
    for _ in range(200):
        accept("n1", "ses_a")
    assert len(loads) == after_first
    assert t.owner("ses_a") == "n1"
    accept("n1", "ses_b")  # another new session: read once more
    assert loads.count("ses_b") >= 1 and len(loads) <= 2 * after_first
    # another node naming the claimed id is refused without a store read either
    before = len(loads)
    assert t.event_claims("n2", "message.part.delta", "ses_a", {})[1] == ["ses_a"]
    assert len(loads) == before
