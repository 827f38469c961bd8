"""`list_sessions(q=...)` (the console's search): a case-insensitive substring of id, project, title or
current task, combined with the other filters and keyset paging; LIKE wildcards in `q` match literally."""

from __future__ import annotations

from halswarm.core.model import Node, Session
from halswarm.core.paging import PageRequest
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.repos.sessions import list_sessions, upsert_sessions


def _store(tmp_path):
    conn = connect(tmp_path / "s.db")
    migrate(conn)
    for node in ("n1", "n2"):
        upsert_node(conn, Node(node))
    upsert_sessions(conn, [
        Session("ses_a", "n1", "alpha", "idle", title="Fix the Build", started_at=1.0),
        Session("ses_b", "n1", "beta", "running", current_task="100% coverage", started_at=2.0),
        Session("ses_c", "n2", "alpha", "running", title="under_score", started_at=3.0),
        Session("ses_d", "n2", "gamma", "idle", title="plain", started_at=4.0),
    ])
    conn.commit()
    return conn


def ids(conn, req=None, **kw):
    rows, total = list_sessions(conn, req or PageRequest(10), **kw)
    return [s.id for s in rows], total


def test_substring_of_each_text_column_and_case(tmp_path):
    conn = _store(tmp_path)
    assert ids(conn, q="build") == (["ses_a"], 1)
    assert ids(conn, q="BETA") == (["ses_b"], 1)
    assert ids(conn, q="ses_d") == (["ses_d"], 1)
    assert ids(conn, q="alpha", status="running") == (["ses_c"], 1)
    assert ids(conn, q="nothing-like-it") == ([], 0)


def test_wildcards_are_literal(tmp_path):
    conn = _store(tmp_path)
    assert ids(conn, q="%") == (["ses_b"], 1)  # only the task that holds a percent sign
    assert ids(conn, q="r_s") == (["ses_c"], 1)  # '_' is not "any character": "under_score" only
    assert ids(conn, q="\\") == ([], 0)


def test_paging_with_a_search(tmp_path):
    conn = _store(tmp_path)
    rows, total = list_sessions(conn, PageRequest(1), q="ses_")
    assert total == 4 and rows[0].id == "ses_d"  # newest first; the extra row says more follow
    rows, _ = list_sessions(conn, PageRequest(1, after=(4.0, "ses_d")), q="ses_")
    assert rows[0].id == "ses_c"
