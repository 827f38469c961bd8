"""SQL for the ``events`` table: batched inserts, seq bookkeeping, filtered pages and API shapes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from halswarm.core.paging import Page, PageRequest, window
from halswarm.core.timestamps import sql_datetimes
from halswarm.store.dialect import epoch_to_text, greatest, is_pg
from halswarm.store.repos.jsonfields import _load_json
from halswarm.store.repos.keyset import count_capped, keyset_select

EventRow = tuple[str | None, int | None, str, str | None, str | None, str, str, float, float]


_EVENT_INSERT = ("INSERT OR IGNORE INTO events(node_id, seq, event_id, session_id, project, type, data, ts,"
                 " received_at, timestamp) VALUES ")


_EVENT_VALUES = "(?,?,?,?,?,?,?,?,?,?)"


_ROWS_PER_STATEMENT = 400  # 10 variables a row: 4,000, far below SQLite's 32,766 limit


def insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> int:
    """Insert (node_id, seq, event_id, session_id, project, type, data_json, timestamp, received_at).

    Multi-row INSERTs rather than executemany: one sqlite3_step per 400 rows instead of one per
    row. Each step releases and re-takes the GIL, and with the event loop busy in the other
    thread every re-take can wait a whole switch interval, so per-row steps made batch commits
    (and therefore acks) slow exactly when the hub was busiest.
    (node_id, seq) is unique: a resent event is ignored here as a last line of defence.
    The runbook's `timestamp` text (schema 013) is computed here, not by SQLite in the INSERT.
    """
    if is_pg(conn):
        return _insert_events_pg(conn, rows)
    before = conn.total_changes
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start:start + _ROWS_PER_STATEMENT]
        sql = _EVENT_INSERT + ",".join([_EVENT_VALUES] * len(chunk))
        stamps = sql_datetimes([row[7] for row in chunk])
        conn.execute(sql, [value for row, stamp in zip(chunk, stamps, strict=True) for value in (*row, stamp)])
    return conn.total_changes - before


# PostgreSQL, first try: a binary COPY, the server's bulk path (measured: ~15% less server CPU than the
# INSERT ... ON CONFLICT below, which probes the unique index before each row, and a third less client
# CPU). COPY skips nothing, so a resent event fails it with a unique violation: then the rows go again,
# after a rollback to the savepoint taken before the COPY, through the INSERT below, which ignores what is
# stored already. COPY inserts in the rows' order, so their ids follow it. The savepoint and its release
# cost no round trip of their own (the connection sends them with the next statement).
_PG_EVENT_COLUMNS = ("node_id", "seq", "event_id", "session_id", "project", "type", "data", "ts", "received_at",
                     "timestamp")
_PG_EVENT_TYPES = ("text", "int8", "text", "text", "text", "text", "text", "float8", "float8", "text")
_PG_UNIQUE_VIOLATION = "23505"

# The fallback: one statement per chunk whatever its size, the columns bound as ten arrays sent in binary
# (`%b`: the text format escapes every element through a regex, most of the client's time); a multi-row
# VALUES of 4,000 parameters costs the server more to parse and plan than to insert. WITH ORDINALITY
# keeps the rows' order, so their ids follow it as on SQLite. psycopg's own placeholders (execute_native).
_PG_EVENT_INSERT = (
    "INSERT INTO events(node_id, seq, event_id, session_id, project, type, data, ts, received_at, timestamp)"
    " SELECT node_id, seq, event_id, session_id, project, type, data, ts, received_at, stamp FROM unnest("
    "%b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[],"
    " %b::float8[], %b::text[]) WITH ORDINALITY AS u(node_id, seq, event_id, session_id, project, type, data,"
    " ts, received_at, stamp, ord) ORDER BY ord ON CONFLICT DO NOTHING")
_PG_ROWS_PER_STATEMENT = 5000


def _insert_events_pg(conn: Any, rows: Sequence[EventRow]) -> int:
    if not rows:
        return 0
    stamps = sql_datetimes([row[7] for row in rows])
    # Outside a transaction the COPY is one on its own: a failed one left nothing behind.
    in_tx = conn.in_transaction
    if in_tx:
        conn.execute("SAVEPOINT hal_events_copy")
    try:
        inserted = int(conn.copy_rows("events", _PG_EVENT_COLUMNS, _PG_EVENT_TYPES,
                                      [(*row, stamp) for row, stamp in zip(rows, stamps, strict=True)]))
    except sqlite3.IntegrityError as exc:
        if getattr(exc, "sqlstate", None) != _PG_UNIQUE_VIOLATION:
            raise
        if in_tx:
            conn.execute("ROLLBACK TO SAVEPOINT hal_events_copy")
            conn.execute("RELEASE SAVEPOINT hal_events_copy")
        return _insert_events_pg_ignoring(conn, rows, stamps)
    if in_tx:
        conn.execute("RELEASE SAVEPOINT hal_events_copy")
    return inserted


def _insert_events_pg_ignoring(conn: Any, rows: Sequence[EventRow], stamps: list[str | None]) -> int:
    """The rows not stored yet (by (node_id, seq)), in one INSERT ... ON CONFLICT DO NOTHING per chunk."""
    inserted = 0
    for start in range(0, len(rows), _PG_ROWS_PER_STATEMENT):
        chunk = rows[start:start + _PG_ROWS_PER_STATEMENT]
        columns: list[list[Any]] = [list(col) for col in zip(*chunk, strict=True)]
        for k in (7, 8):  # an array is of one Python type: 1 and 1.5 both as float8, as COPY takes them
            columns[k] = [None if v is None else float(v) for v in columns[k]]
        columns.append(stamps[start:start + _PG_ROWS_PER_STATEMENT])
        inserted += max(0, conn.execute_native(_PG_EVENT_INSERT, columns).rowcount)
    return inserted


def insert_events_stored(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> list[dict[str, Any]]:
    """PostgreSQL: `insert_events`, answering the rows it stored with their ids (those ignored as already
    stored left out), in id order, in the shape `event_to_api` reads. The sequence is shared by every
    supervisor of the store: another one's inserts may take ids between this batch's, so they cannot be
    counted from the sequence's value before the batch, nor read back as "every id above it"."""
    by_key = {(r[0], r[1]) if r[1] is not None else r[2]: r for r in rows}
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), _PG_ROWS_PER_STATEMENT):
        chunk = rows[start:start + _PG_ROWS_PER_STATEMENT]
        columns: list[list[Any]] = [list(col) for col in zip(*chunk, strict=True)]
        columns.append(sql_datetimes(columns[7]))
        cur = conn.execute_native(_PG_EVENT_INSERT + " RETURNING id, node_id, seq, event_id",  # type: ignore[attr-defined]
                                  columns)
        for event_db_id, node_id, seq, event_id in cur.fetchall():
            r = by_key[(node_id, seq) if seq is not None else event_id]
            out.append({"id": int(event_db_id), "node_id": r[0], "seq": r[1], "event_id": r[2], "session_id": r[3],
                        "project": r[4], "type": r[5], "data": r[6], "ts": r[7]})
    out.sort(key=lambda e: e["id"])
    return out


