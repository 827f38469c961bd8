"""Typed reads of values inside one section of the normalized config, for the supervisor's per-feature
settings parsers (`supervisor/features/<f>/settings.py`).

The schema pass already rejected bad values of a loaded file; these reads keep a settings object from
being built from anything else: a wrong value raises `ConfigError` with one `path: message` line, worded
like the schema pass. A missing value (or null) takes the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from halswarm.config.errors import ConfigError
from halswarm.config.problems import join_path, json_type

N = TypeVar("N", int, float)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def obj(value: Any, path: str) -> Mapping[str, Any]:
    """The section itself: an object, or {} when absent/null."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError.single(path, f"must be an object (got {json_type(value)})")
    return value


def number(sec: Mapping[str, Any], key: str, path: str, default: N, *, above: float | None = None,
           at_least: float | None = None) -> N:
    """`sec[key]` as the type of `default`, bounded (`above` exclusive, `at_least` inclusive)."""
    value = sec.get(key)
    if value is None:
        return default
    where = join_path(path, key)
    if not _is_number(value):
        raise ConfigError.single(where, f"must be a number (got {json_type(value)})")
    if above is not None and not value > above:
        raise ConfigError.single(where, f"must be greater than {above:g} (got {value!r})")
    if at_least is not None and not value >= at_least:
        raise ConfigError.single(where, f"must be >= {at_least:g} (got {value!r})")
    return type(default)(value)


def optional_number(sec: Mapping[str, Any], key: str, path: str, *, above: float = 0) -> float | int | None:
    """`sec[key]` when set (greater than `above`), None when absent or null (off)."""
    value = sec.get(key)
    if value is None:
        return None
    where = join_path(path, key)
    if not _is_number(value):
        raise ConfigError.single(where, f"must be a number or null (got {json_type(value)})")
    if not value > above:
        raise ConfigError.single(where, f"must be greater than {above:g} (got {value!r})")
    return value


def boolean(sec: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = sec.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError.single(join_path(path, key), f"must be a boolean (got {json_type(value)})")
    return value


def string(sec: Mapping[str, Any], key: str, path: str) -> str | None:
    """`sec[key]` stripped, None when absent, null or blank."""
    value = sec.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError.single(join_path(path, key), f"must be a string (got {json_type(value)})")
    return value.strip() or None
