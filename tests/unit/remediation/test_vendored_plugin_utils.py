"""The collection's plugin_utils copy of the remediation rules matches the package's source, and the
filter plugin uses that copy only (a controller with the collection alone can plan a remediation)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FILTER = ROOT / "collections/ansible_collections/halswarm/ops/plugins/filter/remediation_plan.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("vendor_collection", ROOT / "scripts" / "vendor_collection.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_vendored_copies_are_current():
    script = _load_script()
    for module, name in script.SOURCES.items():
        target = script.PLUGIN_UTILS / name
        assert target.read_text() == script.render(module), f"{target} is stale: run scripts/vendor_collection.py"


def test_vendored_copies_import_nothing_from_the_package():
    script = _load_script()
    for name in [*script.SOURCES.values()]:
        tree = ast.parse((script.PLUGIN_UTILS / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("halswarm"), f"{name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("halswarm") for a in node.names), name


def test_filter_imports_only_the_collection():
    tree = ast.parse(FILTER.read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and m.startswith("halswarm")], modules
    assert "ansible_collections.halswarm.ops.plugins.plugin_utils.remediation_planners" in modules


def test_vendored_planner_answers_like_the_package(monkeypatch):
    """Load the copies as Ansible would (ansible_collections namespace, no halswarm on the path)."""
    from halswarm.core.remediation.planners import plan

    base = ROOT / "collections"
    monkeypatch.syspath_prepend(str(base))
    for mod in [m for m in sys.modules if m.startswith("ansible_collections.halswarm")]:
        monkeypatch.delitem(sys.modules, mod)
    before = set(sys.modules)
    try:
        from ansible_collections.halswarm.ops.plugins.plugin_utils import remediation_planners as vendored

        facts = {"service": {"load_state": "loaded", "active_state": "failed", "sub_state": "failed",
                             "n_restarts": 3}}
        assert vendored.plan("agent-crashed", facts).to_dict() == plan("agent-crashed", facts).to_dict()
    finally:
        for mod in set(sys.modules) - before:  # leave no ansible_collections package behind
            del sys.modules[mod]
