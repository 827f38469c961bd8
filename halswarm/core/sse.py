"""Server-Sent Events framing and resume, the pure part (issue 22 point 5, issue 18 point 5).

A frame's `id:` is the event's store id: ids grow in commit order, so "every matching event with a
larger id" is exactly what a client that saw that id has not seen yet.
"""

from __future__ import annotations

MAX_EVENT_ID = 2**63 - 1


class LastEventIdError(ValueError):
    """A `Last-Event-ID` that this stream did not hand out."""


def sse_frame(event_id: int, data: bytes) -> bytes:
    """One SSE message: `id:` then one `data:` line (`data` is JSON, which never holds a raw newline)."""
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


def parse_last_event_id(value: str | None) -> int | None:
    """The event id in a `Last-Event-ID` header; None when absent or empty (a fresh start, as the SSE
    standard reads an empty value). Anything else than a non-negative integer is an error."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_EVENT_ID:
        raise LastEventIdError("Last-Event-ID: expected the id of an event this stream sent (a non-negative integer)")
    return int(text)
