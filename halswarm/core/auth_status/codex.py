"""Codex: ``codex login status`` (text on stderr, rc 0 / 1; peers.md 4).

Two quirks of the CLI are corrected with what ``$CODEX_HOME/auth.json`` looks like (never its
values): ``{}`` (no key, no tokens) is reported as "Logged in using ChatGPT", and an empty stored key
as "API key configured". And keys in the environment (``OPENAI_API_KEY``, ``CODEX_API_KEY``) are not
seen by ``login status`` at all, though codex uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from halswarm.core.auth_capability import AUTHENTICATED, ERROR, UNAUTHENTICATED
from halswarm.core.auth_status.cli_output import CliResult, clean_output, run_failure

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


def auth_file_from_doc(path: str, doc: Any) -> AuthFile:
    """The shape of a parsed ``auth.json`` at ``path`` (is there a key, are there tokens)."""
    if not isinstance(doc, dict):
        return AuthFile(path, exists=True)
    key = doc.get("OPENAI_API_KEY")
    tokens = doc.get("tokens")
    return AuthFile(
        path,
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
    if (failed := run_failure(result, "codex login status")) is not None:
        return failed
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
