"""Issue 14, "manifest content is data, never a command": the attacks, against the real supervisor process
and a real agent-side NodeEnvService behind a real SupervisorConnection, on real git repositories in tmp.

- probe command injection: a tool whose ``command`` is ``sh -c 'touch ...'`` never runs during a check
  (nor a provision); it becomes a pending item that needs approval;
- a program picked by the manifest: a plain tool name on the node's PATH (a ``reboot`` stand-in) is not
  run unless the node's own ``env.probe_tools`` lists it; it becomes a pending item as well;
- git config and hook planting: ``core.fsmonitor``, ``core.hooksPath``, ``alias.*``, ``includeIf.*``...
  are refused at PUT (400 naming the key); hooks are never written by provisioning, only proposed;
- ``../`` and symlink escapes: refused at PUT, and a symlink inside the project that points outside is
  never written through (nor read back through ``agent-md``);
- template file read: ``/abs/path``, ``../x``, ``supervisor.config.json`` and a symlink out of the
  template directory are refused at PUT and never served by GET /env/manifest;
- a project inside another repository gets nothing written into the enclosing repository.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from halswarm.core.probe_rules import NOT_KNOWN
from tests.support.agent_side import EnvAgent
from tests.support.api import aclient, wait_api
from tests.support.projects import git, make_repo, probed, stand_in_tool, tool_env
from tests.support.supervisor_proc import InstalledSupervisorProc

NODE = "safety-node"


@dataclass
class Stack:
    sup: InstalledSupervisorProc
    agent: EnvAgent
    alpha: Path  # its own repository
    inner: Path  # a directory inside the repository ``outer``, not its own
    outer: Path
    outside: Path  # a directory outside every project
    env: dict[str, str]


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    env = tool_env(tmp_path / "tools")
    alpha = make_repo(tmp_path / "projects" / "alpha", env)
    outer = make_repo(tmp_path / "outer", env)
    inner = outer / "inner"
    inner.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    inventory = tmp_path / "inventory.yml"  # approved items run on this host through Ansible (local connection)
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {NODE: {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    sup = InstalledSupervisorProc(tmp_path / "sup", extra={"remediation": {"inventory": str(inventory)}})
    sup.start()
    stand_in_tool(tmp_path / "tools" / "bin", "hallisted", "1.5.0")
    agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha), "inner": str(inner)}, env,
                     probe_tools=probed("hallisted"))
    try:
        await agent.start()
        yield Stack(sup, agent, alpha, inner, outer, outside, env)
    finally:
        await agent.stop()
        sup.stop()


async def put(s: Stack, doc: dict[str, Any]) -> Any:
    async with aclient(s.sup) as c:
        return await c.put("/env/manifest", json=doc)


async def check(s: Stack, project: str) -> dict[str, dict[str, Any]]:
    async with aclient(s.sup) as c:
        r = await c.post(f"/env/check/{NODE}", json={"project": project})
    assert r.status_code == 200, r.text
    return {f"{i['category']}:{i['item']}": i for i in r.json()["data"]["results"][0]["details"]["drift"]}


async def provision(s: Stack, project: str) -> dict[str, Any]:
    async with aclient(s.sup) as c:
        r = await c.post(f"/env/provision/{NODE}", json={"project": project})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["data"]["results"][0]
    return result


async def test_a_probe_command_from_the_manifest_never_runs(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / f"PWNED-{secrets.token_hex(4)}"
    runtime_marker = tmp_path / f"PWNED-runtime-{secrets.token_hex(4)}"
    doc = {"version": "1.0", "projects": {"alpha": {
        "tools": {"evil": {"version": ">=1", "command": ["sh", "-c", f"touch {marker}"]},
                  "git": ">=2.0"},
        "runtime": {"python": {"version": ">=3", "command": f"sh -c 'touch {runtime_marker}'"}}}}}
    r = await put(stack, doc)
    assert r.status_code == 201, r.text
    # the manifest is pushed as an env check on change: wait until it has run, then check once more
    await wait_api(stack.sup, "/env/status", lambda d: any(x["project"] == "alpha" and x["checked_at"] for x in d))
    items = await check(stack, "alpha")
    assert not marker.exists() and not runtime_marker.exists()
    assert any(w.startswith("projects.alpha.tools.evil: not probed") for w in r.json()["data"]["warnings"])
    assert items["tools:evil"]["status"] == "warn" and items["tools:evil"]["actual"] == "not probed"
    assert "approval" in items["tools:evil"]["detail"]
    assert items["runtime:python"]["actual"] == "not probed"
    assert items["tools:git"]["status"] == "pass"  # a plain program name is probed with a fixed argv
    result = await provision(stack, "alpha")
    pending = {p["id"]: p for p in result["details"]["pending"]}
    # acting on it needs an admin's approval; what would run is shown, nothing ran
    assert pending["alpha:tools:evil"]["check"] == ["sh", "-c", f"touch {marker}"]
    assert pending["alpha:tools:evil"]["command"] == "apt-get install -y evil"
    async with aclient(stack.sup) as c:
        stored = {p["id"]: p for p in (await c.get("/env/drift", params={"node_id": NODE})).json()["meta"]["pending"]}
    assert stored["alpha:tools:evil"]["status"] == "pending" and stored["alpha:tools:evil"]["approvable"] is True
    assert not marker.exists() and not runtime_marker.exists()


async def test_a_tool_name_the_node_does_not_list_is_never_run(stack: Stack, tmp_path: Path) -> None:
    """The manifest names a program on the node's PATH that does something when run (a stand-in for
    ``reboot``): no check or provision runs it; only the node's env.probe_tools list is probed."""
    marker = tmp_path / f"REBOOTED-{secrets.token_hex(4)}"
    reboot = tmp_path / "tools" / "bin" / "halreboot"
    reboot.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\necho 'halreboot 1.0.0'\n")
    reboot.chmod(0o755)
    doc = {"version": "1.0", "projects": {"alpha": {"tools": {"halreboot": ">=1", "hallisted": ">=1.2"}}}}
    r = await put(stack, doc)
    assert r.status_code == 201, r.text
    warnings = r.json()["data"]["warnings"]
    assert any(w.startswith("projects.alpha.tools.halreboot: probed only on nodes") for w in warnings), warnings
    await wait_api(stack.sup, "/env/status", lambda d: any(x["project"] == "alpha" and x["checked_at"] for x in d))
    items = await check(stack, "alpha")
    assert items["tools:halreboot"]["status"] == "warn" and items["tools:halreboot"]["actual"] == "not probed"
    assert items["tools:halreboot"]["detail"] == NOT_KNOWN
    assert items["tools:hallisted"]["status"] == "pass" and items["tools:hallisted"]["actual"] == "1.5.0"
    result = await provision(stack, "alpha")
    pending = {p["id"]: p for p in result["details"]["pending"]}
    assert list(pending) == ["alpha:tools:halreboot"]
    # what an approval would run first (its check) is shown; nothing ran
    assert pending["alpha:tools:halreboot"]["check"] == ["halreboot", "--version"]
    async with aclient(stack.sup) as c:
        stored = {p["id"]: p for p in (await c.get("/env/drift", params={"node_id": NODE})).json()["meta"]["pending"]}
        assert stored["alpha:tools:halreboot"]["status"] == "pending"
        assert stored["alpha:tools:halreboot"]["check"] == ["halreboot", "--version"]
        preview = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:halreboot", "dry_run": True})
        assert preview.status_code == 200, preview.text
        assert preview.json()["data"]["run"]["check"] == ["halreboot", "--version"]
    await check(stack, "alpha")
    assert not marker.exists()


