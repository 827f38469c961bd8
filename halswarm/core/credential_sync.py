"""Whether a node holds the credential set the supervisor expects (`credential_sync` in the API)."""

from __future__ import annotations

IN_SYNC, DRIFT, UNKNOWN = "in_sync", "drift_detected", "unknown"


def credential_sync(reported: int | None, expected: int | None) -> str:
    """``unknown`` until both versions are known, then ``in_sync`` or ``drift_detected``."""
    if reported is None or expected is None:
        return UNKNOWN
    return IN_SYNC if reported == expected else DRIFT