def fill_event_timestamps(conn: sqlite3.Connection) -> int:
    """Write the runbook's `timestamp` text (schema 013) of events another tool inserted without it
    (a restore, a salvage, a test fixture); its index finds them. Returns how many were filled."""
    return conn.execute(f"UPDATE events SET timestamp = {epoch_to_text(conn, 'ts')} WHERE timestamp IS NULL").rowcount


def max_seq(conn: sqlite3.Connection, node_id: str) -> int:
    row = conn.execute(
        "SELECT " + greatest(conn, "COALESCE((SELECT last_seq FROM nodes WHERE id=?),0)",
                             "COALESCE((SELECT MAX(seq) FROM events WHERE node_id=?),0)"),
        (node_id, node_id),
    ).fetchone()
    return int(row[0] or 0)


def last_event_id(conn: sqlite3.Connection) -> int:
    """The id of the last committed event: where a stream reading by id may go up to.

    SQLite: the last id AUTOINCREMENT handed out (not MAX(id): retention may have deleted the newest);
    under SQLite's one writer that is always committed. PostgreSQL: a sequence moves outside
    transactions (a reader could see an id whose row is not committed yet), so the largest committed id.
    """
    if is_pg(conn):
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
    return last_assigned_event_id(conn)


def last_assigned_event_id(conn: sqlite3.Connection) -> int:
    """Inside the writer's transaction: the last id handed out, so the next inserted rows are numbered
    from it + 1 (PostgreSQL: the sequence, which only this writer advances; a rolled-back batch leaves a
    gap in the ids but not in this count)."""
    if is_pg(conn):
        row = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq").fetchone()
        return int(row[0])
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
    return int(row[0]) if row else 0


