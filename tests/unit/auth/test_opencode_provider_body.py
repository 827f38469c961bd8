"""`connected` out of a GET /provider body without parsing its model catalogue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from halswarm.core.auth_status import opencode

CATALOGUE = [{"id": f"p{i}", "name": 'x "connected": ["fake"]', "models": {"m": {"connected": ["nested"]}}}
             for i in range(3)]


@pytest.mark.parametrize(("doc", "fast"), [
    ({"all": CATALOGUE, "default": {"p0": "m"}, "connected": ["opencode", "openai"]}, True),  # opencode 1.18
    ({"all": CATALOGUE, "connected": ["opencode", "openai"], "default": {"p0": "m", "q": [1, {"a": "}"}]}}, True),
    # the last "connected": is a nested one: the whole body is parsed instead
    ({"connected": ["opencode", "openai"], "all": CATALOGUE}, False),
])
def test_top_level_connected_is_found_whatever_the_key_order(doc: dict[str, Any], fast: bool) -> None:
    for body in (json.dumps(doc), json.dumps(doc, indent=2)):
        got = opencode.connected_from_provider_body(body.encode())
        assert got["connected"] == ["opencode", "openai"]
        assert (set(got) == {"connected"}) is fast


def test_a_nested_connected_key_last_is_not_taken_for_the_top_level_one() -> None:
    doc = {"connected": ["opencode"], "all": [{"id": "p", "connected": ["nested"]}]}
    # The last "connected": is nested; the tail check refuses it and the whole body is parsed.
    assert opencode.connected_from_provider_body(json.dumps(doc).encode()) == doc


def test_no_connected_key_or_bad_json() -> None:
    assert opencode.connected_from_provider_body(b'{"all": []}') == {"all": []}
    assert opencode.interpret_providers(opencode.connected_from_provider_body(b'{"all": []}'))[0] == "error"
    with pytest.raises(ValueError):
        opencode.connected_from_provider_body(b'{"all": [], "connected": [')
