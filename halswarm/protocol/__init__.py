"""Agent <-> supervisor wire protocol (SPEC section 4): pure codec and typed messages."""

from halswarm.protocol.codec import MAX_FRAME_BYTES, PROTOCOL_VERSION, decode, encode
from halswarm.protocol.errors import ProtocolError
from halswarm.protocol.messages import (
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
    Message,
    ProjectRef,
    Register,
    Registered,
)
from halswarm.protocol.permission import PERMISSION_REPLY, REPLIES, PermissionReply, is_permission_id

__all__ = [
    "MAX_FRAME_BYTES",
    "PERMISSION_REPLY",
    "PROTOCOL_VERSION",
    "REPLIES",
    "Ack",
    "AuthState",
    "AuthStateEntry",
    "Command",
    "CommandResult",
    "CommandTarget",
    "CredentialSync",
    "Envelope",
    "ErrorMsg",
    "Event",
    "Heartbeat",
    "Message",
    "PermissionReply",
    "ProjectRef",
    "ProtocolError",
    "Register",
    "Registered",
    "decode",
    "encode",
    "is_permission_id",
]
