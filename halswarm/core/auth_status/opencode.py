"""opencode: the running server's ``GET /provider`` ``connected`` list, else ``opencode auth list``.

peers.md 2 and 5: ``connected`` always holds ``opencode`` (the Zen provider ships a public key), so
only the other providers count. ``opencode auth list`` always exits 0 and prints decorated text;
a malformed ``auth.json`` or an entry of unknown type silently counts as 0 credentials, so what the
file looks like (never its values) says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.auth_capability import AUTHENTICATED, ERROR, UNAUTHENTICATED
from halswarm.core.auth_status.cli_output import CliResult, clean_output, run_failure

BUILTIN_PROVIDERS = frozenset({"opencode"})
KNOWN_TYPES = frozenset({"api", "oauth", "wellknown"})
_BULLET = re.compile(r"^[●◆◇•]\s+(.+?)\s+(\S+)$")
_COUNT = re.compile(r"^└\s+(\d+)\s+(credentials?|environment variables?)\b")


@dataclass(frozen=True)
class AuthList:
    credentials: list[tuple[str, str]] = field(default_factory=list)  # (provider name, type)
    environment: list[tuple[str, str]] = field(default_factory=list)  # (provider name, env var)
    credential_count: int | None = None
    env_count: int = 0


def parse_auth_list(text: str) -> AuthList:
    """Parse ``opencode auth list`` output (ANSI allowed)."""
    creds: list[tuple[str, str]] = []
    envs: list[tuple[str, str]] = []
    section = ""
    cred_count: int | None = None
    env_count = 0
    for raw in clean_output(text).splitlines():
        line = raw.strip()
        if line.startswith("┌"):
            section = "env" if "Environment" in line else "creds"
            continue
        m = _COUNT.match(line)
        if m:
            if m.group(2).startswith("credential"):
                cred_count = int(m.group(1))
            else:
                env_count = int(m.group(1))
            continue
        m = _BULLET.match(line)
        if m:
            (envs if section == "env" else creds).append((m.group(1), m.group(2)))
    return AuthList(creds, envs, cred_count, env_count)


@dataclass(frozen=True)
class AuthFile:
    path: str
    exists: bool
    valid_json: bool = False
    entries: dict[str, str] = field(default_factory=dict)  # provider id -> type
    unknown: list[str] = field(default_factory=list)  # providers with an unknown/missing type


def auth_file_from_doc(path: str, doc: Any) -> AuthFile:
    """The shape of a parsed ``auth.json`` at ``path``: each provider's credential type, never its value."""
    if not isinstance(doc, dict):
        return AuthFile(path, exists=True)
    entries: dict[str, str] = {}
    unknown: list[str] = []
    for provider, entry in doc.items():
        kind = entry.get("type") if isinstance(entry, dict) else None
        if isinstance(kind, str) and kind in KNOWN_TYPES:
            entries[str(provider)] = kind
        else:
            unknown.append(str(provider))
    return AuthFile(path, True, True, entries, sorted(unknown))


def interpret_list(result: CliResult, auth_file: AuthFile | None = None) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, detail) from a finished ``opencode auth list``."""
    if (failed := run_failure(result, "opencode auth list")) is not None:
        return failed
    parsed = parse_auth_list(result.stdout + "\n" + result.stderr)
    if result.returncode != 0 or parsed.credential_count is None:
        first = (result.text or "no output").splitlines()[0]
        return ERROR, f"opencode auth list exited {result.returncode}: {first}", {}
    parts = []
    if parsed.credentials:
        parts.append(f"{len(parsed.credentials)} credential(s): "
                     + ", ".join(f"{name} {kind}" for name, kind in parsed.credentials))
    if parsed.environment:
        parts.append("environment: " + ", ".join(var for _, var in parsed.environment))
    detail = {"credentials": [n for n, _ in parsed.credentials], "environment": [v for _, v in parsed.environment]}
    if parts:
        return AUTHENTICATED, "; ".join(parts), detail
    reason = "no credentials"
    if auth_file is not None and auth_file.exists:
        if not auth_file.valid_json:
            reason += f"; {auth_file.path} is not valid JSON (opencode ignores it)"
        elif auth_file.unknown:
            reason += f"; entries of unknown type ignored: {', '.join(auth_file.unknown)}"
    return UNAUTHENTICATED, reason, detail


_CONNECTED_KEY = b'"connected":'


def connected_from_provider_body(body: bytes) -> Any:
    """``{"connected": [...]}`` out of a ``GET /provider`` body without building its model catalogue.

    The body is ~6 MB (every known model); json.loads of it costs ~40 MB of short-lived objects on
    every probe, twice the agent's steady RSS. Only ``connected`` is needed. An unescaped
    ``"connected":`` can only be a key; it is the top-level one when what follows its value is
    ``("," key ":" value)* "}"`` and then the end of the document (a nested key would be followed by
    more closing brackets). Anything else falls back to parsing the whole body.
    """
    idx = body.rfind(_CONNECTED_KEY)
    if idx >= 0:
        try:
            tail = body[idx + len(_CONNECTED_KEY):].decode("utf-8")
            dec = json.JSONDecoder()
            value, pos = dec.raw_decode(tail, _skip_ws(tail, 0))
            pos = _skip_ws(tail, pos)
            while pos < len(tail) and tail[pos] == ",":
                key, pos = dec.raw_decode(tail, _skip_ws(tail, pos + 1))
                pos = _skip_ws(tail, pos)
                if not isinstance(key, str) or tail[pos:pos + 1] != ":":
                    raise ValueError("not a key")
                _, pos = dec.raw_decode(tail, _skip_ws(tail, pos + 1))
                pos = _skip_ws(tail, pos)
            if tail[pos:pos + 1] == "}" and not tail[pos + 1:].strip():
                return {"connected": value}
        except (UnicodeDecodeError, ValueError):
            pass
    return json.loads(body)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def interpret_providers(doc: Any) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, detail) from the server's ``GET /provider`` body."""
    connected = doc.get("connected") if isinstance(doc, Mapping) else None
    if not isinstance(connected, list):
        return ERROR, "opencode GET /provider: no 'connected' list", {}
    providers = sorted(str(p) for p in connected if str(p) not in BUILTIN_PROVIDERS)
    detail = {"providers": providers, "source": "server"}
    if providers:
        return AUTHENTICATED, f"providers connected: {', '.join(providers)}", detail
    return UNAUTHENTICATED, "no provider credentials (only the built-in OpenCode Zen provider)", detail
