"""`supervisor_url` as one URL or a list (agent failover, issue 21): validation and the typed config."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.config import ConfigError
from halswarm.config.agent import parse_agent_config
from halswarm.config.validate import detect_kind, validate_data
from tests.support.config_fixtures import TOKEN

A = "ws://sup-a:8420/ws/agent"
B = "wss://sup-b.example:8443/ws/agent"


def errors(url: Any) -> list[str]:
    return [str(p) for p in validate_data("agent", {"supervisor_url": url, "auth_token": TOKEN}) if p.is_error]


def test_a_single_string_still_loads() -> None:
    cfg, _ = parse_agent_config({"supervisor_url": A, "auth_token": TOKEN, "node_id": "n1"}, env={})
    assert cfg.supervisor_url == A and cfg.supervisor_urls == (A,)


def test_a_list_loads_in_order_and_the_first_is_supervisor_url() -> None:
    cfg, _ = parse_agent_config({"supervisor_url": [B, A], "auth_token": TOKEN, "node_id": "n1"}, env={})
    assert cfg.supervisor_urls == (B, A) and cfg.supervisor_url == B
    assert detect_kind({"supervisor_url": [A, B]}) == "agent"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ([], ["supervisor_url: must not be empty"]),
        ([A, "http://sup-c:8420"], ["supervisor_url[1]: must be a ws:// or wss:// URL with a host (got 'http://sup-c:8420')"]),
        ([A, A], ["supervisor_url: must not contain duplicates"]),
        ([A, "ws://SUP-A:8420/ws/agent"], ["supervisor_url[1]: 'ws://SUP-A:8420/ws/agent' is the same supervisor as "
                                           "supervisor_url[0]"]),
        ("ws://sup-a:70000/ws/agent", ["supervisor_url: 'ws://sup-a:70000/ws/agent' has an invalid port (1..65535)"]),
        ([A, "ws://sup-b:0"], ["supervisor_url[1]: 'ws://sup-b:0' has an invalid port (1..65535)"]),
        (["ws://u:p@sup-b:1/ws/agent"], ["supervisor_url[0]: 'ws://u:p@sup-b:1/ws/agent' must not carry credentials "
                                         "(the agent sends its token in a header)"]),
        ([A, 8420], ["supervisor_url[1]: must be a string (got integer)"]),
        ({"url": A}, ["supervisor_url: must be a string or an array (got object)"]),
    ],
)
def test_bad_values_get_one_line_per_problem(url: Any, expected: list[str]) -> None:
    assert errors(url) == expected


def test_too_many_urls() -> None:
    assert errors([f"ws://s{i}:1/ws/agent" for i in range(17)]) == ["supervisor_url: must have at most 16 items"]
    assert errors([f"ws://s{i}:1/ws/agent" for i in range(16)]) == []


def test_a_bad_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"supervisor_url\[1\]"):
        parse_agent_config({"supervisor_url": [A, "ws://x:0"], "auth_token": TOKEN}, env={})
