"""The cost, policy and dependency repositories on a real migrated database of each engine (SQLite and
PostgreSQL): what is written is read back as the features expect it (core types or plain rows)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from halswarm.core.cost import Bucket, SessionUsage
from halswarm.store.repos import cost, dependencies, policies
from halswarm.store.repos.events import insert_events


@pytest.fixture
def conn(store_conn: sqlite3.Connection) -> sqlite3.Connection:
    return store_conn


def test_cost_days_are_replaced_and_marked_polled(conn: sqlite3.Connection) -> None:
    old = Bucket("anthropic", "2025-08-09", "m", "p", 10, 5, 0.5)
    cost.replace_days(conn, "anthropic", ["2025-08-09"], [old], 100.0)
    new = [Bucket("anthropic", "2025-08-09", "m2", "p", 1, 2, 0.25), Bucket("anthropic", "2025-08-10", "m", "p", 3)]
    cost.replace_days(conn, "anthropic", ["2025-08-09", "2025-08-10"], new, 200.0)
    assert cost.load_buckets(conn, "2025-08-01") == new  # the day's old bucket is gone, not added to
    assert cost.polled_days(conn, "2025-08-10") == {"anthropic": {"2025-08-10": 200.0}}


def test_session_usage_adds_increments_and_moves_marks(conn: sqlite3.Connection) -> None:
    u = SessionUsage("2025-08-10", "s1", "alpha", "anthropic", "m", 100, 0.5)
    cost.add_session_usage(conn, [(u, 60, 40, False)], {"s1": (60, 40, 100, 0.5)})
    cost.add_session_usage(conn, [(u, 60, 40, True)], {"s1": (120, 80, 200, 1.0)})
    assert cost.load_session_usage(conn, "2025-08-10") == [
        SessionUsage("2025-08-10", "s1", "alpha", "anthropic", "m", 200, 1.0)]
    assert cost.load_marks(conn) == {"s1": (120, 80, 200, 1.0)}
    assert tuple(conn.execute("SELECT estimated FROM session_usage").fetchone()) == (1,)


def test_policy_state_round_trip_and_update(conn: sqlite3.Connection) -> None:
    policies.save_policy_state(conn, "s1", "resume_on_idle", (1, 10.0, None, "failure", "boom", None))
    policies.save_policy_state(conn, "s1", "resume_on_idle", (2, 20.0, 20.0, "success", None, 25.0))
    policies.save_policy_state(conn, "s2", "kill_on_cost", (0, None, None, None, None, None))
    assert policies.load_policy_states(conn) == {
        ("s1", "resume_on_idle"): (2, 20.0, 20.0, "success", None, 25.0),
        ("s2", "kill_on_cost"): (0, None, None, None, None, None)}


def test_dependency_marks_starts_and_status_events(conn: sqlite3.Connection) -> None:
    dependencies.save_marks(conn, {"a": "session:s1", "b": ""}, 1.0)
    dependencies.save_marks(conn, {"a": "event:e2"}, 2.0)
    assert dependencies.load_marks(conn) == {"a": "event:e2", "b": ""}
    for i in range(dependencies.RECENT_STARTS + 2):
        dependencies.insert_start(conn, "b", "a", f"m{i}", None, f"c{i}", "failure", "x", float(i))
    recent = dependencies.recent_starts(conn)
    assert len(recent) == dependencies.RECENT_STARTS and recent[0][2] == f"m{dependencies.RECENT_STARTS + 1}"
    events = [("n1", seq, eid, None, project, etype, json.dumps({"status": "completed"}), 1000.0 + seq, 1000.0 + seq)
              for eid, seq, etype, project in (("e1", 1, "project.status", "a"), ("e2", 2, "session.idle", "a"),
                                                ("e3", 3, "project.status", "z"), ("e4", 4, "project.status", "b"))]
    insert_events(conn, events)
    rows = dependencies.project_status_events(conn, "project.status", ["a", "b"])
    assert [(r[0], r[1]) for r in rows] == [("a", "e1"), ("b", "e4")]
    assert json.loads(rows[0][2]) == {"status": "completed"}
