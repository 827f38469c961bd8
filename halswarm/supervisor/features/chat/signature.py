"""Discord's request signature: Ed25519 over the timestamp header followed by the raw body, checked with
the application's public key (`cryptography`, already the TLS and SSH stack's dependency)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def load_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def verified(key: Ed25519PublicKey, signature_hex: str, timestamp: str, body: bytes) -> bool:
    """Whether `signature_hex` is the key's signature of timestamp + body (malformed input: False)."""
    if len(signature_hex) != 128 or len(timestamp) > 20:
        return False
    try:
        key.verify(bytes.fromhex(signature_hex), timestamp.encode() + body)
    except (InvalidSignature, ValueError):
        return False
    return True
