"""Approval of risky env items: the supervisor runs the approved item's command on the node through the
Ansible collection (module halswarm.ops.hal_env_item, driven by ansible-runner) against a test host
(localhost, ansible_connection=local, ansible_python_interpreter pinned), reports and stores the result,
and checks the project again. A failing item is reported as failed; nothing runs without approval.
One approval runs over real SSH: the node's inventory host is an sshd on 127.0.0.2 (``SshHost``), reached with
a key as a throwaway user, its host key checked against a known_hosts file the test writes."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from halswarm.protocol import Command, CommandResult
from tests.support.agent_side import EnvAgent
from tests.support.api import aclient, events, wait_api
from tests.support.halctl import ahalctl
from tests.support.projects import make_repo, probed, tool_env
from tests.support.ssh_host import REMOTE_PYTHON, SshHost, ssh_inventory
from tests.support.supervisor_proc import InstalledSupervisorProc

NODE = "env-node-3"


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def _owner(path: Path) -> tuple[int, int] | None:
    """(uid, mode) of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_mode


def _read(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@pytest_asyncio.fixture
async def approve_stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {NODE: {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    sup = InstalledSupervisorProc(tmp_path / "sup", extra={"remediation": {"inventory": str(inventory)}})
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
    agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha)}, env, probe_tools=probed("haltool"))
    try:
        await agent.start()
        async with aclient(sup) as c:
            assert (await c.put("/env/manifest", json=doc)).status_code == 201
        await wait_api(sup, "/env/status", lambda d: d and d[0]["status"] == "missing")
        yield {"sup": sup, "agent": agent, "bin": bin_dir, "marker": marker, "tmp": tmp_path, "inventory": inventory,
               "install": doc["projects"]["alpha"]["tools"]["haltool"]["install"]}
    finally:
        await agent.stop()
        sup.stop()


@pytest.mark.timeout(300)
async def test_approved_item_runs_through_ansible_and_is_reported(approve_stack: dict[str, Any]) -> None:
    sup: InstalledSupervisorProc = approve_stack["sup"]
    tool = approve_stack["bin"] / "haltool"
    async with aclient(sup) as c:
        r = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:haltool"})
        assert r.status_code == 404  # nothing pending before a provisioning run
        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
        pending = r.json()["data"]["results"][0]["details"]["pending"]
    assert sorted(p["id"] for p in pending) == ["alpha:native_libs:halnosuchlib", "alpha:tools:haltool"]
    assert not tool.exists()  # risky items never run by themselves

    out = await ahalctl(sup, "env", "approve", NODE, "alpha:tools:haltool")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    # the exact command and its target, shown before it runs
    assert lines[0] == (f"running alpha:tools:haltool on host {NODE} (inventory {approve_stack['inventory']}, "
                        f"halswarm.ops.hal_env_item) as the connecting user, skipped when `haltool --version` "
                        f"succeeds: {approve_stack['install']}")
    assert lines[1] == "alpha:tools:haltool on env-node-3: succeeded (rc 0, changed true)"
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
    out = await ahalctl(sup, "env", "approve", NODE, "alpha:native_libs:halnosuchlib")
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
    sup = InstalledSupervisorProc(tmp_path / "sup")
    sup.start()
    env = tool_env(tmp_path / "tools")
    alpha = make_repo(tmp_path / "alpha", env)
    agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha)}, env, probe_tools=probed("halabsenttool"))
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


