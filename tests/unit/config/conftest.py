"""Fixtures for the config tests: files written into tmp_path with a chosen mode."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.config_fixtures import FIXTURES


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(name, data_or_text, mode=0o600) -> path in tmp_path."""

    def _write(name: str, content: Any, mode: int = 0o600) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
        path.chmod(mode)
        return path

    return _write


@pytest.fixture
def copy_fixture(tmp_path: Path) -> Callable[..., Path]:
    """Copy a fixture into tmp_path with mode 0600 (git does not keep file modes)."""

    def _copy(name: str, mode: int = 0o600) -> Path:
        dest = tmp_path / Path(name).name
        shutil.copyfile(FIXTURES / name, dest)
        dest.chmod(mode)
        return dest

    return _copy
