"""Auth detection against the REAL pinned CLIs, every row of reference/peers.md 3-5, fresh HOMEs, offline.

Each case runs the agent's probe (``Prober``, the code the agent runs) with ``env -i``-like
environments: PATH (the pinned CLIs + /usr/bin:/bin), a new HOME, and only the variables of the row.
HOMEs live under /var/tmp, where codex prints no PATH-alias warning; one case uses /tmp on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.auth.probes import Prober
from halswarm.agent.auth.runner import run_cli
from halswarm.agent.auth.toolenv import ToolEnv

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("HAL_TEST_CLI_BIN", ROOT / ".tools" / "npm" / "node_modules" / ".bin"))


def _need(name: str) -> str:
    path = BIN / name
    if not (path.exists() and os.access(path, os.X_OK)):
        reason = f"{path} not installed; run scripts/install-test-clis.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return str(path)


@pytest.fixture
def home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hal-auth-e2e-", dir="/var/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def base_env(home: Path, **extra: str) -> dict[str, str]:
    # npm_config_offline: opencode's first run in a fresh HOME tries to npm-install a plugin; fail fast
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "npm_config_offline": "true", **extra}


VERSIONS: dict[str, str | None] = {}  # `--version` answers, shared by the cases (as one agent would)


async def probe(tool: str, home: Path, **extra: str) -> tuple[str, str, Any]:
    _need({"claude_code": "claude", "codex": "codex", "opencode": "opencode"}[tool])
    st = await Prober(ToolEnv(base_env=base_env(home, **extra)), versions=VERSIONS).probe(tool)
    return st.status, st.reason, st


def write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def future_ms(hours: float) -> int:
    return int((time.time() + hours * 3600) * 1000)


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


# ----------------------------------------------------------------------------- versions

async def test_versions_parsed(home: Path) -> None:
    for tool, expected in (("claude_code", "2.1.197 (Claude Code)"), ("codex", "codex-cli 0.171.0"),
                           ("opencode", "1.18.33")):
        _, _, st = await probe(tool, home)
        assert st.installed and st.version == expected and st.path.startswith(str(BIN))


async def test_not_installed_when_missing(home: Path) -> None:
    prober = Prober(ToolEnv(base_env={"PATH": "/nonexistent", "HOME": str(home)},
                            tool_paths={"claude": str(home / "no" / "claude")}))
    assert (await prober.probe("claude_code")).status == "not_installed"


# ----------------------------------------------------------------------------- Claude Code (peers.md 3)

CREDS = {"claudeAiOauth": {"accessToken": "sk-ant-oat01-fake", "refreshToken": "r", "expiresAt": future_ms(5),
                           "scopes": ["user:inference", "user:profile"], "subscriptionType": "max"}}


async def test_claude_nothing(home: Path) -> None:
    assert (await probe("claude_code", home))[:2] == ("unauthenticated", "not logged in")


@pytest.mark.parametrize(("var", "reason"), [
    ("ANTHROPIC_API_KEY", "API key from ANTHROPIC_API_KEY"),
    ("CLAUDE_CODE_OAUTH_TOKEN", "OAuth token from CLAUDE_CODE_OAUTH_TOKEN"),
    ("ANTHROPIC_AUTH_TOKEN", "OAuth token from ANTHROPIC_AUTH_TOKEN"),
])
async def test_claude_env(home: Path, var: str, reason: str) -> None:
    assert (await probe("claude_code", home, **{var: "x"}))[:2] == ("authenticated", reason)


async def test_claude_credentials_file(home: Path) -> None:
    write(home / ".claude" / ".credentials.json", CREDS)
    status, reason, st = await probe("claude_code", home)
    assert (status, reason) == ("authenticated", "Claude Max account (claude.ai login)")
    assert st.detail["subscriptionType"] == "max"


async def test_claude_expired_token(home: Path) -> None:
    creds = json.loads(json.dumps(CREDS))
    creds["claudeAiOauth"]["expiresAt"] = future_ms(-5)
    write(home / ".claude" / ".credentials.json", creds)
    status, reason, _ = await probe("claude_code", home)
    assert status == "authenticated"  # the CLI refreshes it on use; the reason says it expired
    assert "access token expired" in reason and "refreshed on next use" in reason


async def test_claude_expired_token_without_refresh_token(home: Path) -> None:
    creds = json.loads(json.dumps(CREDS))
    creds["claudeAiOauth"].update(expiresAt=future_ms(-5), refreshToken=None)
    write(home / ".claude" / ".credentials.json", creds)
    status, reason, _ = await probe("claude_code", home)
    assert status == "unauthenticated" and "no refresh token" in reason


async def test_claude_no_expiry_no_refresh(home: Path) -> None:
    write(home / ".claude" / ".credentials.json", {"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-fake", "refreshToken": None, "expiresAt": None, "scopes": ["user:inference"]}})
    assert (await probe("claude_code", home))[:2] == ("authenticated", "claude.ai login")


async def test_claude_empty_access_token(home: Path) -> None:
    write(home / ".claude" / ".credentials.json", {"claudeAiOauth": {"accessToken": ""}})
    status, reason, _ = await probe("claude_code", home)
    assert status == "unauthenticated" and reason.endswith("holds no access token")


async def test_claude_malformed_credentials(home: Path) -> None:
    write(home / ".claude" / ".credentials.json", "not json")
    status, reason, _ = await probe("claude_code", home)
    assert status == "unauthenticated" and reason.endswith(".credentials.json is not valid JSON")


async def test_claude_primary_api_key(home: Path) -> None:
    write(home / ".claude.json", {"primaryApiKey": "sk-ant-api03-fake"})
    assert (await probe("claude_code", home))[:2] == ("authenticated", "claude.ai login (/login managed key)")


async def test_claude_config_dir(home: Path) -> None:
    write(home / "cfg" / ".credentials.json", CREDS)
    assert (await probe("claude_code", home, CLAUDE_CONFIG_DIR=str(home / "cfg")))[0] == "authenticated"
    assert (await probe("claude_code", home))[0] == "unauthenticated"  # same file, no CLAUDE_CONFIG_DIR


async def test_claude_bedrock(home: Path) -> None:
    status, reason, _ = await probe("claude_code", home, ANTHROPIC_API_KEY="x", CLAUDE_CODE_USE_BEDROCK="1")
    assert (status, reason) == ("authenticated", "third-party provider bedrock (ANTHROPIC_API_KEY)")


# ----------------------------------------------------------------------------- Codex (peers.md 4)

async def test_codex_nothing(home: Path) -> None:
    assert (await probe("codex", home))[:2] == ("unauthenticated", "Not logged in")


async def test_codex_home_under_tmp_warning_ignored() -> None:
    d = Path(tempfile.mkdtemp(prefix="hal-auth-e2e-", dir="/tmp"))
    try:
        res = await run_cli([_need("codex"), "login", "status"], base_env(d), timeout=20)
        assert "PATH aliases" in res.stderr  # the warning is really there ...
        assert (await probe("codex", d))[:2] == ("unauthenticated", "Not logged in")  # ... and ignored
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize(("doc", "status", "reason_part"), [
    ({"OPENAI_API_KEY": "sk-test-abcdefghij"}, "authenticated", "API key configured"),
    ({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-test-abcdefghij"}, "authenticated", "API key configured"),
    ({"OPENAI_API_KEY": ""}, "unauthenticated", "is empty"),
    ({}, "unauthenticated", "neither an API key nor ChatGPT tokens"),
    ({"OPENAI_API_KEY": None}, "unauthenticated", "neither an API key nor ChatGPT tokens"),
    ({"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": {"id_token": "garbage", "access_token": "a",
                                                                 "refresh_token": "r", "account_id": "acc-1"}},
     "error", "Error checking login status"),
    ("not json", "error", "Error checking login status"),
])
async def test_codex_auth_file(home: Path, doc: Any, status: str, reason_part: str) -> None:
    write(home / ".codex" / "auth.json", doc)
    got_status, reason, _ = await probe("codex", home)
    assert got_status == status and reason_part in reason, reason
    assert "abcdefghij" not in reason and "fghij" not in reason  # no key fragment in the reason


async def test_codex_chatgpt_tokens(home: Path) -> None:
    jwt = unsigned_jwt({"email": "user@example.com", "https://api.openai.com/auth": {
        "chatgpt_plan_type": "plus", "chatgpt_account_id": "acc-1"}})
    write(home / ".codex" / "auth.json", {
        "auth_mode": "chatgpt", "OPENAI_API_KEY": None, "last_refresh": "2026-11-01T00:00:00Z",
        "tokens": {"id_token": jwt, "access_token": "a", "refresh_token": "r", "account_id": "acc-1"}})
    assert (await probe("codex", home))[:2] == ("authenticated", "Logged in using ChatGPT")


@pytest.mark.parametrize("var", ["OPENAI_API_KEY", "CODEX_API_KEY"])
async def test_codex_env_key(home: Path, var: str) -> None:
    status, reason, _ = await probe("codex", home, **{var: "sk-env-1234567890"})
    assert status == "authenticated" and var in reason  # `login status` says "Not logged in"; codex uses it


async def test_codex_home_override(home: Path) -> None:
    write(home / "alt" / "auth.json", {"OPENAI_API_KEY": "sk-alt-abcdefghij"})
    assert (await probe("codex", home, CODEX_HOME=str(home / "alt")))[0] == "authenticated"
    status, reason, _ = await probe("codex", home, CODEX_HOME=str(home / "missing"))
    assert status == "error" and "CODEX_HOME points to" in reason


async def test_codex_real_login_writer_and_logout(home: Path) -> None:
    codex = _need("codex")
    res = await run_cli([codex, "login", "--with-api-key"], base_env(home), input_data=b"sk-test-fake-1234567890",
                        timeout=20)
    assert res.returncode == 0, res.text
    assert (await probe("codex", home))[:2] == ("authenticated", "API key configured (codex login)")
    res = await run_cli([codex, "logout"], base_env(home), timeout=20)
    assert res.returncode == 0, res.text
    assert (await probe("codex", home))[0] == "unauthenticated"


# ----------------------------------------------------------------------------- opencode CLI (peers.md 5)

OC_AUTH = Path(".local") / "share" / "opencode" / "auth.json"


async def test_opencode_nothing(home: Path) -> None:
    assert (await probe("opencode", home))[:2] == ("unauthenticated", "no credentials")


async def test_opencode_api_and_oauth(home: Path) -> None:
    write(home / OC_AUTH, {"anthropic": {"type": "api", "key": "sk-test"}})
    assert (await probe("opencode", home))[:2] == ("authenticated", "1 credential(s): Anthropic api")
    write(home / OC_AUTH, {"anthropic": {"type": "api", "key": "sk-test"},
                           "openai": {"type": "oauth", "refresh": "r", "access": "a", "expires": 0}})
    assert (await probe("opencode", home))[:2] == ("authenticated",
                                                   "2 credential(s): Anthropic api, OpenAI oauth")


async def test_opencode_env_only(home: Path) -> None:
    status, reason, st = await probe("opencode", home, ANTHROPIC_API_KEY="x")
    assert (status, reason) == ("authenticated", "environment: ANTHROPIC_API_KEY")
    assert st.detail["environment"] == ["ANTHROPIC_API_KEY"]


async def test_opencode_xdg_data_home(home: Path) -> None:
    write(home / "xdg" / "opencode" / "auth.json", {"anthropic": {"type": "api", "key": "sk-test"}})
    assert (await probe("opencode", home, XDG_DATA_HOME=str(home / "xdg")))[0] == "authenticated"
    assert (await probe("opencode", home))[0] == "unauthenticated"


async def test_opencode_malformed_and_unknown_type(home: Path) -> None:
    write(home / OC_AUTH, "not json")
    status, reason, _ = await probe("opencode", home)
    assert status == "unauthenticated" and "is not valid JSON" in reason
    write(home / OC_AUTH, {"x": {"type": "weird"}})
    status, reason, _ = await probe("opencode", home)
    assert status == "unauthenticated" and "unknown type ignored: x" in reason
