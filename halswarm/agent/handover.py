"""Session handover (SPEC 7.2) and restart.

handover:
  1. prompt the session to write its state to ``.context/PROGRESS.md`` and ``.context/CURRENT_TASK.md``;
  2. wait until that turn ends (the session goes idle), at most ``idle_timeout`` seconds (60 by
     default); a session that does not finish in time is handed over anyway (``idle_wait:
     "timeout"`` in the output): a stuck session is the usual reason for a handover;
  3. kill it (abort + delete);
  4. create a new session in the same directory, with the same model, whose first prompt tells it
     to read both files and continue.

restart_session is the same without steps 1-2: nothing is written, the session is replaced at once
and the new one picks up whatever ``.context/`` already holds.

The steps use a small :class:`SessionOps` interface (implemented by the command handlers) so the
order of calls and the timeout path can be unit-tested without opencode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, Protocol

HANDOVER_PROMPT = (
    "HANDOVER: this session is about to be replaced by a fresh one that starts with no memory of this "
    "conversation. Stop the current work at a safe point and write the hand-over notes now, in the project "
    "directory (create the .context directory if it does not exist):\n"
    "1. .context/PROGRESS.md: what has been done so far, what was decided and why, what is left to do, and "
    "anything the next session must know (commands, pitfalls, open questions).\n"
    "2. .context/CURRENT_TASK.md: the task in progress; the first line is a one-line summary of it, then the "
    "next concrete steps.\n"
    "Do not start new work after writing the two files."
)

INIT_PROMPT = (
    "You are taking over this project from a previous session (handover). Before doing anything else, read "
    ".context/PROGRESS.md and .context/CURRENT_TASK.md in the project directory: they describe what was done "
    "and the task in progress. Then continue that task from where it was left. Keep both files up to date as "
    "you work."
)

IDLE = "idle"
TIMEOUT = "timeout"
GONE = "gone"
SKIPPED = "skipped"
RUNNING = "running"  # a session object's status while a turn runs (agent/session_state.py)


class TurnSource(Protocol):
    def turn_ends(self, session_id: str) -> int: ...
    def get(self, session_id: str) -> dict[str, Any] | None: ...


class SessionOps(Protocol):
    """What a handover needs from the agent."""

    @property
    def bridge(self) -> TurnSource: ...  # read-only, so the agent's EventBridge satisfies it

    async def send_prompt(self, session: dict[str, Any], text: str) -> None: ...
    async def kill(self, session: dict[str, Any]) -> dict[str, Any]: ...
    async def create(
        self, project: str, directory: str, *, model: str | None, prompt: str | None
    ) -> dict[str, Any]: ...


async def wait_turn_end(
    turns: TurnSource, session_id: str, turns_before: int, timeout: float, poll: float = 0.1
) -> str:
    """Wait for the turn started after ``turns_before`` ended turns to end: ``idle``, ``gone`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if turns.turn_ends(session_id) > turns_before:
            return IDLE
        if turns.get(session_id) is None:
            return GONE
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return TIMEOUT
        await asyncio.sleep(min(poll, remaining))


def ensure_context_dir(directory: str | None) -> None:
    """Best effort: the model is asked to write there; make sure it can."""
    if directory:
        with contextlib.suppress(OSError):
            os.makedirs(os.path.join(directory, ".context"), exist_ok=True)


def model_of(session: dict[str, Any]) -> str | None:
    """The session's model when it can be reused (``provider/model``), else None (opencode's default)."""
    model = session.get("model")
    return model if isinstance(model, str) and "/" in model.strip("/") else None


async def replace_session(
    ops: SessionOps,
    session: dict[str, Any],
    *,
    handover: bool,
    idle_timeout: float = 60.0,
    poll: float = 0.1,
) -> dict[str, Any]:
    """Handover (``handover=True``) or restart one session; returns the command output
    ``{"old_session": {...killed...}, "session": {...new...}, "idle_wait": ...}``."""
    sid = session["id"]
    project = session.get("project") or ""
    directory = session.get("directory") or ""
    if not directory:
        raise ValueError(f"session {sid} has no known directory")
    idle_wait = SKIPPED
    if handover:
        ensure_context_dir(directory)
        before = ops.bridge.turn_ends(sid)
        # A turn running now (the usual case: a long or stuck turn is why a handover comes) ends before the
        # one that answers the prompt, which opencode queues behind it: wait for both, or the session is
        # killed before it wrote its notes. Read after the count: a turn that ends in between only makes
        # this wait for one end, as before.
        live = ops.bridge.get(sid) or {}
        if live.get("status") == RUNNING:
            before += 1
        await ops.send_prompt(session, HANDOVER_PROMPT)
        idle_wait = await wait_turn_end(ops.bridge, sid, before, idle_timeout, poll)
    old = await ops.kill(session)
    new = await ops.create(project, directory, model=model_of(session), prompt=INIT_PROMPT)
    return {"old_session": old, "session": new, "idle_wait": idle_wait}
