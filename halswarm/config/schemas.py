"""Access to the shipped JSON Schemas, plus the schema walks the validator and loaders need.

Only `json` and the standard library are imported here: `jsonschema` itself is imported lazily by
`halswarm.config.validate`, so `halctl` starts fast.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

Kind = Literal["supervisor", "agent", "cli", "manifest"]
KINDS: tuple[Kind, ...] = ("supervisor", "agent", "cli", "manifest")

Schema = dict[str, Any]

# Marks a property that is another name for a sibling (`auto_intervention` -> `policies`).
ALIAS_KEYWORD = "x-alias-of"

# Subschemas that describe a *condition*, not a shape: closing them would change their meaning.
_NO_CLOSE = frozenset({"if", "not", "propertyNames", "contains"})


@cache
def _load(kind: str) -> Schema:
    if kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r} (expected one of {', '.join(KINDS)})")
    text = resources.files("halswarm.schemas").joinpath(f"{kind}.schema.json").read_text("utf-8")
    return json.loads(text)


def load_schema(kind: str) -> Schema:
    """The shipped schema for `kind` (a fresh copy: callers may mutate it)."""
    return copy.deepcopy(_load(kind))


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key, value in node.items():
            if key not in _NO_CLOSE:
                _close(value)
    elif isinstance(node, list):
        for item in node:
            _close(item)


@cache
def _closed(kind: str) -> Schema:
    schema = copy.deepcopy(_load(kind))
    _close(schema)
    return schema


def closed_schema(kind: str) -> Schema:
    """Copy of the schema where every object with `properties` (and no explicit
    `additionalProperties`) rejects other keys; used to report unknown keys with their paths."""
    return _closed(kind)


def resolve(node: Schema, root: Schema) -> Schema:
    """Follow a local `$ref` (`#/$defs/name`); sibling keywords override the target's."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = {**resolve(target, root), **node}
    merged.pop("$ref", None)
    return merged


def _allows_object(node: Schema) -> bool:
    types = node.get("type")
    return types == "object" or (isinstance(types, list) and "object" in types)


def apply_defaults(schema: Schema, value: Any, root: Schema | None = None) -> Any:
    """Fill `default`s into `value` in place (and return it).

    Missing (or null) objects whose schema has properties are created when they hold defaults,
    so that `{}` becomes the full default document.
    """
    root = schema if root is None else root
    node = resolve(schema, root)
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            apply_defaults(node["items"], item, root)
        return value
    if not isinstance(value, dict):
        return value
    props: dict[str, Schema] = node.get("properties", {})
    for key, sub in props.items():
        sub_node = resolve(sub, root)
        if key in value and not (value[key] is None and _allows_object(sub_node)):
            apply_defaults(sub_node, value[key], root)
        elif ALIAS_KEYWORD in sub_node:
            continue  # an alias never gets defaults of its own; its target does
        elif "default" in sub_node:
            value[key] = apply_defaults(sub_node, copy.deepcopy(sub_node["default"]), root)
        elif _allows_object(sub_node) and "properties" in sub_node:
            filled = apply_defaults(sub_node, {}, root)
            if filled:  # only materialise objects that carry defaults
                value[key] = filled
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key, item in value.items():
            if key not in props:
                apply_defaults(extra, item, root)
    return value


def defaults(kind: str) -> dict[str, Any]:
    """The document an empty file stands for: every schema default filled in."""
    return apply_defaults(_load(kind), {})
