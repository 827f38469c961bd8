"""`--validate` / `halctl config validate`: one `PATH: message` line per problem, exit 0 or 1."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from halswarm.config.errors import ConfigError
from halswarm.config.loader import read_config_file
from halswarm.config.problems import render
from halswarm.config.schemas import KINDS, Kind
from halswarm.config.validate import detect_kind, validate_data


def _kind_from_name(path: str | os.PathLike[str]) -> Kind | None:
    """Fallback when the keys say nothing (e.g. `{}`): the file name usually does."""
    text = str(Path(path)).lower()
    for hint, kind in (("supervisor", "supervisor"), ("agent", "agent"), ("manifest", "manifest"), ("halctl", "cli")):
        if hint in text:
            return kind  # type: ignore[return-value]
    return None


def run_validate(
    path: str | os.PathLike[str],
    kind: str | None = None,
    *,
    strict: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Validate one file and print the report; returns 0 when valid, 1 when not.

    Problems go to `out` (default stdout) as `PATH: message`, warnings ending in `(warning)`;
    success prints `OK: <file> is a valid <kind> config`; failure adds one summary line on `err`
    (default stderr). `env` defaults to the process environment (for `HAL_AUTH_TOKEN`).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    env = os.environ if env is None else env
    name = os.fspath(path)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown config kind {kind!r} (expected one of {', '.join(KINDS)})")
    try:
        data = read_config_file(path)
        if kind is None:
            try:
                kind = detect_kind(data)
            except ConfigError:
                kind = _kind_from_name(path)
                if kind is None:
                    raise
    except ConfigError as exc:
        for problem in exc.problems:
            print(render(problem), file=out)
        print(f"error: {name} is not a valid config", file=err)
        return 1
    problems = validate_data(kind, data, strict=strict, source_path=path, env=env)
    for problem in problems:
        print(render(problem), file=out)
    errors = sum(p.is_error for p in problems)
    if errors:
        noun = "error" if errors == 1 else "errors"
        print(f"error: {name} is not a valid {kind} config ({errors} {noun})", file=err)
        return 1
    print(f"OK: {name} is a valid {kind} config", file=out)
    return 0
