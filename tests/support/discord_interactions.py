"""Signed Discord interactions for tests: a test key pair signs what Discord would send (Ed25519 over the
timestamp header followed by the raw body), in the real payload shapes of an application command and a
message component (a button press)."""

from __future__ import annotations

import json
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROUTE = "/api/v1/chat/discord/interactions"


def public_hex(key: Ed25519PrivateKey) -> str:
    """The `chatops.discord.public_key` of the key pair."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def signed(key: Ed25519PrivateKey, doc: dict[str, Any], ts: float | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the interaction as Discord posts it."""
    body = json.dumps(doc).encode()
    stamp = str(int(ts if ts is not None else time.time()))
    return body, {"X-Signature-Ed25519": key.sign(stamp.encode() + body).hex(), "X-Signature-Timestamp": stamp,
                  "Content-Type": "application/json", "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)"}


def _member(user: str, roles: list[str] | None) -> dict[str, Any]:
    return {"user": {"id": user, "username": "someone", "global_name": "Someone"}, "roles": roles or [],
            "permissions": "2147483647"}


def command_doc(app: str, name: str, options: list[dict[str, Any]], user: str, token: str, *, guild: str,
                channel: str = "80000000000000008", roles: list[str] | None = None) -> dict[str, Any]:
    """An APPLICATION_COMMAND interaction (type 2) of a slash command."""
    return {"id": f"9{abs(hash(token)) % 10**17}", "application_id": app, "type": 2, "token": token, "version": 1,
            "guild_id": guild, "channel_id": channel, "data": {"id": "1", "name": name, "type": 1, "options": options},
            "member": _member(user, roles)}


def component_doc(app: str, message: dict[str, Any], custom_id: str, user: str, token: str, *, guild: str,
                  roles: list[str] | None = None) -> dict[str, Any]:
    """A MESSAGE_COMPONENT interaction (type 3): a button of `message` pressed."""
    return {"id": f"8{abs(hash(token)) % 10**17}", "application_id": app, "type": 3, "token": token, "version": 1,
            "guild_id": guild, "channel_id": str(message.get("channel_id") or ""), "message": message,
            "data": {"custom_id": custom_id, "component_type": 2}, "member": _member(user, roles)}


def opt(name: str, value: Any, type_: int = 3) -> dict[str, Any]:
    return {"name": name, "type": type_, "value": value}