def events_after(conn: sqlite3.Connection, last_id: int) -> list[sqlite3.Row]:
    """Stored rows with an id above `last_id`, oldest first (what a commit added, for live subscribers)."""
    return conn.execute("SELECT * FROM events WHERE id > ? ORDER BY id", (last_id,)).fetchall()


StreamRow = tuple[int, str | None, int | None, str, str | None, str | None, str, str, float]

_STREAM_COLS = "id, node_id, seq, event_id, session_id, project, type, data, ts"


def stream_rows(conn: sqlite3.Connection, filters: dict[str, Any], after_id: int, until_id: int | None,
                limit: int, scan: int) -> tuple[list[StreamRow], int]:
    """Stored events matching `filters` with `after_id` < id <= hi, by id, at most `limit` of them, and
    the id reached (the next call's `after_id`). hi is `after_id + scan`, capped at `until_id` and at the
    last committed id, so one call reads at most `scan` rows whatever the filters match.

    The id range is walked on the rowid (NOT INDEXED), so a filter matching few rows cannot make SQLite
    sort a whole index. Ids grow in commit order under the single writer: once id N is visible every
    smaller id is too, so the id reached never skips a row committed later."""
    last = last_event_id(conn)
    hi = min(after_id + scan, last if until_id is None else min(until_id, last))
    if hi <= after_id:
        return [], after_id
    where, args = _event_filters({k: filters.get(k) for k in ("session_id", "project", "node_id", "type", "since")})
    cond = (" AND " + where.removeprefix(" WHERE ")) if where else ""
    hint = "" if is_pg(conn) else " NOT INDEXED"
    rows = conn.execute(f"SELECT {_STREAM_COLS} FROM events{hint} WHERE id > ? AND id <= ?{cond}"
                        " ORDER BY id LIMIT ?", [after_id, hi, *args, limit]).fetchall()
    reached = rows[-1][0] if len(rows) == limit else hi
    return [tuple(r) for r in rows], reached


