"""The clean-shutdown marker's rules (pure): what identifies a database file, and when a file still is
the one a clean shutdown left.

A supervisor that stopped cleanly (final WAL checkpoint, no WAL left) writes the identity of its file
beside it; the next start skips the full `PRAGMA quick_check` only when the file is provably untouched
since: same device, inode, size, mtime and ctime (ctime cannot be set back by `os.utime` or `touch`,
only by changing the system clock), same header facts and the same bytes in the first and last page.
Anything else (no marker, an unreadable one, any difference, a non-empty WAL) runs the full check.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

MARKER_SUFFIX = ".clean"  # `<db>.clean` (the collection's restore/recover modules remove it too)
MARKER_VERSION = 1
MAX_MARKER_BYTES = 4096
HEADER_BYTES = 100
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class HeaderFacts:
    """What the 100-byte SQLite header says (https://www.sqlite.org/fileformat.html, section 1.3)."""

    page_size: int
    change_counter: int
    page_count: int  # the in-header database size, in pages
    version_valid_for: int
    schema_cookie: int


@dataclass(frozen=True)
class FileIdentity:
    """Everything that must be equal for a file to count as untouched since the marker was written."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    page_size: int
    change_counter: int
    page_count: int
    schema_cookie: int
    first_page_sha256: str
    last_page_sha256: str


def parse_header(raw: bytes) -> HeaderFacts | str:
    """The header's facts, or why these bytes are not an SQLite header."""
    if len(raw) < HEADER_BYTES:
        return f"file header is {len(raw)} bytes (an SQLite header has {HEADER_BYTES})"
    if raw[:16] != SQLITE_MAGIC:
        return "file header has no SQLite magic"
    size = int.from_bytes(raw[16:18], "big")
    page_size = 65536 if size == 1 else size
    if page_size < 512 or page_size & (page_size - 1):
        return f"file header has an invalid page size ({size})"

    def u32(at: int) -> int:
        return int.from_bytes(raw[at:at + 4], "big")

    return HeaderFacts(page_size=page_size, change_counter=u32(24), page_count=u32(28),
                       version_valid_for=u32(92), schema_cookie=u32(40))


def header_problem(facts: HeaderFacts, file_size: int) -> str | None:
    """The cheap sanity checks every start runs (independent of the file's size): the file is whole
    pages, and the in-header size (when SQLite vouches for it) matches the file."""
    if file_size % facts.page_size:
        return f"file size {file_size} is not a multiple of the page size {facts.page_size}"
    pages = file_size // facts.page_size
    if facts.version_valid_for == facts.change_counter and facts.page_count and facts.page_count != pages:
        return f"file header says {facts.page_count} pages, the file has {pages}"
    return None


def encode_marker(identity: FileIdentity) -> bytes:
    return json.dumps({"version": MARKER_VERSION, **asdict(identity)}, sort_keys=True).encode() + b"\n"


def decode_marker(raw: bytes) -> FileIdentity:
    """The identity a marker records; ValueError (one line) when it is not a marker this code wrote."""
    if len(raw) > MAX_MARKER_BYTES:
        raise ValueError(f"marker is {len(raw)} bytes (at most {MAX_MARKER_BYTES})")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"marker is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("version") != MARKER_VERSION:
        raise ValueError("marker has an unknown version")
    values: dict[str, Any] = {}
    for f in fields(FileIdentity):
        v = doc.get(f.name)
        ok = isinstance(v, str) if f.type == "str" else isinstance(v, int) and not isinstance(v, bool)
        if not ok:
            raise ValueError(f"marker field {f.name!r} is missing or of the wrong type")
        values[f.name] = v
    return FileIdentity(**values)


def mismatch(recorded: FileIdentity, current: FileIdentity) -> str | None:
    """The first fact that differs between the marker and the file (None: the same file, untouched)."""
    for f in fields(FileIdentity):
        if getattr(recorded, f.name) != getattr(current, f.name):
            return f"{f.name} differs"
    return None
