"""Reading config files: JSON, or YAML for `.yaml`/`.yml`. Every failure is a one-line `ConfigError`."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.problems import json_type

YAML_SUFFIXES = (".yaml", ".yml")


def is_yaml_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in YAML_SUFFIXES


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError.single(
            where, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise ConfigError.single(where, f"invalid JSON: {exc}") from None


def _string_keys(value: Any) -> Any:
    """YAML allows non-string keys (`8420: x`); JSON paths and schemas need strings."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value


def _parse_yaml(text: str, where: str) -> Any:
    import yaml  # lazy: halctl without a YAML config never pays for it

    try:
        return _string_keys(yaml.safe_load(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = exc.problem or "syntax error"
        raise ConfigError.single(where, f"invalid YAML{pos}: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.single(where, f"invalid YAML: {exc}") from None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and parse a config file; the top level must be an object.

    Raises `ConfigError` (problem path = the file name) for a missing, unreadable, empty,
    half-written or otherwise unparsable file.
    """
    where = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError.single(where, "file not found") from None
    except IsADirectoryError:
        raise ConfigError.single(where, "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError.single(where, "cannot read file: permission denied") from None
    except OSError as exc:
        raise ConfigError.single(where, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError.single(where, f"not valid UTF-8 (byte offset {exc.start})") from None
    if not text.strip():
        raise ConfigError.single(where, "file is empty")
    data = _parse_yaml(text, where) if is_yaml_path(path) else _parse_json(text, where)
    if not isinstance(data, dict):
        raise ConfigError.single(where, f"top level must be an object, got {json_type(data)}")
    return data


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return a new dict: `overlay` merged into `base`; nested objects merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
