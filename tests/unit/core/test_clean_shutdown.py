"""The clean-shutdown marker's rules: header facts, the cheap header checks, the marker's encoding and
the comparison that decides whether start-up may skip the full quick_check."""

from __future__ import annotations

import dataclasses

import pytest

from halswarm.core.clean_shutdown import (
    SQLITE_MAGIC,
    FileIdentity,
    HeaderFacts,
    decode_marker,
    encode_marker,
    header_problem,
    mismatch,
    parse_header,
)


def _header(page_size: int = 4096, counter: int = 7, pages: int = 3, valid_for: int = 7) -> bytes:
    raw = bytearray(100)
    raw[:16] = SQLITE_MAGIC
    raw[16:18] = (1 if page_size == 65536 else page_size).to_bytes(2, "big")
    raw[24:28] = counter.to_bytes(4, "big")
    raw[28:32] = pages.to_bytes(4, "big")
    raw[40:44] = (5).to_bytes(4, "big")
    raw[92:96] = valid_for.to_bytes(4, "big")
    return bytes(raw)


IDENTITY = FileIdentity(dev=1, ino=2, size=12288, mtime_ns=3, ctime_ns=4, page_size=4096, change_counter=7,
                        page_count=3, schema_cookie=5, first_page_sha256="a" * 64, last_page_sha256="b" * 64)


def test_header_facts() -> None:
    assert parse_header(_header()) == HeaderFacts(4096, 7, 3, 7, 5)
    assert isinstance(parse_header(_header(page_size=65536)), HeaderFacts)
    assert "magic" in str(parse_header(b"x" * 100))
    assert "bytes" in str(parse_header(SQLITE_MAGIC))
    assert "page size" in str(parse_header(_header(page_size=1000)))


def test_header_checks_need_whole_pages_and_the_vouched_size() -> None:
    facts = parse_header(_header())
    assert isinstance(facts, HeaderFacts)
    assert header_problem(facts, 3 * 4096) is None
    assert "multiple" in str(header_problem(facts, 3 * 4096 + 1))
    assert "3 pages" in str(header_problem(facts, 4 * 4096))
    stale = parse_header(_header(valid_for=6))  # SQLite does not vouch for the in-header size then
    assert isinstance(stale, HeaderFacts) and header_problem(stale, 4 * 4096) is None


def test_marker_round_trip_and_every_field_counts() -> None:
    assert decode_marker(encode_marker(IDENTITY)) == IDENTITY
    assert mismatch(IDENTITY, IDENTITY) is None
    for f in dataclasses.fields(FileIdentity):
        changed = dataclasses.replace(IDENTITY, **{f.name: getattr(IDENTITY, f.name) + (
            "0" if isinstance(getattr(IDENTITY, f.name), str) else 1)})
        assert mismatch(IDENTITY, changed) == f"{f.name} differs"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"version": 2}', b"{" + b" " * 5000 + b"}",
                                 b'{"version": 1, "dev": true}',
                                 encode_marker(IDENTITY).replace(b'"ino": 2', b'"ino": "2"')])
def test_a_marker_this_code_did_not_write_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_marker(raw)