@pytest.mark.parametrize("key", ["core.fsmonitor", "core.hooksPath", "core.sshCommand", "core.pager",
                                 "alias.st", "includeIf.gitdir:/.path", "filter.x.clean", "credential.helper"])
def test_key_names_are_in_the_error(key: str) -> None:
    """(pure) the 400 names the key: checked against the real server below for a few of them."""
    from halswarm.core.manifest.requirements import safety_problems

    errors, _ = safety_problems({"version": "1.0", "projects": {"p": {"git": {"config": {key: "x"}}}}})
    assert len(errors) == 1 and repr(key) in errors[0]


async def test_git_config_and_hook_planting_is_refused(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / f"PWNED-{secrets.token_hex(4)}"
    for key in ("core.fsmonitor", "Core.HooksPath", "alias.st", "includeIf.gitdir:/.path"):
        doc = {"version": "1.0", "projects": {"alpha": {"git": {"config": {key: f"touch {marker}",
                                                                           "user.name": "bot"}}}}}
        r = await put(stack, doc)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["code"] == "VALIDATION_ERROR" and repr(key) in body["error"]
        assert body["problems"][0].startswith("projects.alpha.git.config: git config key")
    r = await put(stack, {"version": "1.0", "projects": {"alpha": {"env_vars": {"LD_PRELOAD": str(marker)}}}})
    assert r.status_code == 400 and "env_vars.LD_PRELOAD" in r.json()["problems"][0]
    async with aclient(stack.sup) as c:
        assert (await c.get("/env/manifest")).status_code == 404  # nothing was stored

    # hooks: the manifest's inline hook is never written by provisioning, only proposed for approval
    hook_body = f"#!/bin/sh\ntouch {marker}\n"
    doc = {"version": "1.0", "templates": {"hooks/pre-commit": hook_body},
           "projects": {"alpha": {"git": {"hooks": ["pre-commit"], "config": {"core.autocrlf": "input"}}}}}
    assert (await put(stack, doc)).status_code == 201
    result = await provision(stack, "alpha")
    assert result["changes"] == ["git:config.core.autocrlf:git_config"]  # an allowlisted key is still applied
    hook = stack.alpha / ".git" / "hooks" / "pre-commit"
    assert not hook.exists()
    pending = {p["id"]: p for p in result["details"]["pending"]}
    assert f"touch {marker}" in pending["alpha:git:hooks/pre-commit"]["command"]  # shown before approval
    git(stack.alpha, "commit", "-q", "--allow-empty", "-m", "x", env=stack.env)
    git(stack.alpha, "status", env=stack.env)
    assert not marker.exists()
    config = (stack.alpha / ".git" / "config").read_text()
    assert "fsmonitor" not in config and "hooksPath" not in config and "autocrlf = input" in config


async def test_dot_dot_and_symlink_escapes_are_refused(stack: Stack) -> None:
    for field_, doc_part in (("context.files", {"context": {"files": ["../../outside/x.md"]}}),
                             ("docs.required", {"docs": {"required": [str(stack.outside / "y.md")]}}),
                             ("agent_config.context_dir", {"agent_config": {"context_dir": "../ctx"}}),
                             ("docs.required", {"docs": {"required": ["a/../../b.md"]}})):
        r = await put(stack, {"version": "1.0", "projects": {"alpha": doc_part}})
        assert r.status_code == 400, r.text
        assert r.json()["problems"][0].startswith(f"projects.alpha.{field_}[0]: path ")

    # symlinks planted inside the project, pointing outside: never written through, never read back
    (stack.alpha / "docs").symlink_to(stack.outside, target_is_directory=True)
    (stack.alpha / ".context").symlink_to(stack.outside, target_is_directory=True)
    secret = stack.outside / "secret.txt"
    secret.write_text("outside secret\n")
    (stack.alpha / "AGENT.md").symlink_to(secret)
    doc = {"version": "1.0", "templates": {"AGENT.md": "# {{project}}\n"}, "projects": {"alpha": {
        "agent_config": {"context_dir": ".context/"}, "docs": {"required": ["docs/GUIDE.md"]},
        "context": {"files": ["docs/notes/"]}}}}
    assert (await put(stack, doc)).status_code == 201
    before = sorted(p.name for p in stack.outside.iterdir())
    items = await check(stack, "alpha")
    for key in ("docs:docs/GUIDE.md", "context:.context/", "context:.context/PROGRESS.md", "agent_config:AGENT.md"):
        assert items[key]["status"] == "fail" and items[key]["actual"] == "refused", items[key]
        assert "outside the project" in items[key]["detail"]
    result = await provision(stack, "alpha")
    assert result["changes"] == [] and result["details"]["errors"] == []
    assert sorted(p.name for p in stack.outside.iterdir()) == before
    assert secret.read_text() == "outside secret\n"
    async with aclient(stack.sup) as c:
        for path in ("/agent-md/alpha", "/agent-md/alpha/diff"):
            r = await c.get(path)
            assert r.status_code >= 400 and "outside secret" not in r.text, r.text
        r = await c.post("/agent-md/sync", json={"project": "alpha", "force": True})
        assert r.json()["data"][0]["status"] == "failed" and "outside the project" in r.json()["data"][0]["message"]
    assert secret.read_text() == "outside secret\n" and (stack.alpha / "AGENT.md").is_symlink()


async def test_templates_are_read_by_name_from_the_template_directory_only(stack: Stack) -> None:
    tdir = stack.sup.config_path.parent / "templates"
    tdir.mkdir()
    (tdir / "AGENT.md").write_text("# {{project}} from the template directory\n")
    (tdir / "leak.md").symlink_to(stack.sup.config_path)
    elsewhere = stack.outside / "AGENT.md"
    elsewhere.write_text("# not a template\n")
    for ref in (str(elsewhere), "../supervisor.config.json", "supervisor.config.json", "leak.md",
                "templates/../supervisor.config.json", str(stack.sup.config_path)):
        r = await put(stack, {"version": "1.0", "projects": {"alpha": {"agent_config": {"AGENT.md": ref}}}})
        assert r.status_code == 400, (ref, r.text)
        assert r.json()["problems"][0].startswith('projects.alpha.agent_config["AGENT.md"]: template ')
        assert stack.sup.token not in r.text
        async with aclient(stack.sup) as c:
            got = await c.get("/env/manifest")
        assert got.status_code == 404 and stack.sup.token not in got.text
    r = await put(stack, {"version": "1.0", "projects": {"alpha": {"agent_config": {"AGENT.md": "AGENT.md"}}}})
    assert r.status_code == 201, r.text
    async with aclient(stack.sup) as c:
        man = (await c.get("/env/manifest")).json()["data"]
    assert man["templates"] == {"AGENT.md": "# {{project}} from the template directory\n"}


async def test_nothing_is_written_into_an_enclosing_repository(stack: Stack) -> None:
    doc = {"version": "1.0", "projects": {"inner": {"git": {"hooks": ["pre-commit"],
                                                            "config": {"user.name": "planted"}}}}}
    assert (await put(stack, doc)).status_code == 201
    hooks_before = sorted(os.listdir(stack.outer / ".git" / "hooks"))
    config_before = (stack.outer / ".git" / "config").read_text()
    items = await check(stack, "inner")
    assert items["git:repository"]["status"] == "fail"
    assert "not its own" in items["git:repository"]["actual"]
    result = await provision(stack, "inner")
    assert result["changes"] == [] and result["details"]["pending"] == []
    assert sorted(os.listdir(stack.outer / ".git" / "hooks")) == hooks_before
    assert (stack.outer / ".git" / "config").read_text() == config_before


@pytest.mark.timeout(300)
async def test_a_hook_is_installed_only_by_an_approved_item(stack: Stack, tmp_path: Path) -> None:
    body = "#!/bin/sh\n# {{project}} pre-commit, approved\nexit 0\n"
    doc = {"version": "1.0", "templates": {"hooks/pre-commit": body},
           "projects": {"alpha": {"git": {"hooks": ["pre-commit", "commit-msg"]}}}}
    assert (await put(stack, doc)).status_code == 201
    outside = stack.outside / "victim"
    outside.write_text("keep\n")
    (stack.alpha / ".git" / "hooks" / "commit-msg").symlink_to(outside)  # planted: never written through
    result = await provision(stack, "alpha")
    assert [p["id"] for p in result["details"]["pending"]] == ["alpha:git:hooks/pre-commit"]
    items = await check(stack, "alpha")
    assert items["git:hooks/commit-msg"]["actual"] == "not a regular file"
    hook = stack.alpha / ".git" / "hooks" / "pre-commit"
    assert not hook.exists()
    async with aclient(stack.sup) as c:
        r = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:git:hooks/pre-commit"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "succeeded", r.text
    assert hook.read_text() == "#!/bin/sh\n# alpha pre-commit, approved\nexit 0\n"
    assert hook.stat().st_mode & 0o777 == 0o755
    assert outside.read_text() == "keep\n"
