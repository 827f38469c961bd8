"""The pure decisions of command forwarding (halswarm.core.forwarding): where a command goes from the
supervisor that was asked, and what that supervisor makes of its forwarded row at each wake-up."""

from __future__ import annotations

import pytest

from halswarm.core.forwarding import (
    DONE,
    FORWARD,
    GONE,
    LOCAL,
    LOST,
    OFFLINE,
    WAIT,
    asker_outcome,
    result_status,
    route,
)

ME, OTHER, THIRD = "sup-a:8420", "sup-b:8420", "sup-c:8420"


@pytest.mark.parametrize(("linked", "owner", "me", "expected"), [
    (True, None, ME, LOCAL),  # connected here: sent here
    (True, OTHER, ME, LOCAL),  # connected here, the other's lease not yet taken over: the link decides
    (True, None, None, LOCAL),  # SQLite: as before
    (False, OTHER, ME, FORWARD),  # another supervisor holds it
    (False, None, ME, OFFLINE),  # nobody holds it
    (False, ME, ME, OFFLINE),  # our own lease but no link: the connection just ended
    (False, OTHER, None, OFFLINE),  # no shared storage: nothing to forward to
])
def test_route(linked: bool, owner: str | None, me: str | None, expected: str) -> None:
    assert route(linked_here=linked, lease_owner=owner, me=me) == expected


@pytest.mark.parametrize(("status", "claimed_by", "live_owner", "expected"), [
    ("done", OTHER, None, DONE),  # a result wins over whatever happened to the node since
    ("done", OTHER, THIRD, DONE),
    ("queued", None, OTHER, WAIT),  # its holder claims it at its next wake-up
    ("queued", None, THIRD, WAIT),  # the lease moved before the claim: the new holder claims it
    ("queued", None, ME, WAIT),  # the node moved to the asker itself: it claims its own row
    ("queued", None, None, GONE),  # nobody holds the node: offline, as a local command's node going away
    ("running", OTHER, OTHER, WAIT),  # its holder runs it
    ("running", OTHER, THIRD, GONE),  # the holder lost the node: the result cannot come back
    ("running", OTHER, None, GONE),
    (None, None, OTHER, LOST),  # the row is gone (cleaned up long past its deadline)
])
def test_asker_outcome(status: str | None, claimed_by: str | None, live_owner: str | None, expected: str) -> None:
    assert asker_outcome(status, claimed_by, live_owner) == expected


def test_result_status_accepts_only_what_a_command_ends_with() -> None:
    assert [result_status(s) for s in ("success", "failure", "timeout")] == ["success", "failure", "timeout"]
    assert result_status("pending") is None and result_status(None) is None and result_status(1) is None
