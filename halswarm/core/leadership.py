"""Who runs the periodic engines when several supervisors share one database: the decision, without I/O.

A supervisor is a FOLLOWER until it takes the leader lock, a LEADER while the lock's connection lives,
and STEPPING_DOWN from the moment it sees that connection lost until its engines have stopped (only
then may it try again: a supervisor never runs two sets of engines, nor takes the lock while its old
engines still act). Each turn the runner reports one observation and does what `decide` answers.
"""

from __future__ import annotations

from enum import Enum


class Role(Enum):
    FOLLOWER = "follower"
    LEADER = "leader"
    STEPPING_DOWN = "stepping_down"


class Seen(Enum):
    ACQUIRED = "acquired"  # the lock was free and is ours now
    BUSY = "busy"  # another session holds it
    HELD = "held"  # our lock connection answered: still ours
    LOST = "lost"  # our lock connection failed or the server could not be reached
    STOPPED = "stopped"  # our engines have stopped


class Act(Enum):
    NONE = "none"
    START_ENGINES = "start_engines"
    STOP_ENGINES = "stop_engines"


# (role, observation) -> (next role, action). Anything else is a bug of the runner.
_TABLE: dict[tuple[Role, Seen], tuple[Role, Act]] = {
    (Role.FOLLOWER, Seen.ACQUIRED): (Role.LEADER, Act.START_ENGINES),
    (Role.FOLLOWER, Seen.BUSY): (Role.FOLLOWER, Act.NONE),
    (Role.FOLLOWER, Seen.LOST): (Role.FOLLOWER, Act.NONE),
    (Role.LEADER, Seen.HELD): (Role.LEADER, Act.NONE),
    (Role.LEADER, Seen.LOST): (Role.STEPPING_DOWN, Act.STOP_ENGINES),
    (Role.STEPPING_DOWN, Seen.STOPPED): (Role.FOLLOWER, Act.NONE),
}


class LeadershipError(RuntimeError):
    pass


def decide(role: Role, seen: Seen) -> tuple[Role, Act]:
    """The next role and what to do about it."""
    try:
        return _TABLE[(role, seen)]
    except KeyError:
        raise LeadershipError(f"leadership: {seen.value} while {role.value}") from None


def probe_kind(role: Role) -> str:
    """What a turn asks the lock: a follower tries to take it, a leader checks it still has it."""
    if role is Role.FOLLOWER:
        return "acquire"
    if role is Role.LEADER:
        return "check"
    raise LeadershipError(f"leadership: no probe while {role.value}")
