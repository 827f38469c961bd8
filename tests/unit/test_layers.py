"""Layer rules import-linter cannot see (issue 16): SQL text lives only in `halswarm/store`, and no
supervisor function registers HTTP routes as closures (routes are module-level handlers on a router)."""

from __future__ import annotations

import ast
from pathlib import Path

import halswarm

PACKAGE = Path(halswarm.__file__).parent
SQL_CALLS = {"execute", "executemany", "executescript"}
# The agent's outbox is the agent's own durable queue (one file, one table), not the supervisor's store.
SQL_ALLOWED = ("store/", "agent/outbox.py")
ROUTE_DECORATORS = {"get", "post", "put", "delete", "patch", "api_route", "websocket"}


def _modules(under: str = "") -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_sql_only_in_the_store() -> None:
    found = []
    for path in _modules():
        if _rel(path).startswith(SQL_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                found.append(f"{_rel(path)}:{node.lineno} .{node.func.attr}(...)")
    assert not found, "SQL outside halswarm/store (put it in store/repos/):\n" + "\n".join(found)


def test_no_route_is_registered_inside_a_function() -> None:
    found = []
    for path in _modules("supervisor"):
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(fn):
                if inner is fn or not isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for dec in inner.decorator_list:
                    call = dec.func if isinstance(dec, ast.Call) else dec
                    if isinstance(call, ast.Attribute) and call.attr in ROUTE_DECORATORS:
                        found.append(f"{_rel(path)}:{inner.lineno} {inner.name} (inside {fn.name})")
    assert not found, "routes registered as closures (use a module-level APIRouter):\n" + "\n".join(found)
