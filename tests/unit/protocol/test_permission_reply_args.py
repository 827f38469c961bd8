"""`permission_reply` args: the strict schema both sides check before anything reaches opencode."""

from __future__ import annotations

import re

import pytest

from halswarm.protocol import Command, CommandTarget, PermissionReply, ProtocolError, decode, encode, is_permission_id
from halswarm.protocol.permission import MESSAGE_MAX


def test_round_trip_through_a_command_frame() -> None:
    args = PermissionReply("per_21c226e28001w0WDErRBZSdZ76", "reject", "not on prod").to_args()
    frame = encode(Command("c1", "permission_reply", CommandTarget(session_id="ses_1"), args))
    got = decode(frame).payload
    assert PermissionReply.from_args(got.args) == PermissionReply("per_21c226e28001w0WDErRBZSdZ76", "reject",
                                                                  "not on prod")


def test_message_is_optional_and_empty_means_none() -> None:
    assert PermissionReply.from_args({"permission_id": "per_a1", "reply": "once", "message": ""}).message is None
    assert PermissionReply("per_a1", "always").to_args() == {"permission_id": "per_a1", "reply": "always"}


@pytest.mark.parametrize("rid", ["per_", "per_a/b", "per_a b", "per_../x", "PER_abc", "ses_abc", "per_" + "a" * 65,
                                 "per_é", None, 7, "per_a\n"])
def test_ids_outside_opencodes_shape_are_refused(rid: object) -> None:
    assert not is_permission_id(rid)
    with pytest.raises(ProtocolError, match="'permission_id' must look like per_"):
        PermissionReply.from_args({"permission_id": rid, "reply": "once"})


@pytest.mark.parametrize("reply", ["yes", "ONCE", "", None, 1, "allow"])
def test_replies_outside_the_enum_are_refused(reply: object) -> None:
    with pytest.raises(ProtocolError, match=re.escape("'reply' must be one of once|always|reject")):
        PermissionReply.from_args({"permission_id": "per_a1", "reply": reply})


def test_message_is_bounded_and_a_string() -> None:
    PermissionReply("per_a1", "reject", "x" * MESSAGE_MAX)
    with pytest.raises(ProtocolError, match="longer than 2000"):
        PermissionReply("per_a1", "reject", "x" * (MESSAGE_MAX + 1))
    with pytest.raises(ProtocolError, match="'message' must be a string"):
        PermissionReply.from_args({"permission_id": "per_a1", "reply": "reject", "message": ["x"]})


def test_unknown_arguments_and_non_objects_are_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown argument"):
        PermissionReply.from_args({"permission_id": "per_a1", "reply": "once", "directory": "/etc"})
    with pytest.raises(ProtocolError, match="args must be an object"):
        PermissionReply.from_args(["per_a1"])
