"""The pending-approvals reducer (core/approvals) and its SQL twin (store/repos/approvals) agree."""

from __future__ import annotations

import sqlite3
from typing import Any

from halswarm.core import approvals as core
from halswarm.core.paging import page_request
from halswarm.core.secret_values import SECRETS
from halswarm.store.migrations import migrate
from halswarm.store.repos.approvals import apply_changes, get_approval, page_pending, record_reply
from halswarm.store.repos.retention import delete_step
from halswarm.supervisor.features.approvals.service import approvals_stage

ASK = {"id": "per_1", "sessionID": "ses_a", "permission": "bash", "patterns": ["echo hi"], "always": ["echo *"],
       "metadata": {"command": "echo hi"}, "tool": {"messageID": "msg_1", "callID": "call_1", "other": 1}}


def ev(ev_type: str, data: Any, *, node: str | None = "n1", sid: str | None = "ses_a",
       ts: float = 10.0) -> tuple[str | None, str, str | None, str | None, Any, float]:
    return (node, ev_type, sid, "alpha", data, ts)


def test_asked_becomes_a_pending_request_with_what_it_asks_for() -> None:
    ch = core.change_of(*ev("permission.asked", ASK))
    assert ch == core.Asked("per_1", "n1", "ses_a", "alpha", "bash", ("echo hi",), ("echo *",), "echo hi",
                            {"messageID": "msg_1", "callID": "call_1"}, 10.0)


def test_events_that_are_not_approvals_or_are_malformed_change_nothing() -> None:
    for e in (ev("session.idle", {}), ev("permission.asked", {"id": "bad id"}), ev("permission.asked", "x"),
              ev("permission.asked", ASK, node=None), ev("permission.replied", {"requestID": 5}),
              ev("session.state", {"id": "ses_a", "status": "running"}), ev("approval.replied", {"id": "per_1"})):
        assert core.change_of(*e) is None, e


def test_first_answer_wins_and_replays_change_nothing() -> None:
    state: dict[str, core.Approval] = {}
    core.reduce(state, core.changes_of([ev("permission.asked", ASK), ev("permission.asked", ASK | {"permission": "x"}),
                                        ev("permission.replied", {"requestID": "per_1", "reply": "once"}, ts=11),
                                        ev("permission.replied", {"requestID": "per_1", "reply": "reject"}, ts=12)]))
    a = state["per_1"]
    assert (a.status, a.reply, a.replied_at, a.asked.permission) == ("answered", "once", 11, "bash")


def test_a_session_that_ends_closes_only_its_own_requests_on_its_own_node() -> None:
    other_node = ev("permission.asked", ASK | {"id": "per_2"}, node="n2")
    other_session = ev("permission.asked", ASK | {"id": "per_3", "sessionID": "ses_b"}, sid="ses_b")
    state = core.reduce({}, core.changes_of([ev("permission.asked", ASK), other_node, other_session,
                                             ev("session.state", {"id": "ses_a", "status": "killed"}, ts=20)]))
    assert {k: a.status for k, a in state.items()} == {"per_1": "gone", "per_2": "pending", "per_3": "pending"}


def test_a_session_report_closes_what_it_no_longer_lists() -> None:
    state = core.reduce({}, core.changes_of([ev("permission.asked", ASK), ev("permission.asked", ASK | {"id": "per_2"}),
                                             ev("session.state", {"id": "ses_a", "status": "waiting_input",
                                                                  "pending_permissions": ["per_2"]}, ts=20)]))
    assert {k: a.status for k, a in state.items()} == {"per_1": "gone", "per_2": "pending"}


def test_overdue_picks_requests_at_least_the_timeout_old() -> None:
    assert core.overdue([("per_1", 100.0), ("per_2", 150.0), ("per_3", 160.0)], 200.0, 50.0) == ["per_1", "per_2"]


