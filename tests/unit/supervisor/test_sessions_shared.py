"""A session on a shared PostgreSQL (issue 21): memory is the newest word only about sessions of nodes
connected here; another supervisor's session is answered as its holder stored it."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from halswarm.core.model import Session
from halswarm.store.repos.sessions import upsert_sessions
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.sessions.service import SessionsService
from halswarm.supervisor.runtime.tracker import SessionTracker

pytestmark = pytest.mark.timeout(30)


class MemStore:
    """A reader over an in-memory SQLite `sessions` table (the columns the repo reads and writes)."""

    def __init__(self, rows: list[Session]) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, node_id, project, status, model, tokens_input,"
                          " tokens_output, tokens_total, compaction_count, current_task, cost_usd, error, title,"
                          " started_at, last_activity)")
        upsert_sessions(self.conn, rows)
        self.reads = 0

    async def run(self, fn: Any) -> Any:
        self.reads += 1
        return fn(self.conn)


async def test_memory_answers_for_nodes_held_here_and_the_store_for_the_others() -> None:
    tracker = SessionTracker()
    tracker.add(Session(id="mine", node_id="n-here", status="running"))
    tracker.add(Session(id="theirs", node_id="n-there", status="unreachable"))  # stale copy from the start
    stored = [Session(id="mine", node_id="n-here", status="idle"),
              Session(id="theirs", node_id="n-there", status="running", title="as A stored it"),
              Session(id="only-stored", node_id="n-there", status="completed")]
    reader = MemStore(stored)
    shared = SessionsService(tracker, None, reader, held_here=lambda n: n == "n-here")  # type: ignore[arg-type]
    assert (await shared.get("mine")).status == "running" and reader.reads == 0
    got = await shared.get("theirs")
    assert got.status == "running" and got.title == "as A stored it"
    assert (await shared.get("only-stored")).status == "completed"
    with pytest.raises(ApiError):
        await shared.get("nowhere")
    # SQLite (one supervisor): memory, as before.
    single = SessionsService(tracker, None, MemStore(stored))  # type: ignore[arg-type]
    assert (await single.get("theirs")).status == "unreachable"
