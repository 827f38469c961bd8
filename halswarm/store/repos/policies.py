"""SQL of `policy_state`: each policy's retry bookkeeping per session (survives restarts)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

# (retry_count, last_attempt, last_success, last_result, last_error, capped_at)
StateRow = tuple[int, float | None, float | None, str | None, str | None, float | None]


def load_policy_states(conn: sqlite3.Connection) -> dict[tuple[str, str], StateRow]:
    """(session_id, policy) -> its state row."""
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5], r[6], r[7]) for r in conn.execute(
        "SELECT session_id, policy, retry_count, last_attempt, last_success, last_result, last_error, capped_at"
        " FROM policy_state")}


def save_policy_state(conn: sqlite3.Connection, session_id: str, policy: str, state: Sequence[Any]) -> None:
    """Insert or replace one (session, policy) state; `state` is a StateRow."""
    conn.execute(
        "INSERT INTO policy_state(session_id, policy, retry_count, last_attempt, last_success, last_result,"
        " last_error, capped_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(session_id, policy) DO UPDATE"
        " SET retry_count=excluded.retry_count, last_attempt=excluded.last_attempt,"
        " last_success=excluded.last_success, last_result=excluded.last_result, last_error=excluded.last_error,"
        " capped_at=excluded.capped_at, updated_at=excluded.updated_at",
        (session_id, policy, *state, time.time()))
