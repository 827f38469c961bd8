"""One leader for the periodic engines: the pure decision (halswarm.core.leadership) and the runner's turns
(halswarm.supervisor.runtime.leadership) against a scripted lock, no database."""

from __future__ import annotations

import itertools

import pytest

from halswarm.core.leadership import Act, LeadershipError, Role, Seen, decide, probe_kind
from halswarm.supervisor.runtime.leadership import EngineSet, Leadership

pytestmark = pytest.mark.timeout(30)


def test_decide_every_transition() -> None:
    assert decide(Role.FOLLOWER, Seen.ACQUIRED) == (Role.LEADER, Act.START_ENGINES)
    assert decide(Role.FOLLOWER, Seen.BUSY) == (Role.FOLLOWER, Act.NONE)
    assert decide(Role.FOLLOWER, Seen.LOST) == (Role.FOLLOWER, Act.NONE)
    assert decide(Role.LEADER, Seen.HELD) == (Role.LEADER, Act.NONE)
    assert decide(Role.LEADER, Seen.LOST) == (Role.STEPPING_DOWN, Act.STOP_ENGINES)
    assert decide(Role.STEPPING_DOWN, Seen.STOPPED) == (Role.FOLLOWER, Act.NONE)


def test_decide_refuses_what_cannot_happen() -> None:
    allowed = {(Role.FOLLOWER, Seen.ACQUIRED), (Role.FOLLOWER, Seen.BUSY), (Role.FOLLOWER, Seen.LOST),
               (Role.LEADER, Seen.HELD), (Role.LEADER, Seen.LOST), (Role.STEPPING_DOWN, Seen.STOPPED)}
    for role, seen in itertools.product(Role, Seen):
        if (role, seen) in allowed:
            continue
        # e.g. a leader "acquiring" again, or a stepping-down supervisor taking the lock before its engines stopped
        with pytest.raises(LeadershipError):
            decide(role, seen)


def test_probe_follows_the_role() -> None:
    assert probe_kind(Role.FOLLOWER) == "acquire"
    assert probe_kind(Role.LEADER) == "check"
    with pytest.raises(LeadershipError):
        probe_kind(Role.STEPPING_DOWN)


class ScriptedLock:
    """Answers of `try_acquire`/`held` in order; an Exception instance is raised (a lost server)."""

    def __init__(self, acquire: list[bool | Exception], held: list[bool | Exception]) -> None:
        self.acquire, self.held_answers = list(acquire), list(held)
        self.closed = 0

    @staticmethod
    def _next(answers: list[bool | Exception]) -> bool:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    def try_acquire(self) -> bool:
        return self._next(self.acquire)

    def held(self) -> bool:
        return self._next(self.held_answers)

    def close(self) -> None:
        self.closed += 1


def engines(log: list[str]) -> EngineSet:
    es = EngineSet()
    for name in ("retention", "policies"):
        async def start(n: str = name) -> None:
            log.append(f"start {n}")

        def stop(n: str = name) -> None:  # a plain function works as well as a coroutine
            log.append(f"stop {n}")

        es.add(name, start, stop)
    return es


async def test_follower_becomes_leader_steps_down_and_leads_again() -> None:
    log: list[str] = []
    changes: list[bool] = []
    lock = ScriptedLock(acquire=[False, OSError("connection refused"), True, True],
                        held=[True, OSError("server closed the connection unexpectedly")])
    lead = Leadership(lock, engines(log), on_change=changes.append)
    await lead.turn()  # busy: someone else leads
    assert lead.role is Role.FOLLOWER and log == []
    await lead.turn()  # the server is unreachable: still a follower, the error kept for the status
    assert lead.role is Role.FOLLOWER and "connection refused" in lead.detail
    await lead.turn()  # free: ours
    assert lead.role is Role.LEADER and lead.is_leader and log == ["start retention", "start policies"]
    assert lead.terms == 1 and changes == [True]
    await lead.turn()  # still held: nothing more starts
    assert log == ["start retention", "start policies"]
    await lead.turn()  # the lock connection died: stop in reverse, back to follower
    assert lead.role is Role.FOLLOWER
    assert log[2:] == ["stop policies", "stop retention"] and changes == [True, False]
    await lead.turn()  # and the lock is free again
    assert lead.role is Role.LEADER and lead.terms == 2 and log[4:] == ["start retention", "start policies"]


async def test_lock_no_longer_held_without_an_error_steps_down() -> None:
    log: list[str] = []
    lead = Leadership(ScriptedLock(acquire=[True], held=[False]), engines(log))
    await lead.turn()
    await lead.turn()
    assert lead.role is Role.FOLLOWER
    assert log == ["start retention", "start policies", "stop policies", "stop retention"]


async def test_a_failing_engine_does_not_keep_the_others_from_starting_or_stopping() -> None:
    log: list[str] = []
    es = EngineSet()

    def boom() -> None:
        raise RuntimeError("no")

    es.add("bad", boom, boom)
    es.add("good", lambda: log.append("start good"), lambda: log.append("stop good"))
    lead = Leadership(ScriptedLock(acquire=[True], held=[OSError("gone")]), es)
    await lead.turn()
    await lead.turn()
    assert log == ["start good", "stop good"] and lead.role is Role.FOLLOWER


async def test_stop_stops_the_engines_and_releases_the_lock() -> None:
    log: list[str] = []
    changes: list[bool] = []
    lock = ScriptedLock(acquire=[True], held=[True] * 100)
    lead = Leadership(lock, engines(log), on_change=changes.append, retry_sec=0.01, check_sec=0.01)
    await lead.start()  # the first turn runs before start returns
    assert lead.is_leader
    await lead.stop()
    assert log == ["start retention", "start policies", "stop policies", "stop retention"]
    assert lock.closed == 1 and changes == [True, False] and not lead.is_leader


async def test_follower_stop_starts_nothing() -> None:
    log: list[str] = []
    lock = ScriptedLock(acquire=[False] * 1000, held=[])
    lead = Leadership(lock, engines(log), retry_sec=0.01)
    await lead.start()
    await lead.stop()
    assert log == [] and lock.closed == 1
