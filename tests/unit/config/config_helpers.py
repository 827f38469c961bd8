"""Shared constants and helpers for the config tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "configs"
GO = FIXTURES / "go"
TOKEN = "4f9c2e71b8a34d05e6f1a29c7d3b8e40a5c6d7e8f9012a3b4c5d6e7f8a9b0c1d"


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())
