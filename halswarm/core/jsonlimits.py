"""Nesting depth of a JSON text, measured without parsing it and without recursion.

Every JSON parser we use, and the code that walks a parsed document (jsonschema, pydantic,
``json.dumps``, ``repr``), recurses once per level: a body nested some thousands deep ends in a
RecursionError, i.e. a 500. orjson stops at 1024 levels, which is already past what the stdlib walkers
survive. So request bodies are measured first, on the raw bytes, and refused above a small limit.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

MAX_JSON_DEPTH = 64

# A JSON string (escapes included; an unterminated one runs to the end): brackets in it are not structure.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Openers to +1 and closers to -1 (0xff read as a signed byte), so a running sum is the depth.
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(raw: bytes) -> int:
    """Deepest array/object nesting of ``raw`` (0 for a scalar), counting brackets outside strings.

    Not a validator: on text that is not JSON it still answers a number and the parser reports the
    syntax error. Linear, and every step runs in C (no Python loop over the bytes).
    """
    if b"[" not in raw and b"{" not in raw:
        return 0
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_STEP)
    return max(0, max(accumulate(array("b", brackets)), default=0))


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``raw`` nests arrays/objects more than ``limit`` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # cheap bound: cannot be deeper than its brackets
        return False
    return json_depth(raw) > limit
