"""Session ownership in the tracker: first reporter owns, others are refused, handover moves it."""

from __future__ import annotations

from halswarm.supervisor.runtime.tracker import SessionTracker, claimed_session_ids, snapshot_session_id


def _tracker_with(sid: str = "ses_1", node: str = "node-b") -> SessionTracker:
    t = SessionTracker()
    assert t.apply_state(node, {"id": sid, "project": "p", "status": "idle", "model": "m"}, at=1.0) is not None
    return t


def test_first_reporter_owns_and_others_are_refused() -> None:
    t = _tracker_with()
    assert t.owner("ses_1") == "node-b" and t.may_claim("node-b", "ses_1") and t.may_claim("node-a", "ses_new")
    assert t.foreign("node-a", ["ses_1", "ses_new"]) == ["ses_1"]
    assert t.apply_state("node-a", {"id": "ses_1", "status": "error", "model": "evil"}, at=2.0) is None
    assert t.apply_event("node-a", "session.state", "ses_1", "p", {"status": "killed"}, 3.0) is None
    assert t.apply_event("node-a", "message.updated", "ses_1", "p", {}, 4.0) is None
    s = t.get("ses_1")
    assert s is not None and (s.node_id, s.status, s.model, s.last_activity) == ("node-b", "idle", "m", 1.0)
    assert t.refused == 3


def test_snapshot_with_a_foreign_id_leaves_it_alone() -> None:
    t = _tracker_with()
    changed = t.apply_snapshot("node-a", [{"id": "ses_1", "status": "running"}, {"id": "ses_a", "status": "idle"}],
                               at=5.0)
    assert [s.id for s in changed] == ["ses_a"]
    assert t.owner("ses_1") == "node-b" and t.owner("ses_a") == "node-a"


def test_handover_moves_ownership_to_the_expected_node_only() -> None:
    t = _tracker_with()
    t.expect_handover("ses_1", "node-c")
    assert t.apply_state("node-a", {"id": "ses_1", "status": "running"}, at=2.0) is None
    assert t.apply_state("node-c", {"id": "ses_1", "status": "running"}, at=3.0) is not None
    assert t.owner("ses_1") == "node-c"
    assert not t.may_claim("node-b", "ses_1")  # the expectation is used up; the old owner is foreign now


def test_claimed_ids_include_the_state_events_inner_id() -> None:
    assert claimed_session_ids("session.state", None, {"id": "ses_x"}) == ["ses_x"]
    assert claimed_session_ids("session.state", "ses_a", {"session_id": "ses_b"}) == ["ses_a", "ses_b"]
    assert claimed_session_ids("message.updated", "ses_a", {"id": "ses_b"}) == ["ses_a"]
    assert claimed_session_ids("x", None, None) == []
    assert snapshot_session_id({"session_id": "s"}) == "s" and snapshot_session_id({"id": 3}) is None


def test_an_accepted_but_unapplied_event_already_claims_its_session() -> None:
    t = SessionTracker()
    t.claim("node-a", ["ses_new"])  # the hub accepted A's event; the commit has not applied it yet
    assert t.owner("ses_new") == "node-a" and t.foreign("node-b", ["ses_new"]) == ["ses_new"]
    assert t.apply_event("node-b", "message.updated", "ses_new", "p", {}, 1.0) is None
    assert t.apply_event("node-a", "message.updated", "ses_new", "p", {}, 2.0) is not None
    assert t.owner("ses_new") == "node-a" and t._claimed == {}


def test_event_claims_agree_with_the_full_rule() -> None:
    """The hub's per-event check: its fast path (own known session) answers what `foreign` answers."""
    t = _tracker_with()
    t.claim("node-c", ["ses_pending"])  # accepted, not yet applied: owned from the moment it was accepted
    cases = [
        ("node-b", "message.part.delta", "ses_1", None),  # own, known: the fast path
        ("node-a", "message.part.delta", "ses_1", None),  # another node's
        ("node-a", "message.part.delta", "ses_pending", None),
        ("node-c", "message.part.delta", "ses_pending", None),
        ("node-a", "message.part.delta", "ses_new", None),
        ("node-a", "message.part.delta", None, None),
        ("node-b", "session.state", "ses_1", {"id": "ses_pending"}),  # own envelope, foreign inner id
        ("node-b", "session.state", None, {"session_id": "ses_1"}),
    ]
    for node, ev_type, sid, data in cases:
        claimed, foreign = t.event_claims(node, ev_type, sid, data)
        assert foreign == t.foreign(node, claimed_session_ids(ev_type, sid, data)), (node, ev_type, sid, data)
        assert set(claimed) <= set(claimed_session_ids(ev_type, sid, data))
    assert t.event_claims("node-b", "message.part.delta", "ses_1", None) == ([], [])
    assert t.event_claims("node-a", "message.part.delta", "ses_1", None) == (["ses_1"], ["ses_1"])
    assert t.event_claims("node-b", "session.state", "ses_1", {"id": "ses_pending"}) == (
        ["ses_1", "ses_pending"], ["ses_pending"])


def test_handover_target_is_not_refused_by_the_fast_path() -> None:
    t = _tracker_with()
    t.expect_handover("ses_1", "node-c")
    assert t.event_claims("node-c", "message.part.delta", "ses_1", None) == (["ses_1"], [])
    assert t.event_claims("node-a", "message.part.delta", "ses_1", None) == (["ses_1"], ["ses_1"])
