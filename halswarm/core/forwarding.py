"""Command forwarding between supervisors sharing one PostgreSQL (issue 21): the pure decisions.

A command goes to its node through the supervisor that holds the node's agent connection (and lease).
`route` says, for the supervisor that was asked, whether it sends the command itself, forwards it
through the `command_forwards` table to the holder, or answers that the node is offline.
`asker_outcome` says what the asking supervisor makes of its forwarded row at each wake-up (NOTIFY or
poll): a result to answer with, the node gone (answered as a local command whose node went offline),
or keep waiting until the command's deadline (then the same timeout as a local command).
"""

from __future__ import annotations

from typing import Literal

LOCAL: Literal["local"] = "local"
FORWARD: Literal["forward"] = "forward"
OFFLINE: Literal["offline"] = "offline"
Route = Literal["local", "forward", "offline"]

WAIT: Literal["wait"] = "wait"
DONE: Literal["done"] = "done"
GONE: Literal["gone"] = "gone"
LOST: Literal["lost"] = "lost"
Outcome = Literal["wait", "done", "gone", "lost"]

RESULT_STATUSES = frozenset({"success", "failure", "timeout"})


def route(*, linked_here: bool, lease_owner: str | None, me: str | None) -> Route:
    """Where a command for a node goes from this supervisor (`me`; None without shared storage).

    `linked_here`: the node's agent is connected to this supervisor. `lease_owner`: the supervisor
    holding the node's live lease (None when no live lease exists)."""
    if linked_here:
        return LOCAL
    if me is not None and lease_owner is not None and lease_owner != me:
        return FORWARD
    return OFFLINE


def asker_outcome(status: str | None, claimed_by: str | None, live_owner: str | None) -> Outcome:
    """What the asking supervisor makes of its forwarded row.

    `status`: the row's status (None: the row is gone, which only the clean-up of rows long past their
    deadline does). `claimed_by`: the supervisor that took it to its agent. `live_owner`: who holds the
    node's live lease now (None: nobody)."""
    if status == "done":
        return DONE
    if status is None:
        return LOST
    if live_owner is None:
        return GONE  # no supervisor holds the node: as a local command whose node went offline
    if status == "running" and claimed_by != live_owner:
        return GONE  # the holder that sent it lost the node: its result cannot come back
    return WAIT  # queued: whoever holds the node (the lease may move) claims it; running: its holder answers


def result_status(value: object) -> str | None:
    """A stored result's status, if it is one a command can end with."""
    return value if isinstance(value, str) and value in RESULT_STATUSES else None
