"""Sessions memory does not hold are read off the event loop, in one batch, before the synchronous
ownership rule looks them up (`SessionTracker.resolve`): a node that names fresh session ids costs the
loop no synchronous read. Time is a fake clock, never waited."""

from __future__ import annotations

import asyncio

from halswarm.core.model import Session
from halswarm.supervisor.runtime.tracker import PEEK_MAX, PEEK_TTL, SessionTracker
from tests.unit.supervisor.test_tracker_memory import Clock


class Store:
    """The session table: `load` is the synchronous loader (counted: it must not be needed), `batch`
    the one `resolve` awaits (counted per call and per id)."""

    def __init__(self) -> None:
        self.rows: dict[str, Session] = {}
        self.sync_reads: list[str] = []
        self.batches: list[list[str]] = []

    def load(self, sid: str) -> Session | None:
        self.sync_reads.append(sid)
        row = self.rows.get(sid)
        return Session(**vars(row)) if row is not None else None

    async def batch(self, ids: list[str]) -> dict[str, Session]:
        self.batches.append(list(ids))
        return {i: Session(**vars(self.rows[i])) for i in ids if i in self.rows}


def tracker() -> tuple[SessionTracker, Store, Clock]:
    store, clock = Store(), Clock()
    return SessionTracker(loader=store.load, batch_loader=store.batch, clock=clock), store, clock


def event(t: SessionTracker, node: str, sid: str) -> Session | None:
    """What the hub does for one agent event of `sid`: resolve, check, claim; then apply after commit."""
    asyncio.run(t.resolve([sid]))
    claimed, foreign = t.event_claims(node, "message.part.delta", sid, {})
    if foreign:
        return None
    t.claim(node, claimed)
    return t.apply_event(node, "message.part.delta", sid, "p", {}, 1.0)


def test_events_naming_fresh_session_ids_never_read_synchronously():
    t, store, _ = tracker()
    for i in range(300):
        assert event(t, "n1", f"ses_{i}") is not None
    assert store.sync_reads == []
    assert len(store.batches) == 300 and all(len(b) == 1 for b in store.batches)
    assert t.owner("ses_7") == "n1"


def test_a_stored_session_of_another_node_is_refused_from_the_batch_read():
    t, store, _ = tracker()
    store.rows["ses_x"] = Session(id="ses_x", node_id="n2", status="completed")
    assert event(t, "n1", "ses_x") is None
    assert store.sync_reads == []
    assert store.batches == [["ses_x"]]
    assert "ses_x" not in t.sessions  # a refused report brings nothing into memory


def test_a_stored_session_of_the_same_node_comes_back_into_memory_without_a_synchronous_read():
    t, store, _ = tracker()
    store.rows["ses_a"] = Session(id="ses_a", node_id="n1", status="completed", project="p")
    s = event(t, "n1", "ses_a")
    assert s is not None and s.last_activity == 1.0 and s.status == "completed"
    assert t.sessions["ses_a"] is s and t.reloaded == 1
    assert store.sync_reads == []
    asyncio.run(t.resolve(["ses_a"]))  # in memory now: nothing to read
    assert len(store.batches) == 1


def test_one_batch_for_many_ids_and_none_for_ids_already_known():
    t, store, _ = tracker()
    t.add(Session(id="ses_mem", node_id="n1"))
    t.claim("n1", ["ses_claimed"])
    asyncio.run(t.resolve(["ses_mem", "ses_claimed", "ses_a", "ses_b"]))
    assert store.batches == [["ses_a", "ses_b"]]
    asyncio.run(t.resolve(["ses_a", "ses_b"]))  # read a moment ago: still answers
    assert len(store.batches) == 1


def test_a_read_answers_only_for_its_ttl_then_the_fallback_reads_again():
    t, store, clock = tracker()
    asyncio.run(t.resolve(["ses_a"]))
    assert t.get("ses_a") is None and store.sync_reads == []
    store.rows["ses_a"] = Session(id="ses_a", node_id="n2")  # stored meanwhile (another supervisor)
    clock.t += PEEK_TTL + 0.1
    got = t.get("ses_a")
    assert got is not None and got.node_id == "n2"
    assert store.sync_reads == ["ses_a"]  # the stale answer was not used
    asyncio.run(t.resolve(["ses_a"]))  # expired: read again
    assert store.batches[-1] == ["ses_a"]


def test_the_rows_kept_are_bounded_and_expire_oldest_first():
    t, _, clock = tracker()
    asyncio.run(t.resolve([f"ses_{i}" for i in range(PEEK_MAX + 50)]))
    assert len(t._peek) == PEEK_MAX and "ses_0" not in t._peek and f"ses_{PEEK_MAX + 49}" in t._peek
    clock.t += PEEK_TTL + 1
    asyncio.run(t.resolve(["ses_new"]))
    assert list(t._peek) == ["ses_new"]


def test_without_a_batch_loader_the_synchronous_loader_still_answers():
    store = Store()
    t = SessionTracker(loader=store.load)
    store.rows["ses_a"] = Session(id="ses_a", node_id="n2")
    asyncio.run(t.resolve(["ses_a"]))
    assert t.owner("ses_a") == "n2" and store.sync_reads == ["ses_a"]
