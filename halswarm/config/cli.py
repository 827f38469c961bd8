"""halctl's own config: `~/.config/halctl/config.yaml`, or the Go `~/.halctl/config.json`.

This module is on halctl's start-up path, so it checks the (flat) CLI schema by hand instead of
importing jsonschema; `halctl config validate` still runs the full validator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.loader import read_config_file
from halswarm.config.problems import TYPE_NAMES, Problem, format_path, json_type, sort_problems
from halswarm.config.schemas import apply_defaults, load_schema
from halswarm.config.secrets import file_permission_problems
from halswarm.config.semantic import cli_checks

_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "boolean": bool, "object": dict, "array": list,
}


@dataclass(frozen=True)
class CliConfig:
    supervisor_url: str = "http://localhost:8421"
    auth_token: str | None = field(default=None, repr=False)
    output: str = "table"
    source_path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def default_cli_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where `halctl config init cli` writes: `$XDG_CONFIG_HOME/halctl/config.yaml` or `~/.config/...`."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "halctl" / "config.yaml"


def cli_config_candidates(env: Mapping[str, str] = os.environ) -> list[Path]:
    """Search order: XDG/`~/.config/halctl/config.yaml`, then the Go `~/.halctl/config.json`."""
    home = Path(os.path.expanduser("~"))
    paths = [
        default_cli_config_path(env),
        home / ".config" / "halctl" / "config.yaml",
        home / ".halctl" / "config.json",
    ]
    return list(dict.fromkeys(paths))


def _quick_schema_problems(data: Mapping[str, Any]) -> list[Problem]:
    """The subset of JSON Schema the flat CLI schema uses: type, enum, pattern, minLength, unknown keys."""
    props: dict[str, dict[str, Any]] = load_schema("cli")["properties"]
    problems = []
    for key, value in data.items():
        path = format_path([key])
        rule = props.get(key)
        if rule is None:
            problems.append(Problem(path, "unknown key", "warning"))
        elif "enum" in rule and value not in rule["enum"]:
            problems.append(Problem(path, f"must be one of {', '.join(rule['enum'])} (got {value!r})"))
        elif "type" in rule and not isinstance(value, _PY_TYPES[rule["type"]]):
            problems.append(Problem(path, f"must be {TYPE_NAMES[rule['type']]} (got {json_type(value)})"))
        elif isinstance(value, str) and len(value) < rule.get("minLength", 0):
            problems.append(Problem(path, "must not be empty"))
        elif isinstance(value, str) and "pattern" in rule and not re.search(rule["pattern"], value):
            problems.append(Problem(path, f"{rule.get('errorMessage', 'has a bad format')} (got {value!r})"))
    return problems


def parse_cli_config(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source_path: str | os.PathLike[str] | None = None,
) -> tuple[CliConfig, list[Problem]]:
    """Check and type an in-memory CLI document; `ConfigError` on errors, else (config, warnings)."""
    env = {} if env is None else env
    semantic, secrets = cli_checks(data, env, source_path)
    problems = sort_problems(_quick_schema_problems(data) + semantic + file_permission_problems(data, source_path))
    if any(p.is_error for p in problems):
        raise ConfigError(problems)
    doc = apply_defaults(load_schema("cli"), dict(data))
    output = data.get("output") or data.get("format") or doc["output"]  # Go's `format` is the fallback
    config = CliConfig(
        supervisor_url=doc["supervisor_url"],
        auth_token=secrets["auth_token"].value,
        output=output,
        source_path=os.fspath(source_path) if source_path is not None else None,
        raw=doc,
    )
    return config, problems


def load_cli_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] = os.environ,
) -> tuple[CliConfig, list[Problem]]:
    """Load halctl's config. With no `path`, the first existing file of `cli_config_candidates()`
    is used and none at all means defaults. An explicit `path` that is missing is an error.
    The token resolves as env `HALCTL_AUTH_TOKEN` > `auth_token_file` > `auth_token`."""
    if path is None:
        found = next((p for p in cli_config_candidates(env) if p.is_file()), None)
        if found is None:
            return parse_cli_config({}, env=env)
        path = found
    return parse_cli_config(read_config_file(path), env=env, source_path=path)
