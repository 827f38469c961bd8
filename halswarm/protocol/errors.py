"""Protocol error type shared by the codec and both peers."""

from __future__ import annotations

# Error codes sent in `error` frames. Stable strings: peers and metrics key on them.
FRAME_TOO_LARGE = "frame_too_large"
BAD_JSON = "bad_json"
BAD_ENVELOPE = "bad_envelope"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_TYPE = "unknown_type"
BAD_PAYLOAD = "bad_payload"
SEQ_GAP = "seq_gap"
NOT_REGISTERED = "not_registered"
UNEXPECTED_TYPE = "unexpected_type"
INTERNAL = "internal_error"


class ProtocolError(ValueError):
    """A frame that cannot be accepted; carries the code for the `error` reply."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r})"
