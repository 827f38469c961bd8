"""Slack's request signature (signing secret v0): `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of
`v0:{X-Slack-Request-Timestamp}:{raw body}` under the app's signing secret, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

VERSION = "v0"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value of a request (what Slack sends; tests sign with it too)."""
    mac = hmac.new(secret.encode(), f"{VERSION}:{timestamp}:".encode() + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def verified(secret: str, signature: str, timestamp: str, body: bytes) -> bool:
    """Whether `signature` is the secret's signature of timestamp + body (malformed input: False)."""
    if len(signature) != 67 or not signature.startswith(f"{VERSION}=") or not timestamp.isdigit() \
            or len(timestamp) > 12:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode())
