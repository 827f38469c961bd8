"""Approval of risky env items: the supervisor runs the approved item's command on the node through the
Ansible collection (module halswarm.ops.hal_env_item, driven by ansible-runner) against a test host
(localhost, ansible_connection=local, ansible_python_interpreter pinned), reports and stores the result,
and checks the project again. A failing item is reported as failed; nothing runs without approval."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from tests.unit.env.harness import EnvAgent, EnvSupervisorProc, aclient, events, halctl, make_repo, tool_env, wait_api

NODE = "env-node-3"


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


@pytest_asyncio.fixture
async def approve_stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {NODE: {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    sup = EnvSupervisorProc(tmp_path / "sup", extra={"remediation": {"inventory": str(inventory)}})
    sup.start()
    env = tool_env(tmp_path / "tools")
    bin_dir = tmp_path / "tools" / "bin"
    source = tmp_path / "dist" / "haltool"
    source.parent.mkdir()
    source.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'haltool 1.3.0'\nexit 0\n")
    marker = tmp_path / "installed.marker"
    doc = {"version": "1.0", "projects": {"alpha": {
        "tools": {"haltool": {"version": ">=1.2", "install": f"install -m 0755 {source} {bin_dir / 'haltool'}"}},
        "native_libs": [{"name": "halnosuchlib", "install": f"sh -c 'echo trying > {marker}; exit 3'"}],
    }}}
    alpha = make_repo(tmp_path / "projects" / "alpha", env)
    agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha)}, env)
    try:
        await agent.start()
        async with aclient(sup) as c:
            assert (await c.put("/env/manifest", json=doc)).status_code == 201
        await wait_api(sup, "/env/status", lambda d: d and d[0]["status"] == "missing")
        yield {"sup": sup, "agent": agent, "bin": bin_dir, "marker": marker, "tmp": tmp_path}
    finally:
        await agent.stop()
        sup.stop()


@pytest.mark.timeout(300)
async def test_approved_item_runs_through_ansible_and_is_reported(approve_stack: dict[str, Any]) -> None:
    sup: EnvSupervisorProc = approve_stack["sup"]
    tool = approve_stack["bin"] / "haltool"
    async with aclient(sup) as c:
        r = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:haltool"})
        assert r.status_code == 404  # nothing pending before a provisioning run
        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
        pending = r.json()["data"]["results"][0]["details"]["pending"]
    assert sorted(p["id"] for p in pending) == ["alpha:native_libs:halnosuchlib", "alpha:tools:haltool"]
    assert not tool.exists()  # risky items never run by themselves

    out = await halctl(sup, "env", "approve", NODE, "alpha:tools:haltool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("alpha:tools:haltool on env-node-3: succeeded (rc 0, changed true)")
    assert "re-check of alpha: missing" in out.stdout  # haltool is fixed, the library is still missing
    assert tool.exists() and tool.stat().st_mode & 0o111
    async with aclient(sup) as c:
        node = (await c.get(f"/env/status/{NODE}")).json()["data"]
    items = {f"{i['category']}:{i['item']}": i for i in node["projects"][0]["items"]}
    assert items["tools:haltool"]["status"] == "pass" and items["tools:haltool"]["actual"] == "1.3.0"
    done = next(p for p in node["pending"] if p["id"] == "alpha:tools:haltool")
    assert done["status"] == "succeeded" and done["result"]["rc"] == 0 and done["result"]["host"] == NODE
    assert done["result"]["ansible_status"] == "successful"
    assert _is_dir(done["result"]["artifacts"])
    assert any(r["kind"] == "approval" and r["status"] == "succeeded" for r in node["recent_runs"])
    ok = await events(sup, "env.approval.succeeded", node_id=NODE)
    assert len(ok) == 1 and ok[0]["data"]["item"] == "alpha:tools:haltool" and ok[0]["data"]["rc"] == 0

    # approving again replays the stored result instead of running again
    tool.unlink()
    async with aclient(sup) as c:
        r = await c.post(f"/env/approve/{NODE}", json={"item": done["token"]})
        assert r.status_code == 200 and r.json()["data"]["replayed"] is True
    assert not tool.exists()

    # a failing item: reported as failed (exit 1), with the command's output
    out = await halctl(sup, "env", "approve", NODE, "alpha:native_libs:halnosuchlib")
    assert out.returncode == 1
    assert "failed (rc 3" in out.stdout and "approved item alpha:native_libs:halnosuchlib failed" in out.stderr
    assert approve_stack["marker"].read_text() == "trying\n"
    failed = await events(sup, "env.approval.failed", node_id=NODE)
    assert len(failed) == 1 and failed[0]["data"]["rc"] == 3
    async with aclient(sup) as c:
        pend = (await c.get("/env/drift", params={"node_id": NODE})).json()["meta"]["pending"]
        assert [(p["id"], p["status"]) for p in pend] == [("alpha:native_libs:halnosuchlib", "failed")]
        assert (await c.post(f"/env/approve/{NODE}", json={"item": "nope"})).status_code == 404
        assert (await c.post("/env/approve/no-such-node", json={"item": "x"})).status_code == 404


@pytest.mark.timeout(120)
async def test_approval_needs_an_inventory(tmp_path: Path) -> None:
    sup = EnvSupervisorProc(tmp_path / "sup")
    sup.start()
    env = tool_env(tmp_path / "tools")
    alpha = make_repo(tmp_path / "alpha", env)
    agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha)}, env)
    try:
        await agent.start()
        async with aclient(sup) as c:
            doc = {"version": "1.0", "projects": {"alpha": {"tools": ["halabsenttool"]}}}
            assert (await c.put("/env/manifest", json=doc)).status_code == 201
            await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
            r = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:halabsenttool"})
        assert r.status_code == 409 and "remediation.inventory" in r.json()["error"]
    finally:
        await agent.stop()
        sup.stop()