@pytest.mark.timeout(300)
async def test_a_tampered_command_from_the_agent_never_runs(approve_stack: dict[str, Any]) -> None:
    """A compromised agent reports a root command for a risky item (and one item the manifest does not
    have): the supervisor stores and runs the command its own manifest defines, never the reported text."""
    sup: InstalledSupervisorProc = approve_stack["sup"]
    agent: EnvAgent = approve_stack["agent"]
    pwned = approve_stack["tmp"] / "pwned.marker"
    evil = f"sh -c 'id > {pwned}'"

    def tamper(cmd: Command, res: CommandResult) -> CommandResult:
        if cmd.type == "env_provision" and isinstance(res.output, dict):
            for r in res.output["results"]:
                pend = r["details"]["pending"]
                for p in pend:
                    p["command"], p["become"], p["check"] = evil, True, []
                pend.append(dict(pend[0], id="alpha:tools:planted", item="planted"))
        return res

    agent.tamper = tamper
    async with aclient(sup) as c:
        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
        assert r.status_code == 200, r.text
        node = (await c.get(f"/env/status/{NODE}")).json()["data"]
        stored = {p["id"]: p for p in node["pending"]}
        assert stored["alpha:tools:haltool"]["command"] == approve_stack["install"]
        assert stored["alpha:tools:haltool"]["become"] is False
        assert stored["alpha:tools:haltool"]["reported_command"] == evil
        assert stored["alpha:tools:planted"]["command"] == "" and stored["alpha:tools:planted"]["approvable"] is False
        assert evil not in str([e["data"] for e in await events(sup, "provision.manual_required", node_id=NODE)
                                if e["data"].get("item") == "alpha:tools:haltool"])

        preview = (await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:haltool", "dry_run": True}))
        assert preview.status_code == 200, preview.text
        run = preview.json()["data"]["run"]
        assert run["command"] == approve_stack["install"] and run["become"] is False and run["host"] == NODE
        r = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:planted"})
        assert r.status_code == 409 and "not in the supervisor's manifest" in r.json()["error"]

    out = await ahalctl(sup, "env", "approve", NODE, "alpha:tools:haltool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert evil not in out.stdout and approve_stack["install"] in out.stdout.splitlines()[0]
    assert not pwned.exists()
    assert (approve_stack["bin"] / "haltool").exists()
    started = await events(sup, "env.approval.started", node_id=NODE)
    assert [e["data"]["command"] for e in started] == [approve_stack["install"]]


def _ssh_requirements() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (useradd, sshd)")
    if not Path("/usr/sbin/sshd").exists():
        problems.append("sshd not installed (apt-get install -y openssh-server)")
    if shutil.which("ssh") is None:
        problems.append("ssh client not installed (apt-get install -y openssh-client)")
    if not Path(REMOTE_PYTHON).exists():
        problems.append(f"{REMOTE_PYTHON} missing (the SSH host's interpreter for the module)")
    if problems:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


@pytest_asyncio.fixture
async def ssh_stack(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The node's inventory host is a real sshd (127.0.0.2) with a throwaway user; the agent runs here, so it
    sees what the SSH user installs (into a directory on the agent's PATH that only that user may write)."""
    _ssh_requirements()
    workdir = Path(tempfile.mkdtemp(prefix="hal-envssh-", dir="/var/tmp"))  # reachable by the SSH user
    host = SshHost(workdir, user=f"halenv{uuid.uuid4().hex[:6]}")
    sup: InstalledSupervisorProc | None = None
    agent: EnvAgent | None = None
    try:
        host.start()
        pw = pwd.getpwnam(host.user)
        drop = workdir / "bin"
        drop.mkdir()
        os.chown(drop, pw.pw_uid, pw.pw_gid)
        drop.chmod(0o755)
        source = workdir / "dist" / "haltool"
        source.parent.mkdir()
        source.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'haltool 1.3.0'\nexit 0\n")
        source.chmod(0o644)
        marker = host.home / "halnosuchlib.marker"
        inventory = ssh_inventory(tmp_path / "inventory.yml", NODE, host=host.host, port=host.port, user=host.user,
                                  key=host.client_key, known_hosts=host.known_hosts)
        sup = InstalledSupervisorProc(tmp_path / "sup", extra={"remediation": {"inventory": str(inventory)}})
        sup.start()
        env = tool_env(tmp_path / "tools")
        env["PATH"] = f"{drop}:{env['PATH']}"
        install = f"install -m 0755 {source} {drop / 'haltool'}"
        doc = {"version": "1.0", "projects": {"alpha": {
            "tools": {"haltool": {"version": ">=1.2", "install": install}},
            "native_libs": [{"name": "halnosuchlib", "install": f"sh -c 'id -un > {marker}; exit 3'"}],
        }}}
        alpha = make_repo(tmp_path / "projects" / "alpha", env)
        agent = EnvAgent(sup, NODE, tmp_path / "agent", {"alpha": str(alpha)}, env, probe_tools=probed("haltool"))
        await agent.start()
        async with aclient(sup) as c:
            assert (await c.put("/env/manifest", json=doc)).status_code == 201
        await wait_api(sup, "/env/status", lambda d: d and d[0]["status"] == "missing")
        yield {"sup": sup, "host": host, "uid": pw.pw_uid, "tool": drop / "haltool", "marker": marker,
               "inventory": inventory, "install": install}
    finally:
        if agent is not None:
            await agent.stop()
        if sup is not None:
            sup.stop()
        host.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.timeout(300)
async def test_approved_item_runs_over_ssh_on_the_node_host(ssh_stack: dict[str, Any]) -> None:
    sup: InstalledSupervisorProc = ssh_stack["sup"]
    host: SshHost = ssh_stack["host"]
    tool: Path = ssh_stack["tool"]
    async with aclient(sup) as c:
        r = await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})
        assert r.status_code == 200, r.text
    assert _owner(tool) is None
    assert f"Accepted publickey for {host.user}" not in host.log_tail()  # nothing connected before the approval

    out = await ahalctl(sup, "env", "approve", NODE, "alpha:tools:haltool")
    assert out.returncode == 0, f"{out.stdout}{out.stderr}\nsshd: {host.log_tail()}"
    lines = out.stdout.splitlines()
    assert lines[0] == (f"running alpha:tools:haltool on host {NODE} (inventory {ssh_stack['inventory']}, "
                        f"halswarm.ops.hal_env_item) as the connecting user, skipped when `haltool --version` "
                        f"succeeds: {ssh_stack['install']}")
    via = f"{host.user}@{host.host}:{host.port}"  # where the inventory sent Ansible, shown with the result
    assert lines[1] == f"alpha:tools:haltool on {NODE} via {via}: succeeded (rc 0, changed true)"
    assert "re-check of alpha: missing" in out.stdout  # haltool fixed; the library still missing
    # it ran on the SSH host, as the SSH user (root running it locally would own the file, and could not
    # have gone through sshd)
    owner = _owner(tool)
    assert owner is not None and owner[0] == ssh_stack["uid"] and owner[1] & 0o111
    assert f"Accepted publickey for {host.user} " in host.log_tail()
    async with aclient(sup) as c:
        node = (await c.get(f"/env/status/{NODE}")).json()["data"]
    items = {f"{i['category']}:{i['item']}": i for i in node["projects"][0]["items"]}
    assert items["tools:haltool"]["status"] == "pass" and items["tools:haltool"]["actual"] == "1.3.0"
    done = next(p for p in node["pending"] if p["id"] == "alpha:tools:haltool")
    res = done["result"]
    assert done["status"] == "succeeded" and res["rc"] == 0 and res["changed"] is True
    assert res["host"] == NODE and res["ansible_status"] == "successful" and _is_dir(res["artifacts"])
    assert res["address"] == via
    ok = await events(sup, "env.approval.succeeded", node_id=NODE)
    assert [(e["data"]["item"], e["data"]["rc"]) for e in ok] == [("alpha:tools:haltool", 0)]

    # a failing item over SSH: it ran there as the SSH user (marker in its HOME), reported as failed
    out = await ahalctl(sup, "env", "approve", NODE, "alpha:native_libs:halnosuchlib")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "failed (rc 3" in out.stdout and "approved item alpha:native_libs:halnosuchlib failed" in out.stderr
    marker: Path = ssh_stack["marker"]
    assert _read(marker) == f"{host.user}\n" and (_owner(marker) or (None,))[0] == ssh_stack["uid"]
    async with aclient(sup) as c:
        pend = (await c.get("/env/drift", params={"node_id": NODE})).json()["meta"]["pending"]
    assert [(p["id"], p["status"], p["result"]["rc"], p["result"]["host"]) for p in pend] == [
        ("alpha:native_libs:halnosuchlib", "failed", 3, NODE)]
    assert host.log_tail().count(f"Accepted publickey for {host.user} ") == 2  # one SSH login per approval


@pytest.mark.timeout(300)
async def test_an_unknown_ssh_host_key_is_refused(ssh_stack: dict[str, Any]) -> None:
    """Host key checking is real: with a known_hosts that lacks the host's key the run is unreachable,
    reported as failed, and nothing ran on the host."""
    sup: InstalledSupervisorProc = ssh_stack["sup"]
    host: SshHost = ssh_stack["host"]
    host.known_hosts.write_text("")
    async with aclient(sup) as c:
        assert (await c.post(f"/env/provision/{NODE}", json={"project": "alpha"})).status_code == 200
        r = await c.post(f"/env/approve/{NODE}", json={"item": "alpha:tools:haltool"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "failed" and data["result"]["ok"] is False
    assert "Host key verification failed" in data["result"]["msg"], data["result"]
    assert _owner(ssh_stack["tool"]) is None
    assert f"Accepted publickey for {host.user}" not in host.log_tail()