def test_long_patterns_are_bounded() -> None:
    ch = core.change_of(*ev("permission.asked", ASK | {"patterns": ["x" * 5000] * 50}))
    assert isinstance(ch, core.Asked) and len(ch.patterns) == core.MAX_PATTERNS
    assert all(len(p) == core.MAX_TEXT for p in ch.patterns)


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    migrate(conn)
    return conn


def test_the_table_follows_the_reducer() -> None:
    events = [ev("permission.asked", ASK), ev("permission.asked", ASK | {"id": "per_2"}, ts=11),
              ev("permission.asked", ASK | {"id": "per_3", "sessionID": "ses_b"}, sid="ses_b", ts=12),
              ev("permission.replied", {"requestID": "per_1", "reply": "once"}, ts=13),
              ev("permission.asked", ASK, ts=14),  # a replay after the answer
              ev("session.state", {"id": "ses_b", "status": "completed"}, sid="ses_b", ts=15)]
    conn = _db()
    changes = core.changes_of(events)
    apply_changes(conn, changes)
    apply_changes(conn, changes)  # applying a batch twice (a retried commit) is harmless
    model = core.reduce({}, changes)
    for rid, a in model.items():
        row = get_approval(conn, rid)
        assert row is not None and (row["status"], row["reply"]) == (a.status, a.reply), rid
    rows, total = page_pending(conn, page_request(10, 0, None, None, "fs"))
    assert total == 1 and [r["id"] for r in rows] == ["per_2"]
    assert rows[0]["patterns"] == ["echo hi"] and rows[0]["tool"] == {"messageID": "msg_1", "callID": "call_1"}


def test_an_operators_answer_is_kept_whatever_order_opencodes_reply_arrives_in() -> None:
    conn = _db()
    apply_changes(conn, core.changes_of([ev("permission.asked", ASK), ev("permission.asked", ASK | {"id": "per_2"})]))
    record_reply(conn, "per_1", "reject", "no", "alice", 20.0)
    apply_changes(conn, core.changes_of([ev("permission.replied", {"requestID": "per_1", "reply": "reject"}, ts=21),
                                         ev("permission.replied", {"requestID": "per_2", "reply": "once"}, ts=22)]))
    record_reply(conn, "per_2", "once", None, "bob", 23.0)
    one, two = get_approval(conn, "per_1"), get_approval(conn, "per_2")
    assert one is not None and two is not None
    assert (one["status"], one["reply"], one["replied_by"], one["message"], one["replied_at"]) == (
        "answered", "reject", "alice", "no", 20.0)
    assert (two["status"], two["replied_by"], two["replied_at"]) == ("answered", "bob", 22.0)


def test_secret_values_never_reach_the_table() -> None:
    secret = "s3cr3t-token-value-0123456789"
    SECRETS.add(secret)
    try:
        job = approvals_stage([ev("permission.asked", ASK | {"patterns": [f"curl -H 'X: {secret}'"],
                                                            "metadata": {"command": f"echo {secret}"}})])
        assert job is not None
        conn = _db()
        job(conn)
        row = get_approval(conn, "per_1")
        assert row is not None and secret not in str(row)
    finally:
        SECRETS.clear()
    assert approvals_stage([ev("session.idle", {})]) is None  # batches without approvals write nothing


def test_retention_deletes_old_answered_requests_never_pending_ones() -> None:
    conn = _db()
    apply_changes(conn, core.changes_of([ev("permission.asked", ASK | {"id": f"per_{i}"}, ts=10.0)
                                         for i in range(1, 4)]))
    record_reply(conn, "per_1", "once", None, "alice", 20.0)  # old answer
    record_reply(conn, "per_2", "once", None, "alice", 200.0)  # recent answer
    assert delete_step(conn, "approvals", 100.0, 1000, 5.0) == 1
    left = {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM approvals")}
    assert left == {"per_2": "answered", "per_3": "pending"}  # a pending request is never aged out
