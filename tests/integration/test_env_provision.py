"""Safe provisioning and AGENT.md on real project directories through the real supervisor: dry-run changes
nothing (checksums), provisioning applies the safe fixes and is idempotent (a second run changes nothing),
a locally edited AGENT.md is drift (event, /env/drift, unified diff) and is never overwritten without force."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.support.agent_side import EnvAgent
from tests.support.api import aclient, events, wait_api
from tests.support.halctl import ahalctl
from tests.support.projects import make_repo, probed, tool_env, tree_digest
from tests.support.supervisor_proc import InstalledSupervisorProc

NODE = "env-node-2"
REMOTE = "git@git.example.invalid:team/alpha.git"
TEMPLATE = "# Agent rules for {{project}}\n\nUse model {{model}}.\nTicket prefix: {{ticket_prefix}}.\n"


def manifest() -> dict[str, Any]:
    return {
        "version": "1.0",
        "templates": {"AGENT.md": TEMPLATE, "hooks/commit-msg": "#!/bin/sh\n# {{project}} commit-msg\nexit 0\n"},
        "variables": {"ticket_prefix": "HAL"},
        "projects": {
            "alpha": {
                "runtime": {"python": ">=3.8", "halsdk": {"version": ">=1.0", "install": "echo install halsdk"}},
                "env_vars": {"HAL_PROVISIONED_MODE": "ci", "HAL_SECRET_TOKEN": "required"},
                "agent_config": {"AGENT.md": "AGENT.md", "context_dir": ".context/", "required_docs": ["README.md",
                                                                                                    "docs/RUNBOOK.md"],
                                 "model": "model-y"},
                "git": {"remote": REMOTE, "branch": "main", "hooks": ["pre-commit", "commit-msg"],
                        "config": {"core.autocrlf": "input", "pull.rebase": "true"}},
                "docs": {"recommended": ["ARCHITECTURE.md"]},
            },
        },
    }


def agent_md() -> str:
    return "# Agent rules for alpha\n\nUse model model-y.\nTicket prefix: HAL.\n"


@pytest_asyncio.fixture
async def env_stack(tmp_path: Path) -> AsyncIterator[tuple[InstalledSupervisorProc, EnvAgent, Path]]:
    sup = InstalledSupervisorProc(tmp_path / "sup")
    sup.start()
    env = tool_env(tmp_path / "tools")
    alpha = make_repo(tmp_path / "projects" / "alpha", env, config={"pull.rebase": "false"})
    agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha)}, env, probe_tools=probed("halsdk"))
    try:
        await agent.start()
        async with aclient(sup) as c:
            assert (await c.put("/env/manifest", json=manifest())).status_code == 201
        await wait_api(sup, "/env/status", lambda d: d and d[0]["status"] == "missing")
        yield sup, agent, alpha
    finally:
        await agent.stop()
        sup.stop()


async def test_dry_run_changes_nothing_then_provision_is_idempotent(
        env_stack: tuple[InstalledSupervisorProc, EnvAgent, Path], tmp_path: Path) -> None:
    sup, agent, alpha = env_stack
    env_file = tmp_path / "agent" / "env" / "alpha.env"
    before = tree_digest(alpha)

    out = await ahalctl(sup, "env", "provision", "--node", NODE, "--project", "alpha", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "env-node-2/alpha: plan (dry run, nothing changed)" in out.stdout
    assert "would create agent_config:AGENT.md" in out.stdout and "would git_remote_add git:remote.origin" in out.stdout
    assert "pending alpha:runtime:halsdk: echo install halsdk" in out.stdout
    assert "conflict git:config.pull.rebase" in out.stdout and "-pull.rebase = false" in out.stdout
    assert "manual env_vars:HAL_SECRET_TOKEN" in out.stdout and "halctl auth push env-node-2" in out.stdout
    assert tree_digest(alpha) == before and not env_file.exists()
    async with aclient(sup) as c:
        dry = (await c.post(f"/env/provision/{NODE}", json={"project": "alpha", "dry_run": True})).json()["data"]
        assert tree_digest(alpha) == before
        plan = dry["results"][0]
        assert plan["status"] == "planned" and plan["dry_run"] is True
        assert sorted(plan["changes"]) == sorted([
            "agent_config:AGENT.md:create", "context:.context/:mkdir", "context:.context/CURRENT_TASK.md:create",
            "context:.context/PROGRESS.md:create", "docs:docs/RUNBOOK.md:create",
            "env_vars:HAL_PROVISIONED_MODE:env_set",
            "git:config.core.autocrlf:git_config", "git:remote.origin:git_remote_add"])
        # nothing pending is stored from a dry run
        assert (await c.get("/env/drift")).json()["meta"]["pending"] == []

        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
        assert r.status_code == 200, r.text
        first = r.json()["data"]["results"][0]
    assert first["status"] == "partial"  # the risky runtime, the secret and the conflict are left
    assert sorted(first["changes"]) == sorted(plan["changes"])
    after = tree_digest(alpha)
    assert after != before
    assert (alpha / "AGENT.md").read_text() == agent_md()
    assert (alpha / ".context" / "PROGRESS.md").read_text() == "# Progress\n"
    assert (alpha / "docs" / "RUNBOOK.md").read_text() == "# RUNBOOK\n"
    # hooks are code: never written by provisioning, only proposed for approval (with their content)
    assert not (alpha / ".git" / "hooks" / "commit-msg").exists()
    assert not (alpha / ".git" / "hooks" / "pre-commit").exists()
    git_config = (alpha / ".git" / "config").read_text()
    assert REMOTE in git_config and "autocrlf = input" in git_config and "rebase = false" in git_config
    # env vars for the agent's processes: the provisioned file, 0600, and what the service hands out
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert 'HAL_PROVISIONED_MODE="ci"' in env_file.read_text()
    assert agent.service is not None and agent.service.managed_env() == {"HAL_PROVISIONED_MODE": "ci"}
    items = {f"{i['category']}:{i['item']}": i["status"] for i in first["check"]["details"]["drift"]}
    assert items["env_vars:HAL_PROVISIONED_MODE"] == "pass" and items["agent_config:AGENT.md"] == "pass"
    assert {k for k, v in items.items() if v != "pass"} == {
        "runtime:halsdk", "env_vars:HAL_SECRET_TOKEN", "git:config.pull.rebase", "docs:ARCHITECTURE.md",
        "git:hooks/commit-msg", "git:hooks/pre-commit"}

    # second run: nothing changes (checksums) and nothing is reported as changed
    out = await ahalctl(sup, "env", "provision", "--node", NODE, "--project", "alpha", "-o", "json")
    assert out.returncode == 0, out.stderr
    second = json.loads(out.stdout)["results"][0]
    assert second["changes"] == [] and second["details"]["applied"] == []
    assert second["status"] == "partial"
    assert tree_digest(alpha) == after
    # the pending risky item is stored once, with its approval token
    pending = (await wait_api(sup, "/env/drift", lambda d: True, params={"node_id": NODE}))
    async with aclient(sup) as c:
        meta = (await c.get("/env/drift", params={"node_id": NODE})).json()["meta"]
    stored = {p["id"]: p for p in meta["pending"]}
    assert sorted(stored) == ["alpha:git:hooks/commit-msg", "alpha:git:hooks/pre-commit", "alpha:runtime:halsdk"]
    assert stored["alpha:runtime:halsdk"]["token"].startswith("prov_")
    assert stored["alpha:runtime:halsdk"]["command"] == "echo install halsdk"
    # the manifest's hook template is shown in full in the command an admin approves
    hook_cmd = stored["alpha:git:hooks/commit-msg"]["command"]
    assert "# alpha commit-msg" in hook_cmd and str(alpha / ".git" / "hooks" / "commit-msg") in hook_cmd
    assert stored["alpha:git:hooks/commit-msg"]["approvable"] is True
    assert {d["item"] for d in pending} == {"halsdk", "HAL_SECRET_TOKEN", "config.pull.rebase", "ARCHITECTURE.md",
                                            "hooks/commit-msg", "hooks/pre-commit"}
    req = await events(sup, "provision.manual_required", node_id=NODE)
    assert sorted(e["data"]["approve"] for e in req) == [
        "halctl env approve env-node-2 alpha:git:hooks/commit-msg",
        "halctl env approve env-node-2 alpha:git:hooks/pre-commit",
        "halctl env approve env-node-2 alpha:runtime:halsdk"]
    prov = await events(sup, "env.provisioned", node_id=NODE)
    assert len(prov) == 1  # the second run changed nothing

    # force replaces the locally set git config value
    async with aclient(sup) as c:
        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha", "force": True})
    assert r.json()["data"]["results"][0]["changes"] == ["git:config.pull.rebase:git_config"]
    assert "rebase = true" in (alpha / ".git" / "config").read_text()


async def test_agent_md_drift_diff_and_no_overwrite_without_force(
        env_stack: tuple[InstalledSupervisorProc, EnvAgent, Path]) -> None:
    sup, _, alpha = env_stack
    # AGENT.md missing: diff against nothing, sync creates it
    out = await ahalctl(sup, "agent-md", "diff", "alpha")
    assert out.returncode == 0 and "+# Agent rules for alpha" in out.stdout
    out = await ahalctl(sup, "agent-md", "sync", "alpha")
    assert out.returncode == 0, out.stderr
    assert "env-node-2/alpha: synced: AGENT.md created" in out.stdout
    assert (alpha / "AGENT.md").read_text() == agent_md()
    out = await ahalctl(sup, "agent-md", "diff", "alpha")
    assert out.returncode == 0 and out.stdout == ""
    out = await ahalctl(sup, "agent-md", "show", "alpha")
    assert out.returncode == 0 and out.stdout == agent_md()
    out = await ahalctl(sup, "agent-md", "show", "alpha", "--template")
    assert out.stdout == agent_md()
    async with aclient(sup) as c:
        r = await c.post(f"/env/check/{NODE}", json={"project": "alpha"})
    items = {f"{i['category']}:{i['item']}": i for i in r.json()["data"]["results"][0]["details"]["drift"]}
    assert items["agent_config:AGENT.md"]["status"] == "pass"
    drift_before = len(await events(sup, "env.drift.detected", node_id=NODE))

    # a local edit is drift
    edited = agent_md().replace("Use model model-y.", "Use model whatever-I-like.") + "Local note.\n"
    (alpha / "AGENT.md").write_text(edited)
    async with aclient(sup) as c:
        r = await c.post(f"/env/check/{NODE}", json={"project": "alpha"})
        item = {f"{i['category']}:{i['item']}": i for i in r.json()["data"]["results"][0]["details"]["drift"]}[
            "agent_config:AGENT.md"]
        assert item["status"] == "warn" and item["drift"] is True
        drift = (await c.get("/env/drift", params={"project": "alpha"})).json()["data"]
        assert any(d["item"] == "AGENT.md" and d["drift"] for d in drift)
        show = (await c.get("/agent-md/alpha")).json()["data"]
        assert show["exists"] and not show["in_sync"] and show["content"] == edited
    new = await events(sup, "env.drift.detected", node_id=NODE)
    assert len(new) == drift_before + 1
    assert [i["item"] for i in new[-1]["data"]["items"]] == ["AGENT.md"]

    out = await ahalctl(sup, "agent-md", "diff", "alpha")
    assert out.returncode == 0
    assert out.stdout.startswith("--- a/AGENT.md (local)\n+++ b/AGENT.md (template)\n@@ ")
    assert "-Use model whatever-I-like.\n+Use model model-y.\n" in out.stdout and "-Local note.\n" in out.stdout

    # not overwritten: neither by sync nor by provision, without force
    out = await ahalctl(sup, "agent-md", "sync", "alpha")
    assert out.returncode == 1
    assert "modified" in out.stdout and "-Local note." in out.stdout and "--force" in out.stderr
    assert (alpha / "AGENT.md").read_text() == edited
    async with aclient(sup) as c:
        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
    res = r.json()["data"]["results"][0]
    assert "agent_config:AGENT.md:overwrite" not in res["changes"]
    conflict = next(c for c in res["details"]["conflicts"] if c["item"] == "AGENT.md")
    assert "-Local note.\n" in conflict["diff"] and "not overwritten without force" in conflict["reason"]
    assert (alpha / "AGENT.md").read_text() == edited

    # with force: replaced, then in sync
    out = await ahalctl(sup, "agent-md", "sync", "alpha", "--force")
    assert out.returncode == 0 and "replaced by the template (force)" in out.stdout
    assert (alpha / "AGENT.md").read_text() == agent_md()
    synced = await events(sup, "agentmd.synced", node_id=NODE)
    assert len(synced) == 2
    out = await ahalctl(sup, "-o", "table", "agent-md", "show")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[:4] == ["env-node-2", "alpha", "true", "true"]
    out = await ahalctl(sup, "agent-md", "diff")
    assert out.returncode == 0 and out.stdout == "" and "matches the template" in out.stderr
