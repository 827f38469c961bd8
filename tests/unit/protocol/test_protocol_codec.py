"""Unit tests of the pure protocol codec (SPEC 4): round trips and every rejection path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from halswarm.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    AuthState,
    AuthStateEntry,
    Command,
    CommandResult,
    CommandTarget,
    CredentialSync,
    Envelope,
    ErrorMsg,
    Event,
    Heartbeat,
    ProjectRef,
    ProtocolError,
    Register,
    Registered,
    decode,
    encode,
)
from halswarm.protocol.codec import encode_raw
from halswarm.protocol.errors import (
    BAD_ENVELOPE,
    BAD_JSON,
    BAD_PAYLOAD,
    FRAME_TOO_LARGE,
    UNKNOWN_TYPE,
    UNSUPPORTED_VERSION,
)
from halswarm.protocol.messages import OutboxStats

RESOURCES = {
    "cpu_percent": 12.5,
    "ram_used_mb": 512.0,
    "ram_total_mb": 2048.0,
    "disk_used_gb": 3.5,
    "disk_total_gb": 40.0,
}

SAMPLES: list[Any] = [
    Register(
        node_id="node-1",
        hostname="host-1",
        version="0.1.0",
        projects=[ProjectRef("alpha", "/srv/alpha"), ProjectRef("beta", "/srv/beta")],
        capabilities={"opencode": True, "claude": False},
        resources=RESOURCES,
        sessions=[{"id": "ses_1", "project": "alpha", "status": "idle"}],
        last_acked_seq=41,
    ),
    Registered(node_id="node-1", resume_from_seq=41, heartbeat_interval_sec=30, credential_version=3),
    Registered(node_id="node-1", resume_from_seq=0, heartbeat_interval_sec=1, credential_version=None),
    Heartbeat(resources=RESOURCES),
    Heartbeat(),
    Heartbeat(resources=RESOURCES, outbox=OutboxStats(pending=7, max_events=100, refused_total=3)),
    Event(
        seq=42,
        event_id="evt_1",
        type="session.status",
        session_id="ses_1",
        project="alpha",
        data={"status": "busy", "nested": [1, "ü", None]},
        timestamp=1_700_000_000.25,
    ),
    Event(seq=1, event_id="evt_2", type="node.thing", data=None, timestamp=1.0),
    Ack(seq=42),
    Ack(seq=0),
    Command(
        command_id="cmd-1",
        type="prompt_session",
        target=CommandTarget(node_id="n", project="p", session_id="s"),
        args={"message": "hi"},
        timeout_ms=5000,
    ),
    Command(command_id="cmd-2", type="env_check"),
    CommandResult(command_id="cmd-1", status="success", output={"ok": True}, error=None),
    CommandResult(command_id="cmd-1", status="failure", output=None, error="boom"),
    CommandResult(command_id="cmd-1", status="timeout", output="partial", error="timed out"),
    AuthState(
        states=[
            AuthStateEntry("claude_code", "authenticated", "", 1_700_000_000.0),
            AuthStateEntry("codex", "unauthenticated", "no token", "2024-01-01T00:00:00Z"),
        ]
    ),
    AuthState(states=[]),
    CredentialSync(credential_version=7),
    ErrorMsg(code="seq_gap", message="expected seq 5", request_id="r-1"),
    ErrorMsg(code="bad_json", message="nope", request_id=None),
    Heartbeat(resources=RESOURCES, process={"rss_bytes": 1e8, "memory_max_bytes": 2e9, "restarts": 1.0}),
]


def frame(**overrides: Any) -> str:
    doc: dict[str, Any] = {
        "version": 1,
        "type": "heartbeat",
        "request_id": "req-9",
        "timestamp": 1_700_000_000.0,
        "payload": {"resources": {}},
    }
    for key, value in overrides.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc, ensure_ascii=False)


_DROP = object()


def reject(raw: str | bytes, code: str, **kw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(raw, **kw)
    assert info.value.code == code, (info.value.code, info.value.message)
    assert isinstance(info.value.message, str) and info.value.message
    return info.value


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).TYPE)
def test_round_trip_every_message_type(msg: Any) -> None:
    raw = encode(msg, request_id="rid-1", timestamp=1234.5)
    env = decode(raw)
    assert isinstance(env, Envelope)
    assert env.type == type(msg).TYPE
    assert env.version == PROTOCOL_VERSION
    assert env.request_id == "rid-1"
    assert env.timestamp == 1234.5
    assert type(env.payload) is type(msg)
    assert env.payload == msg
    # And the decoded message encodes to the same payload again.
    assert json.loads(encode(env.payload, timestamp=1234.5))["payload"] == json.loads(raw)["payload"]


def test_every_message_type_has_a_round_trip_sample() -> None:
    from halswarm.protocol.messages import MESSAGE_TYPES

    assert {type(m).TYPE for m in SAMPLES} == set(MESSAGE_TYPES)


def test_envelope_shape_on_the_wire() -> None:
    doc = json.loads(encode(Ack(seq=3)))
    assert set(doc) == {"version", "type", "request_id", "timestamp", "payload"}
    assert doc["version"] == 1 and doc["type"] == "ack" and doc["request_id"] is None
    assert isinstance(doc["timestamp"], float) and doc["timestamp"] > 1_600_000_000
    assert doc["payload"] == {"seq": 3}


def test_exact_wire_field_names() -> None:
    assert set(json.loads(encode(SAMPLES[0]))["payload"]) == {
        "node_id",
        "hostname",
        "version",
        "projects",
        "capabilities",
        "resources",
        "sessions",
        "last_acked_seq",
    }
    assert set(json.loads(encode(SAMPLES[1]))["payload"]) == {
        "node_id",
        "resume_from_seq",
        "heartbeat_interval_sec",
        "credential_version",
    }
    assert set(json.loads(encode(SAMPLES[6]))["payload"]) == {
        "seq",
        "event_id",
        "session_id",
        "project",
        "type",
        "data",
        "timestamp",
    }
    assert set(json.loads(encode(SAMPLES[10]))["payload"]) == {"command_id", "type", "target", "args", "timeout_ms"}
    assert set(json.loads(encode(SAMPLES[12]))["payload"]) == {"command_id", "status", "output", "error"}
    auth = json.loads(encode(SAMPLES[15]))["payload"]
    assert isinstance(auth, list) and set(auth[0]) == {"tool", "status", "reason", "checked_at"}
    assert set(json.loads(encode(SAMPLES[-2]))["payload"]) == {"code", "message", "request_id"}


def test_encode_is_compact_utf8_and_refuses_nan() -> None:
    raw = encode(Event(seq=1, event_id="e", type="t", data={"k": "é"}, timestamp=1.0))
    assert "é" in raw and ", " not in raw and ": " not in raw
    with pytest.raises(ValueError):
        encode(Event(seq=1, event_id="e", type="t", data={"x": float("nan")}, timestamp=1.0))


def test_encode_raw_matches_encode() -> None:
    raw = encode_raw("ack", {"seq": 9}, request_id="r", timestamp=5.0)
    assert decode(raw).payload == Ack(seq=9)
    assert raw == encode(Ack(seq=9), request_id="r", timestamp=5.0)


def test_decode_accepts_bytes() -> None:
    env = decode(encode(Ack(seq=4)).encode("utf-8"))
    assert env.payload == Ack(seq=4)


def test_missing_request_id_is_none_and_missing_payload_ok_for_heartbeat() -> None:
    env = decode(frame(request_id=_DROP, payload=_DROP))
    assert env.request_id is None and env.payload == Heartbeat()


def test_tolerated_shapes() -> None:
    reg = decode(encode_raw("register", {"node_id": "n", "capabilities": ["claude", "codex"]})).payload
    assert reg.capabilities == {"claude": True, "codex": True}
    assert reg.projects == [] and reg.sessions == [] and reg.last_acked_seq == 0
    reg = decode(encode_raw("register", {"node_id": "n", "sessions": [{"session_id": "s1"}]})).payload
    assert reg.sessions == [{"session_id": "s1"}]
    cmd = decode(encode_raw("command", {"command_id": "c", "type": "env_check"})).payload
    assert cmd.timeout_ms == 30_000 and cmd.args == {} and cmd.target == CommandTarget()
    hb = decode(encode_raw("heartbeat", {"resources": {**RESOURCES, "extra": 1}})).payload
    assert hb.resources == RESOURCES
    ev = decode(encode_raw("event", {"seq": 1, "event_id": "e", "type": "t"})).payload
    assert ev.timestamp == 0.0 and ev.data is None and ev.session_id is None
    assert decode(frame(timestamp=1)).timestamp == 1.0


# ------------------------------------------------------------------ frame level rejects


def test_frame_too_large_str_and_bytes() -> None:
    big = frame(request_id="x" * MAX_FRAME_BYTES)
    reject(big, FRAME_TOO_LARGE)
    reject(big.encode(), FRAME_TOO_LARGE)


def test_frame_size_boundary_is_exact() -> None:
    base = frame(request_id="")
    pad = MAX_FRAME_BYTES - len(base.encode())
    at_limit = frame(request_id="x" * pad)
    assert len(at_limit.encode()) == MAX_FRAME_BYTES
    assert decode(at_limit).request_id == "x" * pad
    reject(frame(request_id="x" * (pad + 1)), FRAME_TOO_LARGE)


def test_frame_size_counts_utf8_bytes_not_characters() -> None:
    # 2-byte characters: under the limit in characters, over it in bytes.
    raw = frame(request_id="é" * (MAX_FRAME_BYTES // 2 + 10))
    assert len(raw) < MAX_FRAME_BYTES
    reject(raw, FRAME_TOO_LARGE)


def test_custom_max_bytes() -> None:
    raw = encode(Ack(seq=1))
    reject(raw, FRAME_TOO_LARGE, max_bytes=len(raw) - 1)
    assert decode(raw, max_bytes=len(raw)).payload == Ack(seq=1)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x02garbage\xff",
        "not json at all",
        "",
        "{",
        '{"version":1,"type":"ack"',
        "[" * 100_000,  # nesting deep enough to blow the parser's recursion limit
        '{"version":1,"type":"heartbeat","timestamp":NaN,"payload":{}}',
        '{"version":1,"type":"heartbeat","timestamp":Infinity,"payload":{}}',
        '{"version":1,"type":"heartbeat","timestamp":1,"payload":{"x":-Infinity}}',
        # a lone surrogate cannot be stored as UTF-8 text: refused at the door, not at the database
        '{"version":1,"type":"heartbeat","timestamp":1,"payload":{"x":"\\ud800"}}',
        '{"version":1,"type":"ack","timestamp":1,"payload":{"seq":1}} trailing',
    ],
    ids=["garbage", "text", "empty", "brace", "truncated", "deep", "nan", "inf", "neg-inf", "lone-surrogate",
         "trailing"],
)
def test_bad_json(raw: str | bytes) -> None:
    reject(raw, BAD_JSON)


def test_invalid_utf8_bytes() -> None:
    reject(b'{"version":1,"type":"\xff\xfe","timestamp":1,"payload":{}}', BAD_JSON)
    reject(b'{"version":1,"type":"heartbeat","timestamp":1,"payload":{},"x":"\xc3"}', BAD_JSON)


@pytest.mark.parametrize("raw", ["[]", '"str"', "1", "null", "true", '[{"version":1}]'])
def test_non_object_json(raw: str) -> None:
    reject(raw, BAD_ENVELOPE)


@pytest.mark.parametrize("version", [2, 0, -1, "1", True, None, [1], {"v": 1}], ids=repr)
def test_bad_version(version: Any) -> None:
    err = reject(frame(version=version), UNSUPPORTED_VERSION)
    assert err.request_id == "req-9"


def test_missing_version() -> None:
    assert reject(frame(version=_DROP), UNSUPPORTED_VERSION).request_id == "req-9"


@pytest.mark.parametrize("msg_type", ["", 1, None, True, ["ack"]], ids=repr)
def test_bad_type(msg_type: Any) -> None:
    assert reject(frame(type=msg_type), BAD_ENVELOPE).request_id == "req-9"


def test_missing_type() -> None:
    assert reject(frame(type=_DROP), BAD_ENVELOPE).request_id == "req-9"


@pytest.mark.parametrize("msg_type", ["frobnicate", "Event", "config_update", "events"])
def test_unknown_type(msg_type: str) -> None:
    assert reject(frame(type=msg_type), UNKNOWN_TYPE).request_id == "req-9"


@pytest.mark.parametrize("ts", [0, 0.0, -1, -0.5, "1700000000", True, False, None, [1]], ids=repr)
def test_bad_timestamp(ts: Any) -> None:
    assert reject(frame(timestamp=ts), BAD_ENVELOPE).request_id == "req-9"


def test_missing_timestamp() -> None:
    reject(frame(timestamp=_DROP), BAD_ENVELOPE)


@pytest.mark.parametrize("rid", [1, True, {"a": 1}, ["r"]], ids=repr)
def test_non_string_request_id(rid: Any) -> None:
    reject(frame(request_id=rid), BAD_ENVELOPE)


def test_checks_run_in_order_size_first() -> None:
    # Oversized garbage is reported as too large, not as bad JSON.
    reject(b"\xff" * (MAX_FRAME_BYTES + 1), FRAME_TOO_LARGE)


# ------------------------------------------------------------------ payload shapes

BAD_PAYLOADS: list[tuple[str, Any]] = [
    # event
    ("event", None),
    ("event", []),
    ("event", {"seq": 0, "event_id": "e", "type": "t"}),
    ("event", {"seq": -3, "event_id": "e", "type": "t"}),
    ("event", {"seq": "1", "event_id": "e", "type": "t"}),
    ("event", {"seq": True, "event_id": "e", "type": "t"}),
    ("event", {"seq": 1.5, "event_id": "e", "type": "t"}),
    ("event", {"event_id": "e", "type": "t"}),
    ("event", {"seq": 1, "type": "t"}),
    ("event", {"seq": 1, "event_id": "", "type": "t"}),
    ("event", {"seq": 1, "event_id": "e"}),
    ("event", {"seq": 1, "event_id": "e", "type": 5}),
    ("event", {"seq": 1, "event_id": "e", "type": "t", "session_id": 5}),
    ("event", {"seq": 1, "event_id": "e", "type": "t", "project": ["p"]}),
    ("event", {"seq": 1, "event_id": "e", "type": "t", "timestamp": "now"}),
    ("event", {"seq": 1, "event_id": "e", "type": "t", "timestamp": True}),
    # ack
    ("ack", None),
    ("ack", {}),
    ("ack", {"seq": -1}),
    ("ack", {"seq": "1"}),
    ("ack", {"seq": True}),
    ("ack", {"seq": 2.0}),
    # command_result
    ("command_result", {"command_id": "c", "status": "ok"}),
    ("command_result", {"command_id": "c", "status": "SUCCESS"}),
    ("command_result", {"command_id": "c"}),
    ("command_result", {"status": "success"}),
    ("command_result", {"command_id": "c", "status": "success", "error": 3}),
    ("command_result", "success"),
    # auth_state
    ("auth_state", {"tool": "codex", "status": "ok"}),
    ("auth_state", None),
    ("auth_state", ["codex"]),
    ("auth_state", [{"status": "authenticated"}]),
    ("auth_state", [{"tool": "codex"}]),
    ("auth_state", [{"tool": "codex", "status": "authenticated", "checked_at": True}]),
    ("auth_state", [{"tool": "codex", "status": "authenticated", "checked_at": {"t": 1}}]),
    ("auth_state", [{"tool": "codex", "status": "authenticated", "reason": 1}]),
    # register
    ("register", {"node_id": "n", "projects": "alpha"}),
    ("register", {"node_id": "n", "projects": {"name": "alpha"}}),
    ("register", {"node_id": "n", "projects": ["alpha"]}),
    ("register", {"node_id": "n", "projects": [{"directory": "/srv/a"}]}),
    ("register", {"node_id": "n", "projects": [{"name": "a", "directory": 1}]}),
    ("register", {"node_id": "n", "sessions": {"id": "s"}}),
    ("register", {"node_id": "n", "sessions": ["s"]}),
    ("register", {"node_id": "n", "sessions": [{"status": "idle"}]}),
    ("register", {"node_id": "n", "capabilities": "claude"}),
    ("register", {"node_id": "n", "last_acked_seq": -1}),
    ("register", {"node_id": "n", "last_acked_seq": "0"}),
    ("register", {"node_id": "n", "resources": [1, 2]}),
    ("register", {"hostname": "h"}),
    ("register", {"node_id": ""}),
    ("register", None),
    # registered
    ("registered", {"node_id": "n", "heartbeat_interval_sec": 30}),
    ("registered", {"node_id": "n", "resume_from_seq": -1, "heartbeat_interval_sec": 30}),
    ("registered", {"node_id": "n", "resume_from_seq": 0, "heartbeat_interval_sec": 0}),
    ("registered", {"node_id": "n", "resume_from_seq": 0}),
    ("registered", {"node_id": "n", "resume_from_seq": 0, "heartbeat_interval_sec": 30, "credential_version": "1"}),
    ("registered", {"node_id": "n", "resume_from_seq": 0, "heartbeat_interval_sec": 30, "credential_version": True}),
    ("registered", {"resume_from_seq": 0, "heartbeat_interval_sec": 30}),
    # heartbeat
    ("heartbeat", {"resources": "lots"}),
    ("heartbeat", {"resources": {"cpu_percent": "high"}}),
    ("heartbeat", {"resources": {"ram_used_mb": True}}),
    ("heartbeat", [1]),
    ("heartbeat", {"outbox": 5}),
    ("heartbeat", {"outbox": {}}),
    ("heartbeat", {"outbox": {"pending": 1}}),
    ("heartbeat", {"outbox": {"pending": -1, "max_events": 10}}),
    ("heartbeat", {"outbox": {"pending": 1, "max_events": 0}}),
    ("heartbeat", {"outbox": {"pending": 1.5, "max_events": 10}}),
    ("heartbeat", {"outbox": {"pending": True, "max_events": 10}}),
    ("heartbeat", {"outbox": {"pending": 1, "max_events": 10, "refused_total": "2"}}),
    ("heartbeat", {"outbox": {"pending": 1, "max_events": 10, "refused_total": -2}}),
    # command
    ("command", {"command_id": "c", "type": "t", "target": ["n"]}),
    ("command", {"command_id": "c", "type": "t", "args": ["x"]}),
    ("command", {"command_id": "c", "type": "t", "timeout_ms": 0}),
    ("command", {"command_id": "c", "type": "t", "timeout_ms": "5000"}),
    ("command", {"command_id": "c", "type": "t", "target": {"node_id": 1}}),
    ("command", {"type": "t"}),
    ("command", {"command_id": "c"}),
    # credential_sync
    ("credential_sync", {}),
    ("credential_sync", {"credential_version": "1"}),
    ("credential_sync", {"credential_version": -1}),
    # error
    ("error", {"message": "m"}),
    ("error", {"code": 1, "message": "m"}),
    ("error", {"code": "c", "request_id": 5}),
    ("error", "boom"),
]


@pytest.mark.parametrize(("msg_type", "payload"), BAD_PAYLOADS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_payload_shapes(msg_type: str, payload: Any) -> None:
    err = reject(encode_raw(msg_type, payload, request_id="rid-77"), BAD_PAYLOAD)
    assert err.request_id == "rid-77"


def test_bad_payload_without_request_id_has_none() -> None:
    assert reject(encode_raw("ack", {"seq": "x"}), BAD_PAYLOAD).request_id is None


def test_protocol_error_is_a_value_error_with_fields() -> None:
    err = ProtocolError("seq_gap", "expected seq 5", "r1")
    assert isinstance(err, ValueError)
    assert (err.code, err.message, err.request_id, str(err)) == ("seq_gap", "expected seq 5", "r1", "expected seq 5")
    assert "seq_gap" in repr(err)


def test_heartbeat_outbox_is_optional_and_exact_on_the_wire() -> None:
    # An agent from before the field: valid, no outbox; and none is written when there is none.
    old = decode(encode_raw("heartbeat", {"resources": RESOURCES})).payload
    assert old == Heartbeat(resources=RESOURCES) and old.outbox is None
    assert set(json.loads(encode(Heartbeat()))["payload"]) == {"resources"}
    assert decode(encode_raw("heartbeat", {"outbox": None})).payload.outbox is None
    hb = Heartbeat(outbox=OutboxStats(pending=2, max_events=10, refused_total=1))
    assert json.loads(encode(hb))["payload"]["outbox"] == {"pending": 2, "max_events": 10, "refused_total": 1}
    # refused_total defaults to 0; unknown keys are ignored like elsewhere.
    ob = decode(encode_raw("heartbeat", {"outbox": {"pending": 0, "max_events": 1, "x": 1}})).payload.outbox
    assert ob == OutboxStats(pending=0, max_events=1, refused_total=0)


def test_heartbeat_outbox_errors_name_the_field() -> None:
    err = reject(encode_raw("heartbeat", {"outbox": {"pending": 1}}), BAD_PAYLOAD)
    assert err.message == "heartbeat.outbox: 'max_events' is required"
    err = reject(encode_raw("heartbeat", {"outbox": []}), BAD_PAYLOAD)
    assert err.message == "heartbeat: 'outbox' must be an object"


def test_heartbeat_process_figures_are_optional_bounded_and_never_an_error() -> None:
    assert "process" not in json.loads(encode(Heartbeat(resources=RESOURCES)))["payload"]  # older wire kept
    assert decode(encode_raw("heartbeat", {"resources": RESOURCES})).payload.process == {}
    hostile = {"rss_bytes": -1, "memory_max_bytes": 1e300, "restarts": "3", "opencode_restarts": 2, "node": "x"}
    hb = decode(encode_raw("heartbeat", {"resources": RESOURCES, "process": hostile})).payload
    assert hb.process == {"opencode_restarts": 2.0} and hb.resources == RESOURCES
    for raw in ("x", [1], 5, None):
        assert decode(encode_raw("heartbeat", {"process": raw})).payload.process == {}