def events_between(conn: sqlite3.Connection, after_id: int, until_id: int, limit: int) -> tuple[list[StreamRow], int]:
    """Stored events with `after_id` < id <= `until_id`, by id, at most `limit`, and the id reached (the
    next call's `after_id`; `until_id` once the range is read). For a range already known to be settled
    (PostgreSQL's safe horizon, halswarm.core.event_horizon): nothing in it commits later."""
    if until_id <= after_id:
        return [], after_id
    rows = conn.execute(f"SELECT {_STREAM_COLS} FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                        (after_id, until_id, limit)).fetchall()
    reached = rows[-1][0] if len(rows) == limit else until_id
    return [tuple(r) for r in rows], reached


# PostgreSQL, several supervisors: the two reads of a horizon probe, in this order (see core/event_horizon).
_PG_ASSIGNED = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_id_seq"
_PG_WRITERS = ("SELECT virtualtransaction FROM pg_locks WHERE locktype = 'relation'"
               " AND relation = 'events'::regclass AND mode = 'RowExclusiveLock'")
EVENTS_CHANNEL = "hal_events"


def probe_horizon(conn: sqlite3.Connection) -> tuple[int, list[str]]:
    """PostgreSQL: (the last id the sequence handed out, the transactions holding a write lock on events
    now), read in that order; halswarm.core.event_horizon.Horizon turns probes into a safe horizon."""
    assigned = int(conn.execute(_PG_ASSIGNED).fetchone()[0])
    return assigned, [str(r[0]) for r in conn.execute(_PG_WRITERS).fetchall()]


def notify_events(conn: sqlite3.Connection) -> None:
    """PostgreSQL: wake the other supervisors' streams (one NOTIFY, payload the sequence's last value).
    Sent after the batch committed, in a transaction of its own that does not wait for its WAL flush: a
    NOTIFY inside the batch would take PostgreSQL's global notify lock through the batch's commit and
    serialise every supervisor's commits; a lost one is covered by the listeners' polling."""
    conn.execute(f"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{EVENTS_CHANNEL}',"
                 f" ({_PG_ASSIGNED})::text)").fetchone()


def first_id_since(conn: sqlite3.Connection, since: float) -> int | None:
    """The smallest id of an event stamped at or after `since` (None if none): where a stream that
    replays from `since` starts walking by id."""
    row = conn.execute("SELECT MIN(id) FROM events WHERE ts >= ?", (since,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def row_to_api(event_db_id: int, r: EventRow) -> dict[str, Any]:
    """API shape of an event row still in memory (same fields as event_to_api)."""
    from halswarm.core.timeutil import iso

    return {"id": event_db_id, "node_id": r[0], "seq": r[1], "event_id": r[2], "session_id": r[3],
            "project": r[4], "type": r[5], "data": _load_json(r[6], None), "timestamp": iso(r[7])}


def event_to_api(row: sqlite3.Row) -> dict[str, Any]:
    from halswarm.core.timeutil import iso

    return {
        "id": row["id"],
        "node_id": row["node_id"],
        "seq": row["seq"],
        "event_id": row["event_id"],
        "session_id": row["session_id"],
        "project": row["project"],
        "type": row["type"],
        "data": _load_json(row["data"], None),
        "timestamp": iso(row["ts"]),
    }


def _event_filters(f: dict[str, Any]) -> tuple[str, list[Any]]:
    where, args = [], []
    for col in ("session_id", "project", "node_id"):
        if f.get(col):
            where.append(f"{col}=?")
            args.append(f[col])
    if f.get("type"):
        t = str(f["type"])
        if t.endswith("*"):
            where.append("type LIKE ? ESCAPE '\\'")
            args.append(t[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        else:
            where.append("type=?")
            args.append(t)
    if f.get("since") is not None:
        where.append("ts>=?")
        args.append(f["since"])
    if f.get("after_id") is not None:
        where.append("id>?")
        args.append(f["after_id"])
    if f.get("until_id") is not None:
        where.append("id<=?")
        args.append(f["until_id"])
    return (" WHERE " + " AND ".join(where)) if where else "", args


def event_key(ev: dict[str, Any]) -> tuple[float, int]:
    return ev["_ts"], ev["id"]


def page_events(conn: sqlite3.Connection, filters: dict[str, Any], req: PageRequest, order: str = "asc",
                *, count: bool = True) -> tuple[Page[dict[str, Any]], int, bool]:
    """One page of events in (timestamp, id) order, with (total, total_is_estimate) of the filter
    (0, False without ``count``)."""
    where, args = _event_filters(filters)
    total, estimate = count_capped(conn, "events", where, args) if count else (0, False)
    sql, params = keyset_select("events", ("ts", "id"), where, args, req, order == "desc")
    rows = [event_to_api(r) | {"_ts": r["ts"]} for r in conn.execute(sql, params)]
    page = window(rows, req, event_key)
    for ev in page.items:
        del ev["_ts"]
    return page, total, estimate


def query_events(conn: sqlite3.Connection, filters: dict[str, Any], limit: int, offset: int,
                 order: str = "asc") -> tuple[list[dict[str, Any]], int]:
    """A page by offset with its (capped) total; see page_events for cursors."""
    page, total, _ = page_events(conn, filters, PageRequest(limit, offset), order)
    return page.items, total
