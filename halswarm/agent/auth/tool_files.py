"""The tools' credential files, read for a diagnosis only: what each looks like (present, valid JSON,
which tokens, expiry) in the shapes of ``core.auth_status``; no value from them leaves this module."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from halswarm.core.auth_status import claude, codex, opencode

Shape = TypeVar("Shape")


def _inspect(path: Path, unusable: Callable[[str, bool], Shape], from_doc: Callable[[str, Any], Shape]) -> Shape:
    """``from_doc`` of the parsed file, else ``unusable(path, exists)`` (missing, unreadable, not UTF-8, not JSON)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return unusable(str(path), False)
    except (OSError, ValueError):
        return unusable(str(path), True)
    return from_doc(str(path), doc)


def claude_credentials(config_dir: Path) -> claude.CredentialsFile:
    """``<config dir>/.credentials.json``."""
    return _inspect(config_dir / ".credentials.json", claude.CredentialsFile, claude.credentials_from_doc)


def codex_auth_file(codex_home: Path) -> codex.AuthFile:
    """``$CODEX_HOME/auth.json``."""
    return _inspect(codex_home / "auth.json", codex.AuthFile, codex.auth_file_from_doc)


def opencode_auth_file(path: Path) -> opencode.AuthFile:
    """opencode's ``auth.json`` (in its data dir)."""
    return _inspect(path, opencode.AuthFile, opencode.auth_file_from_doc)
