"""read_config_file: JSON or YAML, and a one-line ConfigError naming the file for every failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from halswarm.config import ConfigError, read_config_file


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    return text[len(f"{path}: "):]


def test_json(write) -> None:
    assert read_config_file(write("a.json", '{"server": {"port": 1}}')) == {"server": {"port": 1}}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_yaml_by_extension(write, suffix: str) -> None:
    text = "server:\n  port: 8420\n  auth_token: abc\nprojects:\n  - {name: a, directory: /srv/a}\n8421: x\n"
    assert read_config_file(write(f"c{suffix}", text)) == {
        "server": {"port": 8420, "auth_token": "abc"},
        "projects": [{"name": "a", "directory": "/srv/a"}],
        "8421": "x",
    }


def test_json_with_bom(write) -> None:
    path = write("bom.json", "")
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_config_file(path) == {"a": 1}


def test_half_written_json_names_line_and_column(write) -> None:
    path = write("half.json", '{\n  "server": {\n    "port": 8420,\n')
    assert _error(path) == "invalid JSON at line 4, column 1: Expecting property name enclosed in double quotes"


def test_broken_json_names_line_and_column(write) -> None:
    path = write("broken.json", '{\n  "server": {"port": 8420}\n  "log": {}\n}')
    assert _error(path) == "invalid JSON at line 3, column 3: Expecting ',' delimiter"


def test_nan_is_not_json(write) -> None:
    assert _error(write("nan.json", '{"a": NaN}')) == "invalid JSON: NaN is not valid JSON"


def test_broken_yaml_names_line_and_column(write) -> None:
    path = write("bad.yaml", "server:\n  port: [8420\n")
    assert _error(path).startswith("invalid YAML at line 3, column 1:")


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_empty_file(write, content: str) -> None:
    assert _error(write("empty.json", content)) == "file is empty"


def test_empty_yaml_document(write) -> None:
    assert _error(write("empty.yaml", "# only a comment\n")) == "top level must be an object, got null"


def test_missing_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.json") == "file not found"


def test_directory(tmp_path: Path) -> None:
    assert _error(tmp_path) == "is a directory, not a config file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(write) -> None:
    assert _error(write("secret.json", "{}", mode=0o000)) == "cannot read file: permission denied"


@pytest.mark.parametrize(
    ("text", "got"),
    [("[1, 2]", "array"), ('"x"', "string"), ("3", "integer"), ("2.5", "number"), ("null", "null"),
     ("true", "boolean")],
)
def test_top_level_must_be_an_object(write, text: str, got: str) -> None:
    assert _error(write("top.json", text)) == f"top level must be an object, got {got}"


def test_not_utf8(write) -> None:
    path = write("latin.json", "")
    path.write_bytes(b'{"a": "\xff"}')
    assert _error(path) == "not valid UTF-8 (byte offset 7)"
