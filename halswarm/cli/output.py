"""Rendering of command results as table (rich), json or yaml.

`rich` and `yaml` are imported only when a table or YAML is actually printed, to keep start-up fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

MISSING = "-"
NON_TTY_WIDTH = 100_000  # never wrap or truncate in a pipe
# On a terminal only free-text columns wrap; ids, statuses and timestamps stay on one line.
WRAPPABLE_COLUMNS = frozenset({"VALUE", "DATA", "ERROR", "TARGET", "PROJECTS", "CURRENT_TASK"})


_line_mode = False


def set_line_mode(on: bool) -> None:
    """Pipe rule (set by AppContext.output): no explicit format and stdout is not a terminal."""
    global _line_mode
    _line_mode = on


def line_mode() -> bool:
    return _line_mode


def as_line(columns: Sequence[str], row: Sequence[Any]) -> str:
    """One item as `key: value` fields on one line (`node_id: n1  status: idle`), for grep and wc -l.

    Keys are the lower-cased column names; values are single-line, with blanks collapsed."""
    fields = []
    for name, cell in zip(columns, row, strict=False):
        text = cell if isinstance(cell, str) else fmt_value(cell)
        fields.append(f"{name.lower()}: {' '.join(text.split()) or MISSING}")
    return "  ".join(fields)


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# -- value formatting ----------------------------------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    """ISO-8601 string or unix seconds (float/int, or milliseconds if huge) -> aware UTC datetime."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds <= 0:
            return None
        if seconds > 1e11:  # milliseconds
            seconds /= 1000.0
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_time(float(text))
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            return None
        if parsed.year <= 1:  # Go zero time
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    return None


def fmt_time(value: Any) -> str:
    """`YYYY-MM-DD HH:MM:SS` (UTC) for tables; unparsable text is shown as it came."""
    parsed = parse_time(value)
    if parsed is None:
        return MISSING if value in (None, "", 0) or isinstance(value, int | float) else str(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def fmt_value(value: Any) -> str:
    """A compact one-line text for any JSON value."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(fmt_value(v.get("name", v) if isinstance(v, Mapping) else v) for v in value) or MISSING
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) or MISSING
    return str(value)


def fmt_cost(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return MISSING


def truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- printers -------------------------------------------------------------------------------------
def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_yaml(data: Any) -> None:
    import yaml

    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A rich table; in a pipe: no colour, no box, no wrapping, no trailing blanks (grep/awk friendly).

    In line mode (a pipe, no format chosen) one `key: value` line per row and no header."""
    if _line_mode:
        for row in rows:
            click.echo(as_line(columns, row))
        return
    import io
    import shutil

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = stdout_is_tty()
    table = Table(
        box=box.SIMPLE_HEAD if tty else None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0) if tty else (0, 1),
        header_style="bold" if tty else "",
        highlight=False,
    )
    for name in columns:
        wrap = tty and name in WRAPPABLE_COLUMNS
        table.add_column(name, overflow="fold" if wrap else "ellipsis", no_wrap=not wrap)
    for row in rows:
        table.add_row(*(Text(cell if isinstance(cell, str) else fmt_value(cell)) for cell in row))
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=shutil.get_terminal_size().columns if tty else NON_TTY_WIDTH,
        force_terminal=tty,
        color_system="auto" if tty else None,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    console.print(table)
    text = "\n".join(line.rstrip() for line in buf.getvalue().splitlines() if tty or line.strip())
    click.echo(text)


def print_fields(rows: Iterable[tuple[str, Any]]) -> None:
    """FIELD/VALUE table for one object; in line mode one `field: value` line per field."""
    if _line_mode:
        for name, value in rows:
            text = value if isinstance(value, str) else fmt_value(value)
            click.echo(f"{name.lower()}: {' '.join(text.split()) or MISSING}")
        return
    print_table(("FIELD", "VALUE"), ((name, value if isinstance(value, str) else fmt_value(value))
                                     for name, value in rows))


def emit(fmt: str, data: Any, table: Callable[[], None]) -> None:
    """Print `data` as json/yaml, or call `table()` to print the human view."""
    if fmt == "json":
        print_json(data)
    elif fmt == "yaml":
        print_yaml(data)
    else:
        table()


def extra_fields(obj: Mapping[str, Any], known: Iterable[str]) -> list[tuple[str, Any]]:
    """FIELD rows for keys a table view does not already show (nested dicts flattened with dots)."""
    skip = set(known)
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}", sub)
        else:
            rows.append((prefix.upper(), value))

    for key, value in obj.items():
        if key not in skip:
            walk(key, value)
    return rows


def note(message: str) -> None:
    """An informational line on stderr (keeps stdout clean for pipes)."""
    click.echo(message, err=True)
