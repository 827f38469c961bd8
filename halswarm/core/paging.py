"""Keyset paging, the pure part: opaque cursors, the page window and the capped total.

A cursor is the sort key of one row (e.g. ``(timestamp, id)``) as urlsafe base64 of a JSON array,
so clients cannot depend on what is inside it. ``decode_cursor`` checks it against the key's shape,
so a forged or truncated cursor is a clear error, never a wrong query.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Key = tuple[Any, ...]

# `meta.total` counts at most this many rows; beyond it the total is this cap, flagged as an estimate.
TOTAL_CAP = 10_000
MAX_CURSOR_CHARS = 512
_INT64 = 2**63 - 1


class CursorError(ValueError):
    """A cursor that this API did not hand out (or not for this listing)."""


def encode_cursor(key: Key) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _check(value: Any, kind: str) -> bool:
    if kind == "f":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "i":
        return isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value <= _INT64
    return isinstance(value, str) and len(value) <= 256  # "s"


def decode_cursor(token: str, shape: str) -> Key:
    """The key in ``token``; ``shape`` names its parts: ``f`` number, ``i`` 64-bit int, ``s`` text."""
    if not token or len(token) > MAX_CURSOR_CHARS:
        raise CursorError("not a cursor of this listing")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CursorError("not a cursor of this listing") from None
    if (not isinstance(value, list) or len(value) != len(shape)
            or not all(_check(v, k) for v, k in zip(value, shape, strict=True))):
        raise CursorError("not a cursor of this listing")
    return tuple(float(v) if k == "f" else v for v, k in zip(value, shape, strict=True))


@dataclass(frozen=True)
class PageRequest:
    """Where a page starts: ``after``/``before`` a key (in the listing's order), or at ``offset``."""

    limit: int
    offset: int = 0
    after: Key | None = None
    before: Key | None = None

    @property
    def backwards(self) -> bool:
        return self.before is not None


def page_request(limit: int, offset: int, after: str | None, before: str | None, shape: str) -> PageRequest:
    """Validate the paging parameters of a list route (raises CursorError with a one-line reason)."""
    if after and before:
        raise CursorError("give after or before, not both")
    if (after or before) and offset:
        raise CursorError("offset cannot be combined with after/before")
    return PageRequest(limit, offset, decode_cursor(after, shape) if after else None,
                       decode_cursor(before, shape) if before else None)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # cursor after the last item, when rows followed it when the page was read
    prev: str | None  # cursor before the first item, when rows preceded it


def window(rows: Sequence[T], req: PageRequest, key: Callable[[T], Key]) -> Page[T]:
    """The page from ``rows`` read in the walking direction with ``LIMIT req.limit + 1`` (for a
    ``before`` page: in reverse order); the extra row only tells whether more follow."""
    more = len(rows) > req.limit
    items = list(rows[:req.limit])
    if req.backwards:
        items.reverse()
        has_prev, has_next = more, True
    else:
        has_prev, has_next = req.after is not None or req.offset > 0, more
    if not items:
        return Page(items, None, None)
    return Page(items, encode_cursor(key(items[-1])) if has_next else None,
                encode_cursor(key(items[0])) if has_prev else None)


def slice_sorted(items: Sequence[T], req: PageRequest, key: Callable[[T], Key], descending: bool) -> Page[T]:
    """``window`` over a list already sorted by ``key`` (in-memory listings: nodes, sessions)."""

    def later(k: Key, cursor: Key) -> bool:
        return k < cursor if descending else k > cursor

    if req.after is not None:
        cut = req.after
        rows = [i for i in items if later(key(i), cut)][:req.limit + 1]
    elif req.before is not None:
        cut = req.before
        rows = [i for i in reversed(items) if later(cut, key(i))][:req.limit + 1]
    else:
        rows = list(items[req.offset:req.offset + req.limit + 1])
    return window(rows, req, key)


def capped_total(counted: int, cap: int = TOTAL_CAP) -> tuple[int, bool]:
    """(total, total_is_estimate) from a count of at most ``cap + 1`` rows."""
    return (cap, True) if counted > cap else (counted, False)


def page_meta(page: Page[Any], req: PageRequest, total: int, estimate: bool) -> dict[str, Any]:
    return {"total": total, "total_is_estimate": estimate, "limit": req.limit, "offset": req.offset,
            "next": page.next, "prev": page.prev}
