"""The env manifest through the REAL hal-agent process (halswarm.agent.main) and the real supervisor: a git
project checked, provisioned (idempotent) and its AGENT.md drift reported. The agent runs without opencode
(none is needed for env commands)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_llm import FakeLLM, opencode_config
from tests.support.agent_proc import AgentProc, api_get, opencode_env, reply_text, wait_status
from tests.support.projects import make_repo, probed, stand_in_tool, tool_env, tree_digest
from tests.support.supervisor_proc import InstalledSupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NODE = "env-e2e-node"
MANIFEST = {"version": "1.0", "templates": {"AGENT.md": "# {{project}} (managed)\n"}, "projects": {"demo": {
    "runtime": {"python": ">=3.8"},
    "agent_config": {"AGENT.md": "AGENT.md", "context_dir": ".context/", "required_docs": ["README.md"]},
    "git": {"branch": "main", "hooks": ["pre-commit"], "config": {"core.autocrlf": "input"}},
}}}


@pytest.fixture
def real_stack(tmp_path: Path) -> Iterator[tuple[InstalledSupervisorProc, AgentProc, Path]]:
    env = tool_env(tmp_path / "tools")
    stand_in_tool(tmp_path / "tools" / "bin", "hallisted", "2.4.0")
    project = make_repo(tmp_path / "projects" / "demo", env)
    sup = InstalledSupervisorProc(tmp_path / "sup").start()
    # the node's own config lists the extra tools its env checks may probe (the manifest cannot)
    agent = AgentProc(tmp_path / "agent", sup.ws_url, sup.agent_token, node_id=NODE,
                      projects=[("demo", str(project))],
                      manage=True, binary=str(tmp_path / "no-opencode"), env=env, clean_env=True,
                      extra={"env": {"probe_tools": probed("hallisted")}})
    try:
        agent.start()
        agent.wait_online(sup, timeout=60)
        yield sup, agent, project
    finally:
        agent.cleanup()
        sup.stop()


def test_env_check_provision_and_drift_through_the_real_agent(
        real_stack: tuple[InstalledSupervisorProc, AgentProc, Path]) -> None:
    sup, _, project = real_stack
    with sup.client() as c:
        assert c.put("/api/v1/env/manifest", json=MANIFEST).status_code == 201
        r = c.post(f"/api/v1/env/check/{NODE}", json={"project": "demo"})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["results"][0]["status"] == "missing"

        before = tree_digest(project)
        dry = c.post(f"/api/v1/env/provision/{NODE}", json={"project": "demo", "dry_run": True}).json()["data"]
        assert dry["results"][0]["status"] == "planned" and tree_digest(project) == before
        first = c.post(f"/api/v1/env/provision/{NODE}", json={"project": "demo"}).json()["data"]["results"][0]
        # the hook is code: not written by provisioning, left pending for an admin's approval
        assert first["status"] == "partial", json.dumps(first, indent=1)
        assert [p["id"] for p in first["details"]["pending"]] == ["demo:git:hooks/pre-commit"]
        hook = project / ".git" / "hooks" / "pre-commit"
        assert not hook.exists()
        assert (project / "AGENT.md").read_text() == "# demo (managed)\n"
        hook.write_text("#!/bin/sh\nexit 0\n")  # what the approved item would install
        hook.chmod(0o755)
        assert c.post(f"/api/v1/env/check/{NODE}", json={"project": "demo"}).json()["data"]["status"] == "ready"
        after = tree_digest(project)
        second = c.post(f"/api/v1/env/provision/{NODE}", json={"project": "demo"}).json()["data"]["results"][0]
        assert second["changes"] == [] and tree_digest(project) == after

        (project / "AGENT.md").write_text("# demo (managed)\nmy local rule\n")
        r = c.post(f"/api/v1/env/check/{NODE}", json={"project": "demo"}).json()["data"]
        assert r["status"] == "degraded"
        diff = c.get("/api/v1/agent-md/demo/diff").json()["data"]
        assert diff["status"] == "modified" and "-my local rule\n" in diff["diff"]
        def drift_event() -> bool:
            evs = c.get("/api/v1/events", params={"type": "env.drift.detected", "node_id": NODE}).json()["data"]
            return any(i["item"] == "AGENT.md" for e in evs for i in e["data"]["items"])

        wait_for(drift_event, "an env.drift.detected event for AGENT.md", 10, interval=0.2)


def test_the_real_agent_probes_only_the_tools_its_config_lists(
        real_stack: tuple[InstalledSupervisorProc, AgentProc, Path], tmp_path: Path) -> None:
    """A name on the node's PATH that the manifest asks for (a `reboot` stand-in) is never run by the real
    agent's check or provision; a tool its config lists in env.probe_tools is probed."""
    sup, _, _ = real_stack
    marker = tmp_path / "REBOOTED"
    reboot = tmp_path / "tools" / "bin" / "halreboot"
    reboot.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\necho 'halreboot 1.0.0'\n")
    reboot.chmod(0o755)
    manifest = {"version": "1.0", "projects": {"demo": {"tools": {"halreboot": "", "hallisted": ">=2"}}}}
    with sup.client() as c:
        assert c.put("/api/v1/env/manifest", json=manifest).status_code == 201
        r = c.post(f"/api/v1/env/check/{NODE}", json={"project": "demo"})
        assert r.status_code == 200, r.text
        items = {i["item"]: i for i in r.json()["data"]["results"][0]["details"]["drift"]}
        assert (items["halreboot"]["status"], items["halreboot"]["actual"]) == ("warn", "not probed")
        assert "env.probe_tools" in items["halreboot"]["detail"]
        assert (items["hallisted"]["status"], items["hallisted"]["actual"]) == ("pass", "2.4.0")
        first = c.post(f"/api/v1/env/provision/{NODE}", json={"project": "demo"}).json()["data"]["results"][0]
        pending = {p["id"]: p for p in first["details"]["pending"]}
        assert pending["demo:tools:halreboot"]["check"] == ["halreboot", "--version"]
    assert not marker.exists()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _opencode_pid(agent: AgentProc) -> int | None:
    try:
        return int((agent.data_dir / "opencode.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_provisioned_env_vars_reach_the_real_opencode_at_a_safe_point(tmp_path: Path, opencode_bin: str) -> None:
    """Provisioned env vars land in the REAL opencode's environment (/proc/PID/environ): while a session is
    busy the restart is only reported as pending (the session is not killed), it happens once the session
    is idle; a var two projects set to different values is reported and not passed at all."""
    fake = FakeLLM(slow_seconds=15).start()
    git_env = tool_env(tmp_path / "tools")
    demo = make_repo(tmp_path / "projects" / "demo", git_env)
    beta = make_repo(tmp_path / "projects" / "beta", git_env)
    sup = InstalledSupervisorProc(tmp_path / "sup").start()
    env = opencode_env(tmp_path / "home", json.dumps(opencode_config(fake.base_url))) | {"npm_config_offline": "true"}
    agent = AgentProc(tmp_path / "agent", sup.ws_url, sup.agent_token, node_id=NODE,
                      projects=[("demo", str(demo)), ("beta", str(beta))], manage=True, binary=opencode_bin, env=env,
                      clean_env=True)
    manifest = {"version": "1.0", "projects": {
        "demo": {"env_vars": {"HAL_E2E_VAR": "visible-in-opencode", "HAL_SHARED": "from-demo"}},
        "beta": {"env_vars": {"HAL_SHARED": "from-beta"}}}}
    try:
        agent.start()
        agent.wait_online(sup, timeout=90, sessions_available=True)
        first_pid = wait_for(lambda: _opencode_pid(agent), "opencode.pid", 30)
        assert "HAL_E2E_VAR" not in _environ(first_pid)
        with sup.client() as c:
            assert c.put("/api/v1/env/manifest", json=manifest).status_code == 201
            r = c.post("/api/v1/sessions", json={"project": "demo", "prompt": "SLOW keep working"})
            assert r.status_code == 201, r.text
            sid = r.json()["data"]["id"]
            wait_status(sup, sid, "running", timeout=30)
            wait_for(lambda: any(r.body.get("tools") and "SLOW" in r.last_user_text for r in fake.chat_requests()),
                     "the session's turn at the fake LLM", 30)

            r = c.post(f"/api/v1/env/provision/{NODE}", json={"project": "demo"})
            assert r.status_code == 200, r.text
            res = r.json()["data"]["results"][0]
            assert res["status"] == "completed", json.dumps(res, indent=1)
            assert res["opencode"]["restart"] == "pending" and res["opencode"]["busy_sessions"], (
                res["opencode"], agent.log_tail(60))
            # not restarted under the busy session
            assert _opencode_pid(agent) == first_pid and "HAL_E2E_VAR" not in _environ(first_pid)

            wait_status(sup, sid, "idle", timeout=60)
            assert "FAKE-REPLY" in reply_text(sup, sid)  # the turn finished, it was not killed
            pid = wait_for(lambda: (p := _opencode_pid(agent)) != first_pid and p and "HAL_E2E_VAR" in _environ(p)
                           and p, "opencode restarted with the provisioned env vars", 60)
            seen = _environ(pid)
            assert seen["HAL_E2E_VAR"] == "visible-in-opencode" and seen["HAL_SHARED"] == "from-demo"
            wait_for(lambda: api_get(sup, "/api/v1/events", type="env.opencode.restarted", node_id=NODE),
                     "env.opencode.restarted event", 15)

            # beta sets HAL_SHARED to another value: reported, and no project's value is passed
            r = c.post(f"/api/v1/env/provision/{NODE}", json={"project": "beta"})
            res = r.json()["data"]["results"][0]
            assert res["env_conflicts"][0]["name"] == "HAL_SHARED", json.dumps(res, indent=1)
            assert res["env_conflicts"][0]["projects"] == ["beta", "demo"]
            assert res["opencode"]["restart"] == "done", res["opencode"]
            pid2 = wait_for(lambda: (p := _opencode_pid(agent)) != pid and p, "opencode restarted again", 30)
            seen = _environ(pid2)
            assert "HAL_SHARED" not in seen and seen["HAL_E2E_VAR"] == "visible-in-opencode"
    finally:
        agent.cleanup()
        sup.stop()
        fake.stop()
