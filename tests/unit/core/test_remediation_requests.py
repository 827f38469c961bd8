"""The request files the unprivileged supervisor writes for root (core.remediation.requests): only the
fixed schema, only an allowlisted incident, only fresh; everything else refused with one line."""

from __future__ import annotations

import json

import pytest

from halswarm.core.remediation.requests import (
    DB_CORRUPTION,
    MAX_AGE_SECONDS,
    RequestError,
    encode_request,
    parse_request,
    request_file_name,
    valid_file_name,
)

NOW = 1_800_000_000.0


def body(**doc: object) -> bytes:
    return json.dumps({"schema": 1, "incident": DB_CORRUPTION, "requested_at": NOW, **doc}).encode()


def test_what_the_supervisor_writes_is_accepted() -> None:
    req = parse_request(encode_request(DB_CORRUPTION, NOW), NOW + 5)
    assert (req.incident, req.requested_at) == (DB_CORRUPTION, NOW)
    assert valid_file_name(request_file_name(DB_CORRUPTION, NOW))


@pytest.mark.parametrize(("raw", "why"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "exactly schema, incident and requested_at"),
    (body(extra="x"), "exactly schema, incident and requested_at"),
    (json.dumps({"schema": 1, "incident": DB_CORRUPTION}).encode(), "exactly"),
    (body(schema=2), "unknown request schema"),
    (body(schema=True), "unknown request schema"),
    (body(incident="agent-crashed"), "is not one a request may start"),
    (body(incident="supervisor-db-corruption; rm -rf /"), "is not one a request may start"),
    (body(incident=["supervisor-db-corruption"]), "is not one a request may start"),
    (body(requested_at="now"), "must be a number"),
    (body(requested_at=True), "must be a number"),
    (body(requested_at=NOW + 3600), "in the future"),
    (body(requested_at=NOW - MAX_AGE_SECONDS - 1), "stale"),
    (body(incident="x" * 600), "larger than"),
])
def test_anything_else_is_refused_with_one_line(raw: bytes, why: str) -> None:
    with pytest.raises(RequestError, match=why) as exc:
        parse_request(raw, NOW)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 200


def test_nan_is_not_a_time() -> None:
    with pytest.raises(RequestError, match="must be a number"):
        parse_request(b'{"schema": 1, "incident": "supervisor-db-corruption", "requested_at": NaN}', NOW)


def test_only_allowlisted_incidents_can_be_encoded() -> None:
    with pytest.raises(RequestError):
        encode_request("agent-crashed", NOW)


@pytest.mark.parametrize("name", [".supervisor-db-corruption-1.json.12.tmp", "../x.json", "a/b.json", "x.txt",
                                  "", "X.json", "a" * 80 + ".json"])
def test_file_names_we_never_write_are_refused(name: str) -> None:
    assert not valid_file_name(name)
