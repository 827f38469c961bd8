"""store/repos/env.py on a real migrated database of each engine (SQLite, PostgreSQL): manifest versions,
the latest check per node and project (and forgetting projects a node no longer has), and the approval
queue (items in flight kept, items no longer offered resolved)."""

from __future__ import annotations

import sqlite3

import pytest

from halswarm.store.repos import env as repo


@pytest.fixture
def conn(store_conn: sqlite3.Connection) -> sqlite3.Connection:
    return store_conn


def test_manifest_versions(conn: sqlite3.Connection) -> None:
    assert repo.latest_manifest(conn) is None
    first = repo.add_manifest(conn, {"version": "1.0"}, "spec", "d1", "alice")
    second = repo.add_manifest(conn, {"version": "1.0", "projects": {}}, "spec", "d2", "bob")
    assert first is not None and second is not None
    assert (first["version"], second["version"]) == (1, 2)
    assert repo.latest_manifest(conn) == second and second["document"] == {"version": "1.0", "projects": {}}


def test_checks_latest_per_project_and_forget(conn: sqlite3.Connection) -> None:
    checks = [{"project": "a", "status": "ready", "manifest_version": 1}, {"project": "b", "status": "missing"}]
    repo.store_checks(conn, "n1", checks, "api", "c1", 100.0)
    repo.store_checks(conn, "n1", [{"project": "a", "status": "degraded", "manifest_version": 2}], "api", "c2", 101.0)
    rows = repo.status_rows(conn, "n1")
    assert [(r["project"], r["status"], r["manifest_version"]) for r in rows] == [("a", "degraded", 2),
                                                                                 ("b", "missing", None)]
    assert [r["kind"] for r in repo.runs(conn, "n1")] == ["check"] * 3
    repo.forget_status(conn, "n1", {"a"})
    assert [r["project"] for r in repo.status_rows(conn)] == ["a"]
    repo.forget_status(conn, "n1", set())
    assert repo.status_rows(conn) == []


def _item(item_id: str, command: str = "apt-get install -y x") -> dict[str, object]:
    return {"id": item_id, "token": f"t-{item_id}", "category": "tools", "item": item_id, "command": command,
            "reason": "risky", "become": True, "check": ["x", "--version"]}


def test_pending_kept_in_flight_and_resolved_when_gone(conn: sqlite3.Connection) -> None:
    new = repo.offer_pending(conn, "n1", "p", [_item("a"), _item("b")], 10.0)
    assert [p["id"] for p in new] == ["a", "b"]
    assert [(r["id"], r["status"], r["become"], r["approvable"]) for r in repo.pending_rows(conn, "n1")] == [
        ("a", "pending", True, True), ("b", "pending", True, True)]
    repo.set_pending(conn, "n1", "a", "running", None)
    # offered again: the running one stays as it is, the pending one is not new; "b" gone: resolved
    assert repo.offer_pending(conn, "n1", "p", [_item("a", "other")], 11.0) == []
    rows = {r["id"]: r for r in repo.pending_rows(conn, "n1")}
    assert (rows["a"]["status"], rows["a"]["command"]) == ("running", "apt-get install -y x")
    assert rows["b"]["status"] == "resolved"
    repo.set_pending(conn, "n1", "a", "failed", {"ok": False})
    assert [p["id"] for p in repo.offer_pending(conn, "n1", "p", [_item("a", "other")], 12.0)] == ["a"]
    again = repo.pending_rows(conn, "n1", ("pending",))
    assert [(r["id"], r["command"], r["result"]) for r in again] == [("a", "other", None)]
