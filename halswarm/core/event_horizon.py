"""The id up to which a shared PostgreSQL's events can be read by cursor without missing one (issue 21).

Several supervisors insert into one `events` table. Ids come from one sequence, but a transaction that
took ids 101..200 may commit after another one that took 201..300: a reader that saw 300 and moved its
cursor there would never see 101..200. So a stream reads only up to the *safe horizon*: the largest id H
such that every id <= H is either committed (visible) or will never be (a rolled-back batch, an id an
`ON CONFLICT DO NOTHING` consumed).

A probe reads, in this order, (1) the sequence's last value L and (2) the transactions that hold a
write lock on `events` (pg_locks, `RowExclusiveLock`). A transaction takes that lock before its INSERT
draws an id and keeps it until it has committed or rolled back. So any transaction that drew an id <= L
and has not ended yet is among the holders seen in (2); once none of them holds the lock any more (a
later probe), every id <= L is settled and L is safe. This module is that bookkeeping, without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_PENDING = 64  # candidates kept; beyond it the newest two are merged (a safe, later answer)


class Horizon:
    """Candidates (L, holders) from probes, resolved by later probes; `safe` never goes down."""

    def __init__(self) -> None:
        self.safe: int | None = None  # None until the first candidate resolves
        self._pending: list[tuple[int, frozenset[str]]] = []

    @property
    def waiting(self) -> bool:
        """A candidate waits for transactions to end (the next probe may move the horizon)."""
        return bool(self._pending)

    def probe(self, assigned: int, holders: Iterable[str]) -> int | None:
        """One probe's answers: `assigned` (the sequence's last value, read first) and `holders` (ids of
        the transactions holding the write lock, read after it). Returns the safe horizon."""
        now = frozenset(holders)
        keep: list[tuple[int, frozenset[str]]] = []
        for value, waited in self._pending:
            if waited.isdisjoint(now):
                self._advance(value)
            else:
                keep.append((value, waited))
        if now:
            keep.append((assigned, now))
        else:
            self._advance(assigned)
        safe = self.safe
        if safe is not None:
            keep = [(v, w) for v, w in keep if v > safe]
        while len(keep) > MAX_PENDING:  # one long transaction must not grow this without bound
            (v1, w1), (v2, w2) = keep[-2], keep[-1]
            keep[-2:] = [(max(v1, v2), w1 | w2)]
        self._pending = keep
        return self.safe

    def _advance(self, value: int) -> None:
        if self.safe is None or value > self.safe:
            self.safe = value
