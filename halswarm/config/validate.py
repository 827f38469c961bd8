"""Validation of config documents: JSON Schema pass (all errors, unknown keys with their paths)
followed by the semantic checks of `halswarm.config.semantic`.

`jsonschema` is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from halswarm.config.errors import ConfigError
from halswarm.config.problems import ROOT, TYPE_NAMES, Problem, Severity, format_path, json_type, sort_problems
from halswarm.config.schemas import KINDS, Kind, closed_schema
from halswarm.config.secrets import file_permission_problems
from halswarm.config.semantic import CHECKS, Secrets

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

__all__ = ["Kind", "Problem", "check_document", "detect_kind", "validate_data"]

def _show(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bound(kind: str, value: Any, schema: Mapping[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f"must be between {lo} and {hi}"
    return f"must be >= {value}" if kind == "minimum" else f"must be <= {value}"


def _message(error: ValidationError) -> str:
    """An operator-friendly message for one jsonschema error (the path is rendered apart)."""
    # jsonschema types these fields as maybe `Unset` (for errors built by hand); a validator's errors
    # carry them all, and the schema values are arbitrary JSON.
    kind: Any = error.validator
    value: Any = error.validator_value
    inst: Any = error.instance
    schema: Any = error.schema
    custom = schema.get("errorMessage") if isinstance(schema, Mapping) else None
    if "propertyNames" in error.schema_path:
        return custom or f"key {inst!r} is not allowed"
    if kind == "type":
        types: list[str] = value if isinstance(value, list) else [value]
        wanted = " or ".join(TYPE_NAMES.get(t, t) for t in types)
        return f"must be {wanted} (got {json_type(inst)})"
    if kind in ("minimum", "maximum"):
        return f"{_bound(kind, value, schema)} (got {_show(inst)})"
    if kind == "exclusiveMinimum":
        return f"must be greater than {value} (got {inst})"
    if kind == "exclusiveMaximum":
        return f"must be less than {value} (got {inst})"
    if kind == "enum":
        return f"{custom or 'must be one of ' + ', '.join(map(str, value))} (got {_show(inst)})"
    if kind == "const":
        return f"must be {_show(value)}"
    if kind == "minLength":
        return "must not be empty" if value == 1 else f"must be at least {value} characters"
    if kind == "maxLength":
        return f"must be at most {value} characters"
    if kind == "pattern":
        return f"{custom} (got {_show(inst)})" if custom else f"must match {value} (got {_show(inst)})"
    if kind == "uniqueItems":
        return "must not contain duplicates"
    if kind == "minItems":
        return "must not be empty" if value == 1 else f"must have at least {value} items"
    if kind == "maxItems":
        return f"must have at most {value} items"
    return custom or error.message


def _unknown_keys(error: ValidationError, base: list[str | int], severity: Severity) -> Iterator[Problem]:
    import difflib

    schema: Any = error.schema  # an additionalProperties error: the object's schema, and the object
    inst: Any = error.instance
    known = list(schema.get("properties", {}))
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    for key in inst:
        if key in known or any(p.search(key) for p in patterns):
            continue
        hint = difflib.get_close_matches(key, known, n=1) or [
            k for k in known if len(key) >= 3 and (k.startswith(key) or key.startswith(k))
        ]
        message = f"unknown key (did you mean {hint[0]!r}?)" if hint else "unknown key"
        yield Problem(format_path([*base, key]), message, severity)


@cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator  # lazy: ~130 ms import

    return Draft202012Validator(closed_schema(kind))


def _schema_problems(kind: str, data: Mapping[str, Any], strict: bool) -> Iterator[Problem]:
    validator = _validator(kind)
    unknown: Severity = "error" if strict else "warning"
    for error in validator.iter_errors(data):
        base = list(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            yield from _unknown_keys(error, base, unknown)
        elif error.validator == "required":
            for name in error.validator_value:
                if isinstance(error.instance, Mapping) and name not in error.instance:
                    yield Problem(format_path([*base, name]), "is required")
        else:
            yield Problem(format_path(base), _message(error))


def check_document(
    kind: str,
    data: Any,
    *,
    strict: bool = False,
    source_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[list[Problem], Secrets]:
    """Like `validate_data`, also returning the resolved secrets (for the typed loaders)."""
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r} (expected one of {', '.join(KINDS)})")
    if not isinstance(data, Mapping):
        return [Problem(ROOT, f"top level must be an object, got {json_type(data)}")], {}
    problems = list(_schema_problems(kind, data, strict))
    semantic, secrets = CHECKS[kind](data, env or {}, source_path)
    problems += semantic
    if kind != "manifest":  # a manifest names env vars (`ANTHROPIC_API_KEY: required`), not values
        problems += file_permission_problems(data, source_path)
    return sort_problems(problems), secrets


def validate_data(
    kind: str,
    data: Any,
    *,
    strict: bool = False,
    source_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem of `data` as a `kind` config: schema errors (all of them), unknown keys
    (warnings, errors when `strict`), semantic rules, and the file's permissions when
    `source_path` is given. `env` (default: empty) supplies `HAL_AUTH_TOKEN`. Errors come first."""
    return check_document(kind, data, strict=strict, source_path=source_path, env=env)[0]


_SUPERVISOR_KEYS = frozenset({
    "server", "channels", "cost", "routes", "policies", "auto_intervention", "dependencies", "database",
    "storage", "retention", "security", "credentials", "remediation", "commands",
})
_AGENT_KEYS = frozenset({
    "opencode_port", "projects", "tool_paths", "opencode", "node_id", "auth_report_interval_sec",
    "data_dir", "outbox", "resume_message",
})
_CLI_KEYS = frozenset({"output", "format"})


def detect_kind(data: Any) -> Kind:
    """Tell the kind of a config document by its keys; `ConfigError` when it cannot be told."""
    if isinstance(data, Mapping):
        keys = set(data)
        if "requirements" in keys or ("version" in keys and isinstance(data.get("projects"), Mapping)):
            return "manifest"
        if keys & _SUPERVISOR_KEYS:
            return "supervisor"
        if keys & _AGENT_KEYS:
            return "agent"
        url = data.get("supervisor_url")
        if isinstance(url, str) and url.startswith(("ws://", "wss://")):
            return "agent"
        if isinstance(url, list) and url and all(isinstance(u, str) and u.startswith(("ws://", "wss://"))
                                                 for u in url):
            return "agent"  # several supervisors (failover): only the agent takes a list
        if keys & _CLI_KEYS or isinstance(url, str):
            return "cli"
    raise ConfigError.single(
        ROOT, "cannot tell which kind of config this is (supervisor, agent, cli or manifest)"
    )

