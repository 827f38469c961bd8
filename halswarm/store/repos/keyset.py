"""SQL of keyset paging shared by the list queries: a bounded count and a page that seeks."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from halswarm.core.paging import TOTAL_CAP, PageRequest, capped_total


def count_capped(conn: sqlite3.Connection, table: str, where: str, args: Sequence[Any],
                 cap: int | None = None) -> tuple[int, bool]:
    """(total, total_is_estimate): counts at most cap + 1 matching rows (cap: TOTAL_CAP), so the cost
    is bounded whatever the table's size."""
    cap = TOTAL_CAP if cap is None else cap
    n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table}{where} LIMIT ?) AS capped",
                     [*args, cap + 1]).fetchone()[0]
    return capped_total(int(n), cap)


def keyset_select(table: str, key: tuple[str, str], where: str, args: Sequence[Any], req: PageRequest,
                  descending: bool) -> tuple[str, list[Any]]:
    """SELECT of one page plus one row, walking the index of ``key`` from the cursor (or the start).

    An ``offset`` page skips through the index alone (a covering subquery of ids), so only the rows of
    the page itself are read from the table."""
    walk_desc = descending != req.backwards
    direction = "DESC" if walk_desc else "ASC"
    order = f" ORDER BY {key[0]} {direction}, {key[1]} {direction}"
    cursor = req.after if req.after is not None else req.before
    conds, params = ([where[len(" WHERE "):]] if where else []), list(args)
    if cursor is not None:
        conds.append(f"({key[0]}, {key[1]}) {'<' if walk_desc else '>'} (?, ?)")
        params.extend(cursor)
    w = (" WHERE " + " AND ".join(conds)) if conds else ""
    if req.offset:
        inner = f"SELECT {key[1]} FROM {table}{w}{order} LIMIT ? OFFSET ?"
        return f"SELECT * FROM {table} WHERE {key[1]} IN ({inner}){order}", [*params, req.limit + 1, req.offset]
    return f"SELECT * FROM {table}{w}{order} LIMIT ?", [*params, req.limit + 1]
