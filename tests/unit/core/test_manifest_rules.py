"""The manifest safety rules (pure): git config allowlist, hook names, path confinement (lexical),
template names, probe program names, remote names; and ``safety_problems`` over both manifest formats."""

from __future__ import annotations

import pytest

from halswarm.core.manifest.requirements import VersionReq, safety_problems, template_ref_refusal
from halswarm.core.manifest_rules import (
    env_var_refusal,
    git_config_refusal,
    git_hook_refusal,
    inside,
    program_name_refusal,
    relative_path_refusal,
    remote_name_refusal,
    remote_url_refusal,
    template_name_refusal,
)
from halswarm.core.probe_rules import NOT_KNOWN, RUNTIME_PROBES, probe_table


@pytest.mark.parametrize("key", ["user.name", "user.email", "core.autocrlf", "Core.AutoCRLF", "core.eol",
                                 "init.defaultBranch", "pull.rebase", "push.default", "merge.ff"])
def test_allowed_git_config_keys(key: str) -> None:
    assert git_config_refusal(key, "x") is None or key.lower().endswith("gpgsign")


@pytest.mark.parametrize("key", [
    "core.fsmonitor", "CORE.FSMONITOR", "core.hooksPath", "core.sshCommand", "core.pager", "core.editor",
    "core.askPass", "sequence.editor", "diff.external", "gpg.program", "merge.tool.cmd", "alias.st",
    "include.path", "includeIf.gitdir:/x.path", "filter.lfs.clean", "diff.x.textconv", "credential.helper",
    "url.https://evil/.insteadOf", "http.proxy", "remote.origin.uploadpack", "pager.log", "core.gitProxy",
    "receive.procReceiveRefs", "uploadpack.packObjectsHook", "user.name.evil", ""])
def test_refused_git_config_keys(key: str) -> None:
    why = git_config_refusal(key, "x")
    assert why is not None and repr(key) in why


def test_gpgsign_only_false() -> None:
    assert git_config_refusal("commit.gpgsign", "false") is None
    assert git_config_refusal("commit.gpgsign", "required") is None
    assert "only be set to false" in (git_config_refusal("commit.gpgsign", "true") or "")


def test_hook_and_remote_and_program_names() -> None:
    assert git_hook_refusal("pre-commit") is None
    assert git_hook_refusal("../../x") and git_hook_refusal("fsmonitor-watchman") and git_hook_refusal("")
    assert remote_name_refusal("origin") is None and remote_name_refusal("up-stream.2") is None
    assert remote_name_refusal("--mirror=fetch") and remote_name_refusal("a b") and remote_name_refusal("")
    assert program_name_refusal("cmake") is None and program_name_refusal("g++") is None
    for bad in ("/bin/sh", "../x", "-rf", "a b", "", "sh;id"):
        assert program_name_refusal(bad), bad


@pytest.mark.parametrize("path", ["README.md", ".context/", ".context/PROGRESS.md", "docs/a/b.md", "./x"])
def test_paths_inside_the_project(path: str) -> None:
    assert relative_path_refusal(path) is None


@pytest.mark.parametrize(("path", "why"), [
    ("../x", "leaves the project"), ("a/../../x", "leaves the project"), ("a/..", "leaves the project"),
    ("/etc/passwd", "absolute"), ("~/x", "absolute"), ("", "empty"), (".", "project directory itself"),
    (".git/hooks/pre-commit", "inside .git"), ("a\\..\\..\\x", "backslash"), ("a\0b", "NUL")])
def test_paths_refused(path: str, why: str) -> None:
    assert why in (relative_path_refusal(path) or "")


def test_inside() -> None:
    assert inside("/srv/p", "/srv/p") and inside("/srv/p", "/srv/p/a/b") and inside("/", "/x")
    assert not inside("/srv/p", "/srv/p2/x") and not inside("/srv/p", "/srv") and not inside("/srv/p", "/etc")


def test_template_names() -> None:
    assert template_name_refusal("AGENT.md") is None and template_name_refusal("rust-agent_v2.md") is None
    for bad in ("/etc/passwd", "../x", "..", ".hidden", "a/b", "", "x" * 129):
        assert template_name_refusal(bad), bad
    assert template_ref_refusal("AGENT.md") is None and template_ref_refusal("templates/x/AGENT.md") is None
    for bad in ("/abs/path", "../x", "templates/../supervisor.config.json", "x//y", "templates/"):
        assert template_ref_refusal(bad), bad


