"""The shipped schemas are valid draft 2020-12 documents and carry the defaults."""

from __future__ import annotations

import pytest

from halswarm.config import KINDS, load_schema


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind: str) -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_load_schema_returns_a_copy() -> None:
    load_schema("agent")["properties"].clear()
    assert "supervisor_url" in load_schema("agent")["properties"]


def test_unknown_kind() -> None:
    with pytest.raises(ValueError):
        load_schema("daemon")


@pytest.mark.parametrize(
    ("kind", "pointer", "default"),
    [
        ("supervisor", ("server", "port"), 8420),
        ("supervisor", ("server", "http_port"), 8421),
        ("supervisor", ("server", "host"), "0.0.0.0"),
        ("supervisor", ("server", "max_frame_bytes"), 1048576),
        ("supervisor", ("server", "max_body_bytes"), 1048576),
        ("supervisor", ("database", "path"), "/var/lib/hal-o-swarm/supervisor.db"),
        ("supervisor", ("retention", "events_days"), 30),
        ("supervisor", ("retention", "audit_days"), 90),
        ("supervisor", ("commands", "default_timeout_sec"), 30),
        ("agent", ("opencode_port",), 4096),
        ("agent", ("auth_report_interval_sec",), 30),
        ("agent", ("opencode", "manage"), True),
        ("agent", ("opencode", "binary"), "opencode"),
        ("agent", ("data_dir",), "/var/lib/hal-o-swarm/agent"),
        ("agent", ("resume_message",), "continue"),
        ("agent", ("outbox", "max_events"), 100000),
    ],
)
def test_default_keywords(kind: str, pointer: tuple[str, ...], default: object) -> None:
    from halswarm.config.schemas import resolve

    root = load_schema(kind)
    node = root
    for part in pointer:
        node = resolve(node, root)["properties"][part]
    assert resolve(node, root)["default"] == default
