"""Defence in depth on the agent, with real git and real files in tmp: a manifest that reaches the agent
without the supervisor's validation (a project's own ``env-manifest.json``, or a supervisor that would send
one) still cannot set a non-allowlisted git config key, write a hook, run a probe command or write outside
the project; a forged plan action is refused by ``apply_actions`` itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from halswarm.agent.env import NodeEnvService
from halswarm.agent.env.apply import apply_actions
from halswarm.agent.env.envfile import EnvFile
from halswarm.agent.env.model import Action
from halswarm.agent.env.paths import PathRefused, confine, hooks_dir
from halswarm.protocol import Command, CommandTarget
from tests.support.projects import git, make_repo, tool_env

pytestmark = pytest.mark.process  # runs git


def cmd(ctype: str, project: str | None = None, **args: object) -> Command:
    return Command(f"c-{ctype}-{time.monotonic_ns()}", ctype, CommandTarget(project=project), dict(args))


async def test_an_unvalidated_manifest_plants_nothing(tmp_path: Path) -> None:
    env = tool_env(tmp_path / "tools")
    repo = make_repo(tmp_path / "p", env)
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "PWNED"
    (repo / "env-manifest.json").write_text(json.dumps({"version": "1.0", "requirements": {
        "tools": {"x": {"command": ["sh", "-c", f"touch {marker}"]}},
        "git": {"remote": f"ext::sh -c touch% {marker}", "hooks": ["pre-commit"],
                "config": {"core.fsmonitor": f"touch {marker}", "alias.s": "!sh",
                           "commit.gpgsign": "true", "core.autocrlf": "input"}},
        "docs": {"required": ["../outside/a.md", str(outside / "b.md"), "README.md"]},
        "context": {"files": ["../outside/c.md"]}, "env_vars": {"LD_PRELOAD": "/tmp/evil.so", "HAL_OK": "1"}}}))
    svc = NodeEnvService(projects=lambda: {"p": str(repo)}, data_dir=tmp_path / "data", base_env=env)
    h = svc.handlers()
    r = await h["env_provision"](cmd("env_provision", "p"))
    assert r.status == "success", r.error
    out = r.output
    assert out["source"] == "project_file"
    assert sorted(out["changes"]) == ["env_vars:HAL_OK:env_set", "git:config.core.autocrlf:git_config"]
    assert svc.managed_env() == {"HAL_OK": "1"}
    items = {f"{i['category']}:{i['item']}": i for i in out["check"]["details"]["drift"]}
    for key in ("git:remote.origin", "git:config.core.fsmonitor", "git:config.alias.s", "git:config.commit.gpgsign",
                "env_vars:LD_PRELOAD", "docs:../outside/a.md", f"docs:{outside / 'b.md'}", "context:../outside/c.md"):
        assert items[key]["actual"] == "refused" and items[key]["status"] == "fail", items[key]
    assert items["tools:x"]["actual"] == "not probed"
    assert [p["id"] for p in out["details"]["pending"]] == ["p:tools:x", "p:git:hooks/pre-commit"]
    assert list(outside.iterdir()) == [] and not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert git(repo, "config", "--get", "core.autocrlf", env=env).strip() == "input"
    config = (repo / ".git" / "config").read_text()
    assert "fsmonitor" not in config and "alias" not in config and "gpgsign" not in config
    git(repo, "status", env=env)
    assert git(repo, "remote", env=env) == "" and not marker.exists()


async def test_apply_refuses_a_forged_plan(tmp_path: Path) -> None:
    env = tool_env(tmp_path / "tools")
    repo = make_repo(tmp_path / "p", env)
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "link").symlink_to(outside, target_is_directory=True)
    actions = [Action("docs", "x", "create", str(outside / "x.md"), "x", 0o644),
               Action("docs", "y", "create", str(repo / "link" / "y.md"), "y", 0o644),
               Action("context", "d", "mkdir", str(repo / "link" / "d"), mode=0o755),
               Action("git", "config.core.fsmonitor", "git_config", str(repo), args=("core.fsmonitor", "x")),
               Action("git", "remote.x", "git_remote_add", str(repo), args=("--upload-pack=x", "https://x")),
               Action("env_vars", "LD_PRELOAD", "env_set", args=("LD_PRELOAD", "/tmp/x.so")),
               Action("docs", "ok", "create", str(repo / "ok.md"), "ok\n", 0o644)]
    applied, errors = await apply_actions(actions, env_file=EnvFile(tmp_path / "e.env"), env=env, root=str(repo))
    assert [a["item"] for a in applied] == ["ok"]
    assert len(errors) == 6 and all(("outside the project" in e or "not allowed" in e or "may not be set" in e)
                                    for e in errors), errors
    assert list(outside.iterdir()) == [] and "fsmonitor" not in (repo / ".git" / "config").read_text()


def test_confine_and_hooks_dir(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "sub").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path, target_is_directory=True)
    (root / "in").symlink_to(root / "sub", target_is_directory=True)
    assert confine(str(root), "sub/./a.md") == str(root / "sub" / "a.md")
    assert confine(str(root), "in/a.md") == str(root / "in" / "a.md")  # a symlink that stays inside
    for rel in ("out/a.md", "../a.md", "/etc/passwd", ".git/hooks/pre-commit"):
        try:
            confine(str(root), rel)
        except PathRefused:
            continue
        raise AssertionError(rel)
    try:
        hooks_dir(str(root))  # no .git in the project
        raise AssertionError("no .git")
    except PathRefused as exc:
        assert "not a directory of the project" in str(exc)
    (root / ".git").mkdir()
    (root / ".git" / "hooks").symlink_to(tmp_path, target_is_directory=True)
    try:
        hooks_dir(str(root))
        raise AssertionError("hooks symlink")
    except PathRefused as exc:
        assert "outside the project" in str(exc)
