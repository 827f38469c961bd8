"""The agent reads the tools' credential files for a diagnosis only: a missing, unreadable, non-UTF-8 or
non-JSON file is described, never raised, and no value from it is kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.auth.tool_files import claude_credentials, codex_auth_file, opencode_auth_file

SECRET = "sk-ant-oat01-FILESECRET-9b1e"

# tool -> (the file's name in its directory, the reader given that directory)
FILES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "claude_code": (".credentials.json", claude_credentials),
    "codex": ("auth.json", codex_auth_file),
    "opencode": ("auth.json", lambda d: opencode_auth_file(d / "auth.json")),
}


def read(tool: str, directory: Path, content: bytes | None = None) -> Any:
    name, reader = FILES[tool]
    if content is not None:
        (directory / name).write_bytes(content)
    return reader(directory)


@pytest.mark.parametrize("tool", FILES)
def test_missing_file(tmp_path: Path, tool: str) -> None:
    f = read(tool, tmp_path)
    assert (f.exists, f.valid_json, f.path) == (False, False, str(tmp_path / FILES[tool][0]))


@pytest.mark.parametrize("content", [b"not json", b"\xff\xfe{\x00}", b""])
@pytest.mark.parametrize("tool", FILES)
def test_unusable_file_is_described_not_raised(tmp_path: Path, tool: str, content: bytes) -> None:
    # Non-UTF-8 bytes used to escape the claude reader as UnicodeDecodeError: the whole probe then
    # said "auth check failed: UnicodeDecodeError" instead of the CLI's own answer.
    f = read(tool, tmp_path, content)
    assert (f.exists, f.valid_json) == (True, False)


@pytest.mark.parametrize("tool", FILES)
def test_unreadable_file(tmp_path: Path, tool: str) -> None:
    (tmp_path / FILES[tool][0]).mkdir()  # reading it fails with an OSError, even as root
    f = read(tool, tmp_path)
    assert (f.exists, f.valid_json) == (True, False)


def test_shapes_without_values(tmp_path: Path) -> None:
    dirs = {tool: tmp_path / tool for tool in FILES}
    for d in dirs.values():
        d.mkdir()
    claude = read("claude_code", dirs["claude_code"], json.dumps({"claudeAiOauth": {
        "accessToken": SECRET, "refreshToken": SECRET, "expiresAt": 1_700_000_000_000}}).encode())
    assert (claude.access_token, claude.refresh_token, claude.expires_at) == (True, True, 1_700_000_000.0)
    codex = read("codex", dirs["codex"], json.dumps({"OPENAI_API_KEY": SECRET}).encode())
    assert (codex.valid_json, codex.api_key, codex.tokens) == (True, True, False)
    opencode = read("opencode", dirs["opencode"],
                    json.dumps({"anthropic": {"type": "api", "key": SECRET}, "z": 1}).encode())
    assert (opencode.entries, opencode.unknown) == ({"anthropic": "api"}, ["z"])
    assert SECRET not in repr((claude, codex, opencode))
