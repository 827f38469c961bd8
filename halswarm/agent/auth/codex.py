"""Codex: ``codex login status`` (text on stderr, rc 0 / 1; peers.md 4).

Two quirks of the CLI are corrected with a look at ``$CODEX_HOME/auth.json`` (never its values):
``{}`` (no key, no tokens) is reported as "Logged in using ChatGPT", and an empty stored key as
"API key configured". And keys in the environment (``OPENAI_API_KEY``, ``CODEX_API_KEY``) are
not seen by ``login status`` at all, though codex uses them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halswarm.agent.auth.runner import CliResult, clean_output
from halswarm.core.auth_capability import AUTHENTICATED, ERROR, UNAUTHENTICATED

ENV_KEYS = ("CODEX_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class AuthFile:
    path: str
    exists: bool
    valid_json: bool = False
    api_key: bool | None = None  # None: no key field; False: empty/null
    tokens: bool = False

    @property
    def empty(self) -> bool:
        return self.valid_json and not self.api_key and not self.tokens


def inspect_auth_file(codex_home: Path) -> AuthFile:
    path = codex_home / "auth.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AuthFile(str(path), exists=False)
    except (OSError, ValueError):
        return AuthFile(str(path), exists=True)
    if not isinstance(doc, dict):
        return AuthFile(str(path), exists=True)
    key = doc.get("OPENAI_API_KEY")
    tokens = doc.get("tokens")
    return AuthFile(
        str(path),
        exists=True,
        valid_json=True,
        api_key=None if "OPENAI_API_KEY" not in doc else bool(key),
        tokens=isinstance(tokens, dict) and bool(tokens.get("access_token") or tokens.get("refresh_token")),
    )


def interpret(
    result: CliResult, env: Mapping[str, str] | None = None, auth_file: AuthFile | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, detail) from a finished ``codex login status``."""
    env = env or {}
    if result.timed_out:
        return ERROR, "codex login status timed out", {}
    if result.spawn_error:
        return ERROR, result.spawn_error, {}
    lines = result.text.splitlines()
    first = lines[0] if lines else ""
    env_key = next((k for k in ENV_KEYS if env.get(k)), None)
    if result.returncode == 0:
        low = first.lower()
        if low.startswith("api key configured"):
            if auth_file is not None and auth_file.valid_json and auth_file.api_key is False:
                return UNAUTHENTICATED, f"the API key stored in {auth_file.path} is empty", {"method": "api_key"}
            return AUTHENTICATED, "API key configured (codex login)", {"method": "api_key"}
        if "chatgpt" in low:
            if auth_file is not None and auth_file.empty:
                return (UNAUTHENTICATED, f"{auth_file.path} holds neither an API key nor ChatGPT tokens "
                        "(codex login status reports it as logged in)", {"method": "chatgpt"})
            return AUTHENTICATED, "Logged in using ChatGPT", {"method": "chatgpt"}
        return AUTHENTICATED, first or "codex login status exited 0", {}
    if first.lower().startswith("not logged in"):
        if env_key:
            return AUTHENTICATED, f"API key from {env_key} in the environment (not stored by codex login)", {
                "method": "env"}
        return UNAUTHENTICATED, "Not logged in", {}
    if not first:
        first = clean_output(result.stdout) or "no output"
    return ERROR, first, {}
