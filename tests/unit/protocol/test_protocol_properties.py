"""Property tests of the protocol codec (SPEC 4), issue 15 point 6.

- every message survives encode -> decode unchanged;
- decoding anything (bytes, text, JSON of any shape, envelopes with any payload) either answers an
  Envelope or raises ProtocolError, never another exception.

Deterministic for CI: ``derandomize=True`` (examples derived from the test itself, no random seed),
a bounded number of examples, no deadline (a loaded CI core must not turn slowness into a failure),
no example database.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from halswarm.protocol import ProtocolError, decode, encode
from halswarm.protocol.codec import encode_raw
from halswarm.protocol.messages import MESSAGE_TYPES
from tests.support.protocol_strategies import PROPS, finite, json_objects, json_values, messages, text


@PROPS
@given(msg=messages, request_id=st.none() | text, timestamp=st.floats(min_value=1e-3, max_value=1e12))
def test_every_message_round_trips(msg: Any, request_id: str | None, timestamp: float) -> None:
    frame = encode(msg, request_id=request_id, timestamp=timestamp)
    env = decode(frame)
    assert (env.type, env.payload, env.request_id, env.timestamp) == (type(msg).TYPE, msg, request_id, timestamp)
    assert decode(frame.encode("utf-8")).payload == msg  # bytes frames decode the same


def _decodes_or_protocol_error(frame: str | bytes) -> None:
    try:
        decode(frame, max_bytes=64 * 1024)
    except ProtocolError as exc:
        assert exc.code and exc.message


@PROPS
@given(frame=st.binary(max_size=300))
def test_decoding_arbitrary_bytes_raises_only_protocol_errors(frame: bytes) -> None:
    _decodes_or_protocol_error(frame)


@PROPS
@given(frame=st.text(max_size=300))  # surrogates included
def test_decoding_arbitrary_text_raises_only_protocol_errors(frame: str) -> None:
    _decodes_or_protocol_error(frame)


@PROPS
@given(doc=json_values)
def test_decoding_arbitrary_json_raises_only_protocol_errors(doc: Any) -> None:
    _decodes_or_protocol_error(json.dumps(doc))


@PROPS
@given(msg_type=st.sampled_from(sorted(MESSAGE_TYPES)) | text, payload=json_values,
       request_id=st.none() | json_values, timestamp=json_values | finite)
def test_envelopes_with_any_payload_raise_only_protocol_errors(msg_type: str, payload: Any, request_id: Any,
                                                               timestamp: Any) -> None:
    frame = json.dumps({"version": 1, "type": msg_type, "request_id": request_id, "timestamp": timestamp,
                        "payload": payload})
    _decodes_or_protocol_error(frame)


@PROPS
@given(msg_type=st.sampled_from(sorted(MESSAGE_TYPES)), payload=json_objects,
       overrides=st.dictionaries(st.sampled_from(["seq", "event_id", "type", "timestamp", "node_id", "status",
                                                  "command_id", "code", "projects", "sessions", "outbox",
                                                  "resources", "credential_version", "last_acked_seq"]),
                                 json_values, max_size=4))
def test_payloads_near_a_valid_shape_raise_only_protocol_errors(msg_type: str, payload: dict[str, Any],
                                                                overrides: dict[str, Any]) -> None:
    _decodes_or_protocol_error(encode_raw(msg_type, payload | overrides, timestamp=1.0))


def test_integers_past_64_bits_are_refused_or_kept_as_numbers() -> None:
    """orjson reads an integer past 64 bits as a float: such a seq is not an integer and is refused."""
    frame = encode_raw("ack", {"seq": 2**64}, timestamp=1.0)
    try:
        env = decode(frame)
    except ProtocolError as exc:
        assert exc.code == "bad_payload"
    else:
        assert isinstance(env.payload.seq, int)
