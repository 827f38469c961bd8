"""Redaction of secrets before anything reaches logs, audit rows or reports."""

from __future__ import annotations

from typing import Any

REDACTED = "[REDACTED]"
_SECRET_MARKERS = ("token", "password", "passwd", "secret", "authorization", "credential", "cookie", "private")
_NOT_SECRET = frozenset({"idempotency_key"})
# Values under these keys are maps whose every value is a secret (e.g. env vars being pushed).
_SECRET_MAPS = ("env_vars", "env", "credentials")


def is_secret_key(key: str) -> bool:
    k = key.lower()
    if k in _NOT_SECRET:
        return False
    return any(m in k for m in _SECRET_MARKERS) or k in ("key", "apikey") or k.endswith(("_key", "-key"))


def redact(value: Any, _key: str = "") -> Any:
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            ks = str(k)
            if ks.lower() in _SECRET_MAPS and isinstance(v, dict):
                out[k] = {ik: REDACTED for ik in v}
            elif is_secret_key(ks) and not isinstance(v, dict | list):
                out[k] = REDACTED if v not in (None, "") else v
            else:
                out[k] = redact(v, ks)
        return out
    if isinstance(value, list):
        return [redact(v, _key) for v in value]
    return value
