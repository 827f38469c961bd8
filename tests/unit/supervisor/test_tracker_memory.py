"""Ended sessions leave the tracker's memory after the grace period and come back on a report; periodic
and per-node work visits only live sessions (issue 22 point 4). Time is a fake clock, never waited."""

from __future__ import annotations

import pytest

from halswarm.config.errors import ConfigError
from halswarm.core.model import Session
from halswarm.supervisor.features.policies.engine import PolicyEngine
from halswarm.supervisor.features.policies.settings import PolicyConfig
from halswarm.supervisor.features.sessions.memory import sweep_interval
from halswarm.supervisor.features.sessions.settings import SessionSettings
from halswarm.supervisor.runtime.tracker import SessionTracker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Store:
    """The session table as the tracker's loader sees it (a copy per read, like a row)."""

    def __init__(self) -> None:
        self.rows: dict[str, Session] = {}
        self.reads = 0

    def save(self, *sessions: Session | None) -> None:
        for s in sessions:
            assert s is not None
            self.rows[s.id] = Session(**vars(s))

    def load(self, sid: str) -> Session | None:
        self.reads += 1
        row = self.rows.get(sid)
        return Session(**vars(row)) if row is not None else None


def tracker() -> tuple[SessionTracker, Store, Clock]:
    store, clock = Store(), Clock()
    return SessionTracker(loader=store.load, clock=clock), store, clock


def evict(t: SessionTracker, store: Store, grace: float) -> int:
    """What one sweep of SessionMemory does (batches of 500), with the store read inline."""
    total = 0
    while ids := [s.id for s in t.eviction_candidates(grace)]:
        n = t.evict(grace, {i: store.rows[i] for i in ids if i in store.rows})
        total += n
        if n == 0:
            break
    return total


def test_an_ended_session_leaves_memory_after_the_grace_period_and_reads_the_same():
    t, store, clock = tracker()
    store.save(t.apply_state("n", {"id": "done", "project": "p", "status": "completed", "started_at": 5,
                                   "tokens": {"input": 3, "output": 4}, "model": "m"}, at=10.0))
    store.save(t.apply_state("n", {"id": "live", "project": "p", "status": "running"}, at=10.0))
    shown = t.get("done").to_api()
    clock.t += 299
    assert evict(t, store, 300) == 0 and t.in_memory() == 2
    clock.t += 2
    assert evict(t, store, 300) == 1
    assert t.in_memory() == 1 and "done" not in t.sessions and t.evicted == 1
    assert t.get("done").to_api() == shown  # from the store, unchanged
    assert t.counts() == {"completed": 1, "running": 1}


def test_a_change_the_store_does_not_have_keeps_the_session_in_memory():
    t, store, clock = tracker()
    s = t.apply_state("n", {"id": "a", "status": "completed"}, at=1.0)
    store.save(s)
    t.apply_state("n", {"id": "a", "title": "renamed"}, at=2.0)  # not stored yet
    clock.t += 10
    assert evict(t, store, 0) == 0 and "a" in t.sessions
    store.save(t.sessions["a"])
    assert evict(t, store, 0) == 1


def test_a_late_event_for_an_evicted_session_brings_it_back_as_stored():
    t, store, clock = tracker()
    store.save(t.apply_state("n", {"id": "a", "project": "p", "status": "completed", "cost_usd": 1.5,
                                   "tokens": {"input": 10, "output": 5}}, at=1.0))
    clock.t += 10
    assert evict(t, store, 5) == 1
    s = t.apply_event("n", "message.updated", "a", "p", {}, 50.0)
    assert s is not None and s.last_activity == 50.0 and s.status == "completed"
    assert (s.cost_usd, s.tokens_total, s.project) == (1.5, 15, "p") and t.reloaded == 1
    assert "a" in t.sessions
    resumed = t.apply_state("n", {"id": "a", "status": "running"}, at=60.0)
    assert resumed is not None and [x.id for x in t.live()] == ["a"]
    assert t.counts() == {"running": 1}
    clock.t += 100
    assert evict(t, store, 5) == 0  # live again: never evicted