def test_version_probe_is_the_nodes_fixed_argv() -> None:
    table = probe_table({"codex": ("codex", "--version")}, {"cmake": ["cmake", "--version"]})
    assert VersionReq("tools", "cmake").probe_in(table) == ("cmake", "--version")
    assert VersionReq("runtime", "java").probe_in(table) == ("java", "-version")
    assert VersionReq("tools", "codex").probe_in(table) == ("codex", "--version")
    # a plain program name the node does not list is never probed: the manifest cannot pick a program
    assert VersionReq("tools", "reboot").probe_in(table) is None
    assert VersionReq("tools", "cmake").probe_in(RUNTIME_PROBES) is None
    assert VersionReq("tools", "reboot").unprobed_reason == NOT_KNOWN
    custom = VersionReq("tools", "cmake", command=("sh", "-c", "touch /tmp/x"))
    assert custom.probe_in(table) is None and "approval" in custom.unprobed_reason
    assert custom.approval_check == ("sh", "-c", "touch /tmp/x")
    assert VersionReq("tools", "/usr/bin/evil").probe_in(table) is None
    # the node's own config may point a known name at another binary
    assert probe_table({}, {"python": ["/opt/py/bin/python3", "-V"]})["python"] == ("/opt/py/bin/python3", "-V")


def test_safety_problems_in_both_formats() -> None:
    spec = {"version": "1.0", "defaults": {"git": {"config": {"core.fsmonitor": "touch /tmp/x"}}},
            "projects": {"p": {"context": {"files": ["../outside.md"]}, "docs": {"required": ["/etc/x"]},
                               "agent_config": {"context_dir": "../ctx", "required_docs": ["ok.md"]},
                               "git": {"remote": {"name": "--upload-pack=x", "url": "https://x"},
                                       "config": {"user.name": "bot", "alias.st": "!sh"}},
                               "tools": {"evil": {"command": ["sh", "-c", "id"]}, "cmake": ">=3"}}}}
    errors, warnings = safety_problems(spec)
    assert [e.split(":")[0] for e in errors] == [
        "defaults.git.config", "projects.p.git.config", "projects.p.git.remote.name",
        "projects.p.context.files[0]", "projects.p.docs.required[0]", "projects.p.agent_config.context_dir[0]"]
    assert "'core.fsmonitor' is not allowed" in errors[0] and "'alias.st' is not allowed" in errors[1]
    assert [w.split(":")[0] for w in warnings] == ["projects.p.tools.cmake", "projects.p.tools.evil"]
    assert "env.probe_tools" in warnings[0] and "needs approval" in warnings[0]
    assert "not probed by env checks (the manifest gives its own probe command" in warnings[1]
    go = {"version": "1.0", "requirements": {"git": {"config": {"core.hooksPath": "/tmp"}}},
          "projects": {"q": {"requirements": {"docs": {"required": ["a/../../b"]}}}}}
    errors, _ = safety_problems(go)
    assert [e.split(":")[0] for e in errors] == ["requirements.git.config", "projects.q.requirements.docs.required[0]"]
    assert safety_problems({"version": "1.0", "projects": {"p": {"git": {"config": {"core.autocrlf": "input"}},
                                                                 "context": {"files": [".context/a.md"]}}}}) == ([], [])


def test_env_vars_that_load_code_are_refused() -> None:
    for name in ("LD_PRELOAD", "ld_library_path", "DYLD_INSERT_LIBRARIES", "NODE_OPTIONS", "PYTHONPATH", "BASH_ENV",
                 "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "PATH", "JAVA_TOOL_OPTIONS", "OPENCODE_CONFIG_CONTENT"):
        assert env_var_refusal(name), name
    for name in ("ANDROID_HOME", "CI", "DATABASE_URL", "GITHUB_TOKEN", "NODE_ENV", "PYTHONUNBUFFERED"):
        assert env_var_refusal(name) is None, name
    doc = {"version": "1.0", "projects": {"p": {"env_vars": {"LD_PRELOAD": "/tmp/x.so", "NODE_OPTIONS": "required",
                                                             "CI": "1"}}}}
    errors, _ = safety_problems(doc)
    assert errors == ["projects.p.env_vars.LD_PRELOAD: environment variable LD_PRELOAD may not be set by the "
                      "manifest (it can make programs run other code)"]  # "required" only checks it is set


def test_remote_urls() -> None:
    for ok in ("https://git.example/x.git", "git@host:team/x.git", "ssh://git@host/x", "/srv/git/x.git"):
        assert remote_url_refusal(ok) is None, ok
    for bad in ("ext::sh -c touch% /tmp/x", "fd::17", "--upload-pack=touch /tmp/x", "https://x\nfoo"):
        assert remote_url_refusal(bad), bad
    doc = {"version": "1.0", "projects": {"p": {"git": {"remote": "ext::sh -c id"}}}}
    assert safety_problems(doc)[0][0].startswith("projects.p.git.remote: git remote URL 'ext::sh -c id'")
