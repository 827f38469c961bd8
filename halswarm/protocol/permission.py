"""The `permission_reply` command (S->A): answer one opencode permission request of a session.

Its `args` are checked here, on both sides of the wire, so a bad id, reply or message is refused with
one line before anything reaches opencode: the id has opencode's shape (`per_` then letters and digits,
so it is safe in a URL path), the reply is one of opencode's three, the message is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from halswarm.protocol.errors import BAD_PAYLOAD, ProtocolError

PERMISSION_REPLY = "permission_reply"
REPLIES = ("once", "always", "reject")
PERMISSION_ID = re.compile(r"per_[A-Za-z0-9]{1,64}")
MESSAGE_MAX = 2000
_ARGS = frozenset({"permission_id", "reply", "message", "session_id"})


def is_permission_id(value: object) -> bool:
    return isinstance(value, str) and PERMISSION_ID.fullmatch(value) is not None


@dataclass(slots=True, frozen=True)
class PermissionReply:
    """`args` of a `permission_reply` command."""

    TYPE: ClassVar[str] = PERMISSION_REPLY
    permission_id: str
    reply: str
    message: str | None = None

    def __post_init__(self) -> None:
        where = self.TYPE
        if not is_permission_id(self.permission_id):
            raise ProtocolError(BAD_PAYLOAD, f"{where}: 'permission_id' must look like per_<letters and digits> "
                                             f"(got {str(self.permission_id)[:80]!r})")
        if self.reply not in REPLIES:
            raise ProtocolError(BAD_PAYLOAD, f"{where}: 'reply' must be one of {'|'.join(REPLIES)} "
                                             f"(got {str(self.reply)[:40]!r})")
        if self.message is not None:
            if not isinstance(self.message, str):
                raise ProtocolError(BAD_PAYLOAD, f"{where}: 'message' must be a string")
            if len(self.message) > MESSAGE_MAX:
                raise ProtocolError(BAD_PAYLOAD, f"{where}: 'message' is longer than {MESSAGE_MAX} characters")

    @classmethod
    def from_args(cls, args: Any) -> PermissionReply:
        if not isinstance(args, dict):
            raise ProtocolError(BAD_PAYLOAD, f"{cls.TYPE}: args must be an object")
        unknown = sorted(set(args) - _ARGS)
        if unknown:
            raise ProtocolError(BAD_PAYLOAD, f"{cls.TYPE}: unknown argument(s) {', '.join(unknown)}")
        message = args.get("message")
        return cls(args.get("permission_id"), args.get("reply"), message or None)  # type: ignore[arg-type]

    def to_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"permission_id": self.permission_id, "reply": self.reply}
        if self.message:
            out["message"] = self.message
        return out


# The start of the agent's error when the request is not pending for that session (already answered,
# withdrawn, or never asked there): the supervisor answers 409 on it.
NOT_PENDING = "permission request is not pending"
