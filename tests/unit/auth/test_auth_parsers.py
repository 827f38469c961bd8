"""Parsers of the real CLIs' answers (shapes from reference/peers.md 3-5 and recorded outputs): the pure
``core.auth_status`` interpretations and the agent's device-flow output parsers. Reading the tools' files is
tested in test_auth_tool_files.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from halswarm.agent.auth.device_flow import failure_reason, parse_challenge
from halswarm.core.auth_status import claude, codex, opencode
from halswarm.core.auth_status.cli_output import CliResult, clean_output

REC = Path(__file__).parent / "recorded"
WARNING = ('WARNING: proceeding, even though we could not create PATH aliases: Refusing to create helper binaries '
           'under temporary dir "/tmp" (codex_home: /tmp/x/.codex)')


def js(doc: dict) -> str:
    return json.dumps(doc, indent=2)


# ----- claude -----

@pytest.mark.parametrize(("doc", "rc", "env", "status", "reason"), [
    ({"loggedIn": False, "authMethod": "none", "apiProvider": "firstParty"}, 1, {}, "unauthenticated",
     "not logged in"),
    ({"loggedIn": True, "authMethod": "api_key", "apiProvider": "firstParty", "apiKeySource": "ANTHROPIC_API_KEY"},
     0, {}, "authenticated", "API key from ANTHROPIC_API_KEY"),
    ({"loggedIn": True, "authMethod": "oauth_token", "apiProvider": "firstParty"}, 0,
     {"CLAUDE_CODE_OAUTH_TOKEN": "x"}, "authenticated", "OAuth token from CLAUDE_CODE_OAUTH_TOKEN"),
    ({"loggedIn": True, "authMethod": "oauth_token", "apiProvider": "firstParty"}, 0,
     {"ANTHROPIC_AUTH_TOKEN": "x"}, "authenticated", "OAuth token from ANTHROPIC_AUTH_TOKEN"),
    ({"loggedIn": True, "authMethod": "claude.ai", "apiProvider": "firstParty", "email": None,
      "subscriptionType": "max"}, 0, {}, "authenticated", "Claude Max account (claude.ai login)"),
    ({"loggedIn": True, "authMethod": "claude.ai", "email": "user@example.com"}, 0, {}, "authenticated",
     "Logged in as user@example.com"),
    ({"loggedIn": True, "authMethod": "claude.ai", "apiKeySource": "/login managed key"}, 0, {}, "authenticated",
     "claude.ai login (/login managed key)"),
    ({"loggedIn": True, "authMethod": "third_party", "apiProvider": "bedrock", "apiKeySource": "ANTHROPIC_API_KEY"},
     0, {}, "authenticated", "third-party provider bedrock (ANTHROPIC_API_KEY)"),
])
def test_claude_status_json(doc: dict, rc: int, env: dict, status: str, reason: str) -> None:
    assert claude.interpret(CliResult(rc, js(doc), ""), env)[:2] == (status, reason)


def test_claude_errors() -> None:
    assert claude.interpret(CliResult(-1, "", "", timed_out=True))[0] == "error"
    assert claude.interpret(CliResult(-1, "", "", spawn_error="cannot run claude: denied"))[1] == \
        "cannot run claude: denied"
    st, reason, _ = claude.interpret(CliResult(1, "Error: claude native binary not installed.", ""))
    assert st == "error" and "native binary not installed" in reason


CREDS = "/home/hal/.claude/.credentials.json"


def _creds(doc: object) -> claude.CredentialsFile:
    return claude.credentials_from_doc(CREDS, doc)


def test_claude_credentials_diagnosis() -> None:
    logged_in = CliResult(0, js({"loggedIn": True, "authMethod": "claude.ai", "subscriptionType": "max"}), "")
    logged_out = CliResult(1, js({"loggedIn": False, "authMethod": "none"}), "")
    past = (time.time() - 3600) * 1000
    # expired token with a refresh token: still usable (claude refreshes it), said in the reason
    creds = _creds({"claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "refreshToken": "r", "expiresAt": past}})
    st, reason, _ = claude.interpret(logged_in, {}, creds)
    assert st == "authenticated" and "access token expired" in reason and "refreshed on next use" in reason
    assert "sk-ant" not in reason
    # expired and nothing to refresh it with
    creds = _creds({"claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "refreshToken": None, "expiresAt": past}})
    assert claude.interpret(logged_in, {}, creds)[0] == "unauthenticated"
    # no expiry at all
    creds = _creds({"claudeAiOauth": {"accessToken": "a", "refreshToken": None, "expiresAt": None}})
    assert claude.interpret(logged_in, {}, creds)[0] == "authenticated"
    # malformed and empty token: logged out, with the why
    creds = claude.CredentialsFile(CREDS, exists=True)  # there, but unreadable or not JSON
    assert claude.interpret(logged_out, {}, creds)[1] == f"not logged in; {CREDS} is not valid JSON"
    creds = _creds({"claudeAiOauth": {"accessToken": ""}})
    assert claude.interpret(logged_out, {}, creds)[1] == f"not logged in; {CREDS} holds no access token"
    # no file: nothing to add
    assert claude.interpret(logged_out, {}, claude.CredentialsFile(CREDS, exists=False))[1] == "not logged in"


@pytest.mark.parametrize(("doc", "expected"), [
    ([], claude.CredentialsFile(CREDS, True, True)),  # JSON, but not the shape claude writes
    ({"claudeAiOauth": "x"}, claude.CredentialsFile(CREDS, True, True)),
    ({"claudeAiOauth": {"accessToken": "a", "refreshToken": "r", "expiresAt": 1_700_000_000_000}},
     claude.CredentialsFile(CREDS, True, True, True, True, 1_700_000_000.0)),
    ({"claudeAiOauth": {"accessToken": "a", "expiresAt": True}}, claude.CredentialsFile(CREDS, True, True, True)),
    ({"claudeAiOauth": {"accessToken": "a", "expiresAt": -5}}, claude.CredentialsFile(CREDS, True, True, True)),
    ({"claudeAiOauth": {"accessToken": "a", "expiresAt": "soon"}}, claude.CredentialsFile(CREDS, True, True, True)),
])
def test_claude_credentials_shape(doc: object, expected: claude.CredentialsFile) -> None:
    assert claude.credentials_from_doc(CREDS, doc) == expected


# ----- codex -----

@pytest.mark.parametrize(("stderr", "rc", "status", "reason"), [
    ("Not logged in\n", 1, "unauthenticated", "Not logged in"),
    (f"{WARNING}\nNot logged in\n", 1, "unauthenticated", "Not logged in"),
    ("API key configured - sk-test-***fghij\nAuthentication is checked when you send a request.\n", 0,
     "authenticated", "API key configured (codex login)"),
    ("Logged in using ChatGPT\n", 0, "authenticated", "Logged in using ChatGPT"),
    ("Error checking login status: failed to deserialize CLI auth from file: expected ident at line 1 column 2\n",
     1, "error", "Error checking login status: failed to deserialize CLI auth from file: expected ident at line 1 "
     "column 2"),
    ('Error loading configuration: CODEX_HOME points to "/nope", but that path does not exist\n', 1, "error",
     'Error loading configuration: CODEX_HOME points to "/nope", but that path does not exist'),
])
def test_codex_login_status(stderr: str, rc: int, status: str, reason: str) -> None:
    assert codex.interpret(CliResult(rc, "", stderr))[:2] == (status, reason)


def test_codex_env_key_is_authenticated() -> None:
    st, reason, detail = codex.interpret(CliResult(1, "", "Not logged in\n"), {"CODEX_API_KEY": "k"})
    assert st == "authenticated" and "CODEX_API_KEY" in reason and detail == {"method": "env"}


CODEX_AUTH = "/home/hal/.codex/auth.json"


def test_codex_quirks_corrected_by_auth_file() -> None:
    f = codex.auth_file_from_doc(CODEX_AUTH, {})
    assert f.empty
    st, reason, _ = codex.interpret(CliResult(0, "", "Logged in using ChatGPT\n"), {}, f)
    assert st == "unauthenticated" and "neither an API key nor ChatGPT tokens" in reason
    f = codex.auth_file_from_doc(CODEX_AUTH, {"OPENAI_API_KEY": ""})
    st, reason, _ = codex.interpret(CliResult(0, "", "API key configured - ***\n"), {}, f)
    assert (st, reason) == ("unauthenticated", f"the API key stored in {CODEX_AUTH} is empty")
    f = codex.auth_file_from_doc(CODEX_AUTH, {"auth_mode": "chatgpt", "OPENAI_API_KEY": None,
                                              "tokens": {"id_token": "x", "access_token": "a", "refresh_token": "r"}})
    assert codex.interpret(CliResult(0, "", "Logged in using ChatGPT\n"), {}, f)[0] == "authenticated"
    # a file that is not JSON (or not an object) corrects nothing: the CLI's answer stands
    for f in (codex.AuthFile(CODEX_AUTH, exists=True), codex.auth_file_from_doc(CODEX_AUTH, ["x"])):
        assert codex.interpret(CliResult(0, "", "Logged in using ChatGPT\n"), {}, f)[0] == "authenticated"
        assert codex.interpret(CliResult(0, "", "API key configured - ***\n"), {}, f)[0] == "authenticated"


# ----- opencode -----

def test_opencode_auth_list_recorded() -> None:
    empty = (REC / "opencode_auth_list_empty.txt").read_text()
    assert opencode.parse_auth_list(empty).credential_count == 0
    st, reason, _ = opencode.interpret_list(CliResult(0, empty, ""))
    assert (st, reason) == ("unauthenticated", "no credentials")
    full = (REC / "opencode_auth_list_creds_env.txt").read_text()
    parsed = opencode.parse_auth_list(full)
    assert parsed.credentials == [("Anthropic", "api"), ("OpenAI", "oauth")]
    assert parsed.environment == [("Anthropic", "ANTHROPIC_API_KEY")]
    assert (parsed.credential_count, parsed.env_count) == (2, 1)
    st, reason, _ = opencode.interpret_list(CliResult(0, full, ""))
    assert st == "authenticated"
    assert reason == "2 credential(s): Anthropic api, OpenAI oauth; environment: ANTHROPIC_API_KEY"


def test_opencode_malformed_and_unknown_type() -> None:
    empty = CliResult(0, (REC / "opencode_auth_list_empty.txt").read_text(), "")
    path = "/home/hal/.local/share/opencode/auth.json"
    assert "is not valid JSON" in opencode.interpret_list(empty, opencode.AuthFile(path, exists=True))[1]
    f = opencode.auth_file_from_doc(path, {"x": {"type": "weird", "key": "k"}, "a": {"type": "api", "key": "k"},
                                           "b": "k"})
    assert (f.entries, f.unknown) == ({"a": "api"}, ["b", "x"])
    assert opencode.interpret_list(empty, f)[1].endswith("unknown type ignored: b, x")


def test_opencode_providers() -> None:
    assert opencode.interpret_providers({"connected": ["opencode"]})[0] == "unauthenticated"
    st, reason, detail = opencode.interpret_providers({"connected": ["opencode", "openai", "anthropic"]})
    assert (st, reason) == ("authenticated", "providers connected: anthropic, openai")
    assert detail["providers"] == ["anthropic", "openai"]
    assert opencode.interpret_providers({"all": []})[0] == "error"


# ----- device flow output -----

def test_parse_codex_challenge_recorded() -> None:
    ch = parse_challenge((REC / "codex_device_auth_challenge.stdout.txt").read_text())
    assert ch is not None and (ch.url, ch.code) == ("https://auth.openai.com/codex/device", "K7QH-2XWPM")


def test_parse_opencode_challenge_recorded() -> None:
    ch = parse_challenge((REC / "opencode_headless_challenge.stdout.txt").read_text())
    assert ch is not None and (ch.url, ch.code) == ("https://auth.openai.com/codex/device", "9QJD-M4TZX")


def test_parse_challenge_partial_and_other_shapes() -> None:
    text = (REC / "codex_device_auth_challenge.stdout.txt").read_text()
    cut = text.index("2. Enter")
    assert parse_challenge(text[:cut]) is None  # URL without the code yet: wait for more output
    assert parse_challenge("Visit https://github.com/login/device and enter code ABCD-1234") == \
        parse_challenge("Go to https://github.com/login/device\nuser code: ABCD-1234")
    assert parse_challenge((REC / "codex_device_auth_offline.stderr.txt").read_text()) is None


def test_failure_reasons_recorded() -> None:
    assert failure_reason((REC / "codex_device_auth_offline.stderr.txt").read_text(), 1).startswith(
        "Error logging in: error sending request for url")
    text = (REC / "opencode_headless_offline.stdout.txt").read_text() + \
        (REC / "opencode_headless_offline.stderr.txt").read_text()
    assert failure_reason(text, 1) == \
        "Error: Failed to authorize: Unable to connect. Is the computer able to access the url?"


def test_clean_output_strips_ansi_and_codex_warning() -> None:
    assert clean_output(f"\x1b[90m{WARNING}\x1b[0m\r\nNot logged in\r\n\n") == "Not logged in"
