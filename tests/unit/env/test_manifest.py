"""Both manifest formats become per-project Requirements; project sections override (Go format too)."""

from __future__ import annotations

import json
from pathlib import Path

from halswarm.core.manifest.requirements import (
    GO,
    SPEC,
    detect_format,
    digest,
    requirements_for,
    split_name,
    template_refs,
)
from halswarm.core.manifest.templates import DEFAULT_AGENT_MD, render

GO_EXAMPLE = json.loads((Path(__file__).parents[2] / "fixtures/configs/go/env-manifest.example.json").read_text())


def test_go_example_with_project_override() -> None:
    assert detect_format(GO_EXAMPLE) == GO
    other = requirements_for(GO_EXAMPLE, "other")
    mine = requirements_for(GO_EXAMPLE, "my-project")
    assert {r.name: r.constraint for r in other.runtime} == {"java": ">=17", "node": ">=18.0.0", "python": ">=3.9"}
    assert {r.name: r.constraint for r in mine.runtime} == {"java": ">=17", "node": ">=20.0.0", "python": ">=3.9"}
    assert other.managed and mine.managed
    assert [(e.name, e.mode) for e in other.env_vars] == [("ANTHROPIC_API_KEY", "required"),
                                                          ("OPENAI_API_KEY", "optional")]
    assert other.context_files == ["README.md", "ARCHITECTURE.md"] and other.context_dirs == ["docs/"]
    assert other.git is not None and other.git.hooks == ("pre-commit", "commit-msg")
    assert dict(other.git.config) == {"user.email": "required", "user.name": "required"}
    assert other.docs_required == ["README.md", "CONTRIBUTING.md"] and other.docs_recommended == ["ARCHITECTURE.md"]
    assert other.agent_md and other.model == "claude-sonnet-4"
    # no templates in the Go example: the built-in one, rendered for the project
    assert other.agent_md_text == render(DEFAULT_AGENT_MD, {"project": "other", "model": "claude-sonnet-4"})
    assert "# AGENT.md: other" in other.agent_md_text


def test_go_project_override_replaces_lists_and_merges_maps() -> None:
    doc = {"version": "1.0", "requirements": {"tools": {"git": ">=2.30", "make": ""}, "docs": {"required": ["A.md"]}},
           "projects": {"p": {"requirements": {"tools": {"git": ">=2.40"}, "docs": {"required": ["B.md"]}}}}}
    req = requirements_for(doc, "p")
    assert {r.name: r.constraint for r in req.tools} == {"git": ">=2.40", "make": ""}
    assert req.docs_required == ["B.md"]


def test_spec_format_with_defaults_android_and_templates() -> None:
    doc = {
        "version": "1.0",
        "templates": {"AGENT.md": "default {{project}}", "templates/x/AGENT.md": "x for {{project}} on {{branch}}",
                      "hooks/pre-commit": "#!/bin/sh\n# {{hook}}\n"},
        "variables": {"branch": "main"},
        "defaults": {"tools": ["git>=2.30", "rg"], "env_vars": {"CI": "1"}},
        "projects": {
            "ai-os-interfaces": {
                "runtime": {"java": ">=17", "android_sdk": {"compile_sdk": 34, "build_tools": "34.0.0"},
                            "node": {"version": ">=20", "install": "nvm install 20"}},
                "tools": ["protoc", "aidl"],
                "env_vars": {"ANDROID_HOME": "/opt/android-sdk", "SECRET": "required",
                             "OPT": {"required": False}},
                "agent_config": {"AGENT.md": "templates/x/AGENT.md", "context_dir": ".context",
                                 "required_docs": ["INTERFACE_l0_l1.md"]},
                "git": {"remote": {"name": "upstream", "url": "git@proxmox:x.git"}, "branch": "main",
                        "hooks": ["pre-commit"]},
                "variables": {"branch": "dev"},
                "disk": {"min_free_gb": 5, "cleanup": "rm -rf build"},
            },
            "ai-os-l1": {"runtime": {"ndk": ">=26.1"}, "tools": ["cmake"], "native_libs": ["faiss",
                                                                                          {"name": "blas"}]},
        },
    }
    assert detect_format(doc) == SPEC
    assert template_refs(doc) == {'projects.ai-os-interfaces.agent_config["AGENT.md"]': "templates/x/AGENT.md"}
    r = requirements_for(doc, "ai-os-interfaces")
    assert [(t.name, t.constraint) for t in r.tools] == [("aidl", ""), ("protoc", "")]  # the list replaces defaults
    assert [(t.name, t.constraint, t.install) for t in r.runtime] == [("java", ">=17", ""),
                                                                      ("node", ">=20", "nvm install 20")]
    assert r.android is not None and r.android.platforms == ("android-34",) and r.android.build_tools == ("34.0.0",)
    assert [(e.name, e.mode, e.value) for e in r.env_vars] == [
        ("ANDROID_HOME", "value", "/opt/android-sdk"), ("CI", "value", "1"), ("OPT", "optional", None),
        ("SECRET", "required", None)]
    assert r.context_dirs == [".context/"]
    assert r.context_files == [".context/CURRENT_TASK.md", ".context/PROGRESS.md"]
    assert r.docs_required == ["INTERFACE_l0_l1.md"]
    assert r.git is not None and (r.git.remote_name, r.git.remote) == ("upstream", "git@proxmox:x.git")
    assert r.agent_md_text == "x for ai-os-interfaces on dev\n"  # project variables win
    assert r.hook_templates == {"pre-commit": "#!/bin/sh\n# {{hook}}\n"}
    assert r.disk is not None and r.disk.min_free_gb == 5 and r.disk.cleanup == "rm -rf build"
    l1 = requirements_for(doc, "ai-os-l1")
    assert [lib.name for lib in l1.native_libs] == ["faiss", "blas"]
    assert [(t.name, t.constraint) for t in l1.runtime] == [("ndk", ">=26.1")]
    assert not l1.agent_md and l1.agent_md_text == "default ai-os-l1\n"
    unknown = requirements_for(doc, "not-listed")
    assert unknown.managed and [t.name for t in unknown.tools] == ["git", "rg"]  # the defaults
    bare = requirements_for({"version": "1", "projects": {"a": {}}}, "b")
    assert not bare.managed and bare.tools == []


def test_missing_template_falls_back_and_is_flagged() -> None:
    doc = {"version": "1", "projects": {"a": {"agent_config": {"AGENT.md": "nowhere.md"}}}}
    r = requirements_for(doc, "a")
    assert r.template_missing == "nowhere.md" and r.agent_md_text.startswith("# AGENT.md: a")


def test_split_name_and_digest() -> None:
    assert split_name("cmake>=3.20") == ("cmake", ">=3.20")
    assert split_name("node@^20") == ("node", "^20")
    assert split_name("protoc") == ("protoc", "")
    assert digest({"a": 1, "b": [1]}) == digest({"b": [1], "a": 1})
