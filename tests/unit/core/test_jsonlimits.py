"""halswarm.core.jsonlimits: the nesting depth of JSON text, without parsing it or recursing."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from halswarm.core.jsonlimits import MAX_JSON_DEPTH, json_depth, too_deep
from tests.support.protocol_strategies import PROPS

# Strings full of the characters that matter: brackets, quotes and backslashes must not count.
tricky = st.text(st.sampled_from('[]{}"\\\\ax\\n'), max_size=12)
docs = st.recursive(st.none() | st.integers() | tricky,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky, inner, max_size=3),
                    max_leaves=30)


def _depth(doc: Any) -> int:
    if isinstance(doc, list):
        return 1 + max((_depth(v) for v in doc), default=0)
    if isinstance(doc, dict):
        return 1 + max((_depth(v) for v in doc.values()), default=0)
    return 0


@PROPS
@given(doc=docs, indent=st.none() | st.integers(0, 2))
def test_depth_of_any_document_is_its_nesting(doc: Any, indent: int | None) -> None:
    raw = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
    assert json_depth(raw) == _depth(doc)
    assert too_deep(raw, 2) == (_depth(doc) > 2)


def test_deep_bodies_are_measured_without_recursion() -> None:
    assert json_depth(b"[" * 200_000 + b"]" * 200_000) == 200_000
    assert too_deep(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    assert not too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))


def test_brackets_inside_strings_and_garbage() -> None:
    assert json_depth(b'{"k": "[[[{{{", "e": "\\\\\\"[["}') == 1
    assert json_depth(b'"unterminated [[[') == 0
    assert json_depth(b"]]][[") == 0  # not JSON: a number all the same, the parser reports the error
    assert json_depth(b"42") == 0