def test_an_evicted_session_still_belongs_to_its_node():
    t, store, clock = tracker()
    store.save(t.apply_state("n", {"id": "a", "status": "killed"}, at=1.0))
    clock.t += 10
    assert evict(t, store, 1) == 1
    assert t.owner("a") == "n" and t.foreign("m", ["a"]) == ["a"]
    assert t.apply_state("m", {"id": "a", "status": "running"}) is None and t.refused == 1
    assert t.apply_event("m", "message.updated", "a", None, {}, 2.0) is None and t.refused == 2


def test_periodic_and_node_work_visit_only_live_sessions():
    t, store, clock = tracker()
    for i in range(1000):
        store.save(t.apply_state("n", {"id": f"old{i}", "status": "completed"}, at=1.0))
    for i in range(3):
        t.apply_state("n", {"id": f"live{i}", "status": "running"}, at=2.0)
    clock.t += 10
    assert evict(t, store, 1) == 1000
    t.visited = 0
    assert sorted(s.id for s in t.live()) == ["live0", "live1", "live2"]
    assert [s.id for s in t.mark_node_unreachable("n")] == ["live0", "live1", "live2"]
    assert t.visited == 6  # three live sessions, twice: none of the thousand ended ones
    assert t.counts() == {"completed": 1000, "unreachable": 3}
    reads = store.reads
    t.apply_snapshot("n", [], at=3.0)
    assert store.reads == reads  # nothing read back for a node's snapshot


def test_eviction_takes_the_oldest_first_and_a_change_restarts_the_grace_period():
    t, store, clock = tracker()
    store.save(t.apply_state("n", {"id": "a", "status": "completed"}, at=1.0))
    clock.t += 5
    store.save(t.apply_state("n", {"id": "b", "status": "completed"}, at=1.0))
    clock.t += 5
    store.save(t.apply_state("n", {"id": "a", "title": "touched"}, at=2.0))
    assert [s.id for s in t.eviction_candidates(4)] == ["b"]
    clock.t += 5
    assert [s.id for s in t.eviction_candidates(4)] == ["b", "a"]


def test_load_keeps_only_live_sessions_and_counts_all():
    t, _, _ = tracker()
    t.load([Session(id="a", node_id="n", status="completed"), Session(id="b", node_id="n", status="running"),
            Session(id="c", node_id="n", status="killed")])
    assert set(t.sessions) == {"b"} and t.sessions["b"].status == "unreachable"
    assert t.counts() == {"completed": 1, "killed": 1, "unreachable": 1}
    assert [s.id for s in t.drain_changed()] == ["b"] and t.drain_changed() == []


def test_drain_changed_hands_each_changed_session_once_even_after_eviction():
    t, store, clock = tracker()
    store.save(t.apply_state("n", {"id": "a", "status": "completed", "tokens": {"input": 1}}, at=1.0))
    clock.t += 10
    assert evict(t, store, 1) == 1
    assert [(s.id, s.tokens_input) for s in t.drain_changed()] == [("a", 1)]  # read back from the store
    assert t.drain_changed() == []
    t.mark_changed(["a"])
    assert [s.id for s in t.drain_changed()] == ["a"]


@pytest.mark.parametrize("bad", [-1, "soon", True, float("nan"), float("inf")])
def test_the_grace_setting_refuses_bad_values_in_one_line(bad: object):
    with pytest.raises(ConfigError) as err:
        SessionSettings(bad)  # type: ignore[arg-type]
    assert "sessions.memory_grace_seconds" in str(err.value) and "\n" not in str(err.value)


def test_sweep_interval_is_bounded():
    assert sweep_interval(0) == 0.2 and sweep_interval(300) == 30.0 and sweep_interval(8) == 2.0


def test_the_policy_pass_reads_only_live_sessions():
    t, store, clock = tracker()
    for i in range(1000):
        store.save(t.apply_state("n", {"id": f"old{i}", "status": "completed"}, at=1.0))
    t.apply_state("n", {"id": "busy", "status": "running"}, at=2.0)
    t.apply_state("n", {"id": "quiet", "status": "idle"}, at=2.0)
    clock.t += 10
    evict(t, store, 1)
    engine = PolicyEngine(PolicyConfig(), t, None, None, None, None)
    t.visited = 0
    assert sorted(f.id for f in engine.facts()) == ["busy", "quiet"]
    assert t.visited == 2
