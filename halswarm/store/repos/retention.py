"""Retention: deleting old events, audit rows, commands and expired idempotency entries."""

from __future__ import annotations

import sqlite3


def purge_older_than(conn: sqlite3.Connection, events_before: float, audit_before: float, now: float
                     ) -> dict[str, int]:
    """Retention: drop old events and audit rows, and expired idempotency entries.

    nodes.last_seq keeps the per-node high-water mark, so deleting events never lowers the
    `resume_from_seq` an agent is told.
    """
    out = {}
    out["events"] = conn.execute("DELETE FROM events WHERE ts < ?", (events_before,)).rowcount
    out["audit"] = conn.execute("DELETE FROM audit_log WHERE timestamp < ?", (audit_before,)).rowcount
    out["idempotency"] = conn.execute("DELETE FROM command_idempotency WHERE expires_at <= ?", (now,)).rowcount
    out["commands"] = conn.execute("DELETE FROM commands WHERE created_at < ?", (audit_before,)).rowcount
    return out
