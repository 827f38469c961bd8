"""Template rendering, diffs and the provisioned env file."""

from __future__ import annotations

from pathlib import Path

import pytest

from halswarm.agent.env.envfile import EnvFile
from halswarm.core.manifest.templates import doc_stub, project_variables, render, unified_diff


def test_render_replaces_known_placeholders_only() -> None:
    variables = project_variables("p", {"model": "m"})
    out = render("# {{ project }} / {{PROJECT_NAME}}\n{{unknown}} {{model}}\n\n\n", variables)
    assert out == "# p / p\n{{unknown}} m\n"
    assert render("no newline", {}) == "no newline\n"
    assert render("a\r\nb", {}) == "a\nb\n"


def test_unified_diff_and_stub() -> None:
    assert unified_diff("same\n", "same\n", "AGENT.md") == ""
    d = unified_diff("a\nb\n", "a\nc\n", "AGENT.md")
    assert d.splitlines() == ["--- a/AGENT.md (local)", "+++ b/AGENT.md (template)", "@@ -1,2 +1,2 @@", " a", "-b",
                              "+c"]
    assert "\\ No newline at end of file" in unified_diff("x", "y\n", "f")
    assert doc_stub("docs/RUNBOOK.md") == "# RUNBOOK\n" and doc_stub("LICENSE") == "# LICENSE\n"


def test_env_file_roundtrip(tmp_path: Path) -> None:
    f = EnvFile(tmp_path / "env" / "p.env")
    assert f.load() == {}
    assert f.set("MODE", "ci") is True
    assert f.set("MODE", "ci") is False
    assert f.set("TRICKY", 'a "quoted" $HOME `x` \\ value') is True
    assert f.load() == {"MODE": "ci", "TRICKY": 'a "quoted" $HOME `x` \\ value'}
    assert f.path.stat().st_mode & 0o777 == 0o600
    text = f.path.read_text()
    assert 'MODE="ci"' in text and "\\$HOME" in text
    with pytest.raises(ValueError):
        f.set("BAD NAME", "x")


def test_merge_rule_for_several_projects() -> None:
    from halswarm.agent.env.procenv import merge_project_env

    merged, conflicts = merge_project_env({"b": {"X": "1", "S": "b", "SAME": "v"}, "a": {"S": "a", "SAME": "v"},
                                           "c": {}})
    assert merged == {"X": "1", "SAME": "v"}  # a conflicting var is passed for no project
    assert conflicts == {"S": ["a", "b"]}
