"""What the leader's policies and dependency autostart read of the nodes other supervisors hold, on a real
PostgreSQL (issue 21): the sessions with an actionable status on nodes with a live lease of another owner,
per-project counts of those, and `project.status` events read by id up to the safe horizon (an insert that
commits after a later id is not skipped), acted on once, and not again by a new leader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from halswarm.core.model import Node, Session
from halswarm.store.engine import StorageTarget, open_connection, open_reader, parse_storage_url
from halswarm.store.migrations import migrate
from halswarm.store.repos.events import insert_events
from halswarm.store.repos.nodes import upsert_node
from halswarm.store.repos.sessions import project_counts_held_elsewhere, sessions_held_elsewhere, upsert_sessions
from halswarm.supervisor.features.dependencies.service import ACTIVE, DependencyManager
from halswarm.supervisor.features.dependencies.settings import DependencySettings
from halswarm.supervisor.runtime.tracker import SessionTracker
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.timeout(120)

ME, OTHER = "sup-a:8420", "sup-b:8420"


@pytest.fixture
def target(pg_cluster: PostgresCluster) -> Iterator[StorageTarget]:
    url = pg_cluster.fresh_database()
    t = parse_storage_url(url)
    conn = open_connection(t)
    try:
        migrate(conn)
        now = time.time()
        for n in ("na", "nb", "nc"):
            upsert_node(conn, Node(id=n))
        for node, owner, expires in (("na", ME, now + 90), ("nb", OTHER, now + 90), ("nc", OTHER, now - 1)):
            conn.execute("INSERT INTO node_leases (node_id, owner, expires_at, acquired_at) VALUES (?, ?, ?, ?)",
                         (node, owner, expires, now))
    finally:
        conn.close()
    yield t
    pg_cluster.drop_database(url)


def test_sessions_and_counts_held_elsewhere_need_a_live_lease_of_another_owner(target: StorageTarget) -> None:
    conn = open_connection(target)
    try:
        upsert_sessions(conn, [Session("s1", "nb", "p", "idle"), Session("s2", "nb", "p", "running"),
                               Session("s3", "nb", "p", "completed"), Session("s4", "nc", "p", "idle"),
                               Session("s5", "na", "p", "idle"), Session("s6", "nb", "down", "idle")])
        now = time.time()
        assert sorted(s.id for s in sessions_held_elsewhere(conn, {"idle"}, ME, now)) == ["s1", "s6"]
        assert sorted(s.id for s in sessions_held_elsewhere(conn, {"idle", "running"}, ME, now)) == ["s1", "s2", "s6"]
        assert sessions_held_elsewhere(conn, set(), ME, now) == []
        assert sorted(s.id for s in sessions_held_elsewhere(conn, {"idle"}, OTHER, now)) == ["s5"]
        assert project_counts_held_elsewhere(conn, ["p", "down", "q"], {"idle", "running"}, ME, now) == {
            "p": 2, "down": 1}
        assert project_counts_held_elsewhere(conn, [], {"idle"}, ME, now) == {}
    finally:
        conn.close()


class Recorder:
    """The dispatcher, writer and ingestor of the manager: commands recorded, writes run on a connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.started: list[str] = []

    async def dispatch(self, ctype: str, target: Any, args: dict[str, Any], *, actor: str) -> Any:
        self.started.append(target.project)
        return SimpleNamespace(command_id=f"c{len(self.started)}", status="success", error=None,
                               output={"id": f"ses_{target.project}{len(self.started)}"}, node_id="nb")

    async def run(self, fn: Any) -> Any:
        return fn(self.conn)

    def emit(self, *a: Any, **kw: Any) -> None:
        return None


def status_event(node: str, seq: int, project: str, status: str) -> tuple[Any, ...]:
    return (node, seq, f"{node}-{seq}", None, project, "project.status", f'{{"status": "{status}"}}', time.time(),
            time.time())


async def test_autostart_reads_other_supervisors_status_events_up_to_the_horizon_and_starts_once(
        target: StorageTarget) -> None:
    one, other, writes = open_connection(target), open_connection(target), open_connection(target)
    reader = open_reader(target)
    rec = Recorder(writes)
    counts: list[dict[str, int]] = []

    async def active_elsewhere(projects: list[str], statuses: frozenset[str]) -> dict[str, int]:
        found: dict[str, int] = await reader.run(
            lambda c: project_counts_held_elsewhere(c, projects, statuses, ME, time.time()))
        counts.append(found)
        return found

    def manager() -> DependencyManager:
        m = DependencyManager(DependencySettings.parse({"down": ["up"]}, True), SessionTracker(), rec, rec, rec,
                              reader, here=lambda node: node == "na", active_elsewhere=active_elsewhere)
        m._start_loop = lambda *a: None  # type: ignore[method-assign]  # the test calls check() itself
        return m

    try:
        m = manager()
        await m.start()
        assert m.cursor == 0 and m.handled == {"down": "", "up": ""}
        # B's batch with the completion draws id 1 and has not committed; C's later event (id 2) has.
        one.execute("BEGIN")
        insert_events(one, [status_event("nb", 1, "up", "completed")])
        insert_events(other, [status_event("nc", 1, "elsewhere", "completed")])
        assert await m.check() == [] and m.cursor == 0  # id 2 is visible, id 1 may still commit: not read yet
        one.execute("COMMIT")
        starts = await m.check()
        assert [s[0] for s in starts] == ["down"] and rec.started == ["down"] and m.cursor == 2
        assert await m.check() == [] and rec.started == ["down"]  # the same completion: nothing again

        # A leader move: the new leader loads the marks and every stored status; nothing starts again.
        moved = manager()
        await moved.start()
        assert await moved.check() == [] and rec.started == ["down"]
        # A new completion of `up` while `down` runs on a node held elsewhere: not started twice.
        upsert_sessions(writes, [Session("ses_down", "nb", "down", "running")])
        insert_events(other, [status_event("nb", 2, "up", "completed")])
        assert await moved.check() == [] and rec.started == ["down"]
        assert counts[-1] == {"down": 1} and set(ACTIVE) >= {"running"}
        # ... and once it ended, the next new completion starts it.
        upsert_sessions(writes, [Session("ses_down", "nb", "down", "completed")])
        insert_events(other, [status_event("nb", 3, "up", "completed")])
        assert [s[0] for s in await moved.check()] == ["down"] and rec.started == ["down", "down"]
    finally:
        await asyncio.to_thread(reader.close)
        for c in (one, other, writes):
            c.close()
