"""Shared constants and fixture files of the config tests (tests/fixtures/configs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
GO = FIXTURES / "go"
TOKEN = "4f9c2e71b8a34d05e6f1a29c7d3b8e40a5c6d7e8f9012a3b4c5d6e7f8a9b0c1d"
OP_TOKEN = "9a8b7c6d5e4f30211f2e3d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f9"
# A supervisor with only the shared (agent) token has no operator credential: one warning (issue 14).
NO_OPERATOR = ("security.operators: none configured: /api/v1 answers 401 to every request (auth_token is an agent "
               "token and never opens it); add an operator token with a role (docs/security.md)")


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())
