"""Claude Code: ``claude auth status`` (JSON on stdout, rc 0 logged in / 1 not; peers.md 3).

The CLI is the authority. What ``.credentials.json`` looks like only adds a diagnosis to the reason
(malformed file, empty or expired token); no value from it is ever kept here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from halswarm.core.auth_capability import AUTHENTICATED, ERROR, UNAUTHENTICATED
from halswarm.core.auth_status.cli_output import CliResult, clean_output, run_failure

ENV_TOKENS = ("CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN")
SUBSCRIPTIONS = {"max": "Claude Max", "pro": "Claude Pro", "team": "Claude Team", "enterprise": "Claude Enterprise"}


@dataclass(frozen=True)
class CredentialsFile:
    """What ``<config dir>/.credentials.json`` looks like, without its secrets."""

    path: str
    exists: bool
    valid_json: bool = False
    access_token: bool = False
    refresh_token: bool = False
    expires_at: float | None = None  # unix seconds

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at < time.time()


def credentials_from_doc(path: str, doc: Any) -> CredentialsFile:
    """The shape of a parsed ``.credentials.json`` at ``path`` (which tokens are there, the expiry)."""
    oauth = doc.get("claudeAiOauth") if isinstance(doc, dict) else None
    if not isinstance(oauth, dict):
        return CredentialsFile(path, exists=True, valid_json=True)
    exp = oauth.get("expiresAt")
    expires = float(exp) / 1000.0 if isinstance(exp, int | float) and not isinstance(exp, bool) and exp > 0 else None
    return CredentialsFile(
        path,
        exists=True,
        valid_json=True,
        access_token=bool(oauth.get("accessToken")),
        refresh_token=bool(oauth.get("refreshToken")),
        expires_at=expires,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _method_reason(status: Mapping[str, Any], env: Mapping[str, str]) -> str:
    if status.get("email"):
        return f"Logged in as {status['email']}"
    method = status.get("authMethod")
    source = status.get("apiKeySource")
    if method == "api_key":
        return f"API key from {source or 'the environment'}"
    if method == "oauth_token":
        var = next((v for v in ENV_TOKENS if env.get(v)), None)
        return f"OAuth token from {var}" if var else "OAuth token from the environment"
    if method == "third_party":
        return f"third-party provider {status.get('apiProvider') or '?'}" + (f" ({source})" if source else "")
    if method == "claude.ai":
        if source:
            return f"claude.ai login ({source})"
        sub = status.get("subscriptionType")
        label = SUBSCRIPTIONS.get(str(sub).lower(), f"{sub} subscription") if sub else "claude.ai login"
        return f"{label} account (claude.ai login)" if sub else label
    return f"logged in ({method or 'unknown method'})"


def interpret(
    result: CliResult, env: Mapping[str, str] | None = None, creds: CredentialsFile | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, detail) from a finished ``claude auth status`` (+ optional file diagnosis)."""
    env = env or {}
    if (failed := run_failure(result, "claude auth status")) is not None:
        return failed
    try:
        status = json.loads(result.stdout)
        if not isinstance(status, dict) or "loggedIn" not in status:
            raise ValueError("no loggedIn field")
    except ValueError:
        first = (clean_output(result.stdout) or clean_output(result.stderr) or "no output").splitlines()[0]
        return ERROR, f"claude auth status exited {result.returncode}: {first}", {}
    detail = {k: status[k] for k in ("authMethod", "apiProvider", "apiKeySource", "subscriptionType") if status.get(k)}
    if status.get("loggedIn") is True:
        reason = _method_reason(status, env)
        if status.get("authMethod") == "claude.ai" and creds is not None and creds.access_token and creds.expired:
            assert creds.expires_at is not None
            expired = f"access token expired {_iso(creds.expires_at)}"
            if not creds.refresh_token:
                return UNAUTHENTICATED, f"{expired} and there is no refresh token", detail
            reason += f"; {expired}, refreshed on next use"
        return AUTHENTICATED, reason, detail
    reason = "not logged in"
    if creds is not None and creds.exists:
        if not creds.valid_json:
            reason += f"; {creds.path} is not valid JSON"
        elif not creds.access_token:
            reason += f"; {creds.path} holds no access token"
    return UNAUTHENTICATED, reason, detail
