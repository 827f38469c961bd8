"""What the API makes of a command's outcome: a failed or timed-out command is an error answer."""

from __future__ import annotations

from typing import Protocol

from halswarm.supervisor.apikit.envelope import ApiError


class CommandOutcome(Protocol):
    status: str
    type: str
    error: str | None
    command_id: str
    node_id: str | None


def raise_for(res: CommandOutcome) -> None:
    """Map a command that did not succeed to TIMEOUT (504) or DISPATCH_ERROR (502)."""
    if res.status == "timeout":
        raise ApiError("TIMEOUT", f"{res.type}: {res.error or 'timed out'} (command {res.command_id})")
    if res.status != "success":
        raise ApiError("DISPATCH_ERROR",
                       f"{res.type} failed on {res.node_id}: {res.error or 'no detail'} (command {res.command_id})")
