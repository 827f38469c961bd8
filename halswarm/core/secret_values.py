"""Redaction of configured secret values, by value, from any text or JSON-like data.

Key-based redaction (`supervisor/redact.py`) catches `{"api_key": ...}`; it cannot catch a provider
error body that echoes the key, a debug line of a third-party library, or a URL holding a token.
This registry holds the values themselves; every sink (log handler, stored rows, API answers)
replaces them. Process-wide, because logging is.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 8  # shorter values would redact ordinary words; real tokens are >= 32 chars
# A bearer credential in a header dump (`Authorization: Bearer x`), known or not, and `token=` in a URL.
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s'\",;]+")
_QUERY_TOKEN = re.compile(r"(?i)([?&](?:access_)?token=)[^&\s'\"]+")
_SECRET_KEY_HINTS = ("token", "password", "passwd", "secret", "api_key", "apikey", "private_key", "webhook")
_SECRET_MAPS = ("env_vars", "credentials")


class SecretValues:
    """A set of secret strings and one compiled pattern matching any of them (longest first)."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()  # replaced, never mutated: readers iterate lock-free
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            new = {v.strip() for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LEN}
            if new - self._values:
                self._values = self._values | new
                alts = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in alts))

    def clear(self) -> None:
        with self._lock:
            self._values = frozenset()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def found_in(self, text: str) -> bool:
        """Whether any known secret value occurs in `text` (plain substring tests, no regex)."""
        return any(v in text for v in self._values)

    def scrub_values(self, text: str) -> str:
        """`text` with only the known secret values replaced. Built for hot paths (every stored event):
        a plain substring test per value first, the regex only when one is there."""
        pattern = self._pattern
        if pattern is None or not self.found_in(text):
            return text
        return pattern.sub(REDACTED, text)

    def scrub_texts(self, texts: list[str]) -> list[str]:
        """`scrub_values` of each text, for a batch (the event data of one commit): one substring test
        per value over the whole batch joined, so the common case (no secret anywhere) costs no Python
        work per text. A value found in the joined text but in no single one (it spans the separator)
        only costs the per-text pass; a value in a text is always in the joined text."""
        if self._pattern is None or not texts or not self.found_in("\n".join(texts)):
            return texts
        return [self.scrub_values(t) for t in texts]

    def scrub(self, text: str) -> str:
        """`text` with every known secret, bearer credential and `token=` query value replaced."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        if "token=" in text.lower():
            text = _QUERY_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def scrub_data(self, value: Any) -> Any:
        """Deep copy of JSON-like `value` with every string scrubbed (keys included)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_data(v) for v in value]
        return value


def config_secret_values(doc: Any, _key: str = "", _in_secret_map: bool = False) -> set[str]:
    """Every string of a config document held under a secret-looking key (tokens, passwords, API
    keys, webhook URLs), the direct string values of a map under such a key (`agent_tokens`, named
    tokens), and every string inside a credential map. Secrets a loader resolved elsewhere
    (`*_file`, environment) are registered separately."""
    out: set[str] = set()
    if isinstance(doc, Mapping):
        parent_secret = _is_secret_key(_key) and not _key.endswith("_file")
        for k, v in doc.items():
            ks = str(k).lower()
            if isinstance(v, str):
                if _in_secret_map or parent_secret or (_is_secret_key(ks) and not ks.endswith("_file")):
                    out.add(v)
            else:
                out |= config_secret_values(v, ks, _in_secret_map or ks in _SECRET_MAPS)
    elif isinstance(doc, list | tuple):
        for v in doc:
            if isinstance(v, str) and (_in_secret_map or _is_secret_key(_key)):
                out.add(v)
            else:
                out |= config_secret_values(v, _key, _in_secret_map)
    return {v.strip() for v in out if len(v.strip()) >= MIN_SECRET_LEN}


def _is_secret_key(k: str) -> bool:
    return any(h in k for h in _SECRET_KEY_HINTS) or k in ("key", "authorization") or k.endswith(("_key", "-key"))



# The process-wide registry every sink reads.
SECRETS = SecretValues()
