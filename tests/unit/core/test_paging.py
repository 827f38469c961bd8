"""Keyset paging, pure part: cursors round-trip and refuse what this API did not hand out; the page
window and in-memory slices walk every row once in both directions; the total is capped and flagged."""

from __future__ import annotations

import base64

import pytest

from halswarm.core.paging import (
    CursorError,
    PageRequest,
    capped_total,
    decode_cursor,
    encode_cursor,
    page_request,
    slice_sorted,
)


def test_cursor_round_trips_and_is_url_safe() -> None:
    token = encode_cursor((1735787001.25, 42))
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(token, "fi") == (1735787001.25, 42)
    assert decode_cursor(encode_cursor((0, "ses-1")), "fs") == (0.0, "ses-1")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "", "!!!", "a", "x" * 600, _b64(b"not json"), _b64(b"{}"), _b64(b"[1]"), _b64(b"[1,2,3]"),
    _b64(b'["1",2]'), _b64(b"[1,2.5]"), _b64(b"[1,true]"), _b64(b"[NaN,1]"), _b64(b"[1e999,1]"),
    _b64(b"[1,99999999999999999999]"), _b64(b"\xff\xfe"),
])
def test_bad_cursors_are_refused(token: str) -> None:
    with pytest.raises(CursorError):
        decode_cursor(token, "fi")


def test_after_and_before_together_or_with_offset_are_refused() -> None:
    c = encode_cursor((1.0, 1))
    with pytest.raises(CursorError):
        page_request(10, 0, c, c, "fi")
    with pytest.raises(CursorError):
        page_request(10, 5, c, None, "fi")
    assert page_request(10, 0, None, c, "fi") == PageRequest(10, 0, None, (1.0, 1))


@pytest.mark.parametrize("descending", [False, True])
def test_in_memory_walk_forward_and_back_sees_every_row_once(descending: bool) -> None:
    rows = sorted(((float(i // 3), f"id{i:02d}") for i in range(23)), reverse=descending)

    def key(r: tuple[float, str]) -> tuple[float, str]:
        return r

    seen, req = [], PageRequest(5)
    while True:
        page = slice_sorted(rows, req, key, descending)
        seen.extend(page.items)
        if page.next is None:
            break
        req = PageRequest(5, after=decode_cursor(page.next, "fs"))
    assert seen == rows
    back: list[tuple[float, str]] = []
    req = PageRequest(5, before=decode_cursor(page.prev, "fs")) if page.prev else PageRequest(5)
    while True:
        page = slice_sorted(rows, req, key, descending)
        back = page.items + back
        if page.prev is None:
            break
        req = PageRequest(5, before=decode_cursor(page.prev, "fs"))
    assert back + seen[-3:] == rows  # the last page (3 rows) was the starting point


def test_first_page_has_no_prev_and_last_has_no_next() -> None:
    rows = [("a",), ("b",)]
    page = slice_sorted(rows, PageRequest(5), lambda r: r, False)
    assert (page.items, page.next, page.prev) == (rows, None, None)
    page = slice_sorted(rows, PageRequest(1, offset=1), lambda r: r, False)
    assert page.items == [("b",)] and page.next is None and page.prev is not None
    assert slice_sorted(rows, PageRequest(5, after=("z",)), lambda r: r, False).items == []


def test_total_is_capped_and_flagged() -> None:
    assert capped_total(10, cap=10) == (10, False)
    assert capped_total(11, cap=10) == (10, True)
