"""halctl (the real console script) against the live supervisor and a protocol-speaking agent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from halswarm.protocol import Command, CommandResult
from tests.support.agentsim import SimAgent, session_state
from tests.support.supervisor_proc import ADMIN_NAME

HALCTL = shutil.which("halctl", path=str(Path(sys.executable).parent)) or "halctl"


async def halctl(sup, *args: str, token: str | None = "default", timeout: float = 30):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    env["HOME"] = str(sup.workdir)  # no operator config file leaks in
    env["HALCTL_SUPERVISOR_URL"] = sup.api
    if token == "default":
        env["HALCTL_AUTH_TOKEN"] = sup.token
    elif token is not None:
        env["HALCTL_AUTH_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(HALCTL, *args, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def fleet(supervisor):  # type: ignore[no-untyped-def]
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "live-node", [("alpha", "/srv/alpha")])
    created = {"n": 0}

    def handler(cmd: Command) -> CommandResult:
        if cmd.type == "create_session":
            created["n"] += 1
            return CommandResult(cmd.command_id, "success",
                                 session_state(f"ses_live{created['n']}", cmd.args["project"], "running"))
        if cmd.type == "kill_session":
            return CommandResult(cmd.command_id, "success", session_state(cmd.target.session_id, "alpha", "killed"))
        if cmd.type == "prompt_session" and cmd.args.get("message") == "fail please":
            return CommandResult(cmd.command_id, "failure", None, "agent refused")
        return CommandResult(cmd.command_id, "success", {"ok": True})

    agent.handler = handler
    await agent.connect(sessions=[session_state("ses_seed", "alpha", "idle", tokens={"input": 1, "output": 2})])
    try:
        yield supervisor, agent
    finally:
        await agent.close()


async def test_nodes_and_sessions_in_every_output_format(fleet):
    sup, _ = fleet
    rc, out, _ = await halctl(sup, "nodes", "list")
    assert rc == 0 and "live-node" in out and "online" in out
    rc, out, _ = await halctl(sup, "--output", "json", "nodes", "get", "live-node")
    assert rc == 0 and json.loads(out)["projects"] == ["alpha"]
    rc, out, _ = await halctl(sup, "-o", "yaml", "sessions", "list", "--project", "alpha")
    assert rc == 0 and "ses_seed" in out
    rc, out, _ = await halctl(sup, "sessions", "get", "ses_seed", "--output", "json")
    assert rc == 0 and json.loads(out)["tokens"]["total"] == 3


async def test_session_control_and_audit(fleet):
    sup, _ = fleet
    rc, out, err = await halctl(sup, "sessions", "start", "alpha", "--prompt", "go", "--output", "json")
    assert rc == 0, err
    assert json.loads(out)["id"] == "ses_live1"
    rc, _, err = await halctl(sup, "sessions", "prompt", "ses_live1", "carry on")
    assert rc == 0, err
    rc, _, err = await halctl(sup, "sessions", "prompt", "ses_live1", "fail please")
    assert rc == 1 and "agent refused" in err and err.count("\n") == 1
    for verb in ("resume", "restart", "kill"):
        rc, _, err = await halctl(sup, "sessions", verb, "ses_live1")
        assert rc == 0, (verb, err)
    rc, out, _ = await halctl(sup, "sessions", "get", "ses_live1", "-o", "json")
    assert json.loads(out)["status"] == "killed"
    rc, out, _ = await halctl(sup, "audit", "list", "--action", "prompt_session", "-o", "json")
    assert rc == 0 and sorted(a["result"] for a in json.loads(out)) == ["failure", "success"]
    rc, out, _ = await halctl(sup, "-o", "json", "status")
    st = json.loads(out)
    assert rc == 0 and st["supervisor"]["ready"] is True
    assert (st["nodes"]["online"], st["nodes"]["offline"]) == (1, 0)
    assert st["sessions"]["by_status"] == {"idle": 1, "killed": 1}
    rc, out, _ = await halctl(sup, "status", "alpha")
    assert rc == 0 and "1 online" in out


async def test_logs_and_follow(fleet):
    sup, agent = fleet
    for seq in range(1, 4):
        await agent.send_event(seq, "message.updated", session_id="ses_seed", project="alpha")
    await agent.wait_acked(3)
    rc, out, _ = await halctl(sup, "sessions", "logs", "ses_seed", "--limit", "10", "-o", "json")
    assert rc == 0
    assert "message.updated" in out
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    env |= {"HOME": str(sup.workdir), "HALCTL_SUPERVISOR_URL": sup.api, "HALCTL_AUTH_TOKEN": sup.token}
    proc = await asyncio.create_subprocess_exec(HALCTL, "sessions", "logs", "ses_seed", "--follow", "-o", "json",
                                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        await asyncio.sleep(1.5)
        await agent.send_event(4, "session.idle", session_id="ses_seed", project="alpha",
                               data={"marker": "live-follow"})
        await agent.wait_acked(4)
        seen = ""
        deadline = time.monotonic() + 10
        while "live-follow" not in seen and time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            seen += line.decode()
        assert "live-follow" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            rc = await proc.wait()
    assert rc in (0, 130)


async def test_exit_codes_against_the_live_supervisor(fleet, tmp_path):
    sup, _ = fleet
    rc, _, err = await halctl(sup, "nodes", "list", token="not-the-token-" + "x" * 30)
    assert rc == 4 and err.startswith("error:") and err.count("\n") == 1
    rc, _, err = await halctl(sup, "sessions", "get", "ses_missing")
    assert rc == 1 and "not found" in err
    rc, _, _ = await halctl(sup, "sessions", "bogus-verb")
    assert rc == 2
    from tests.support.ports import free_port

    env_url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    res = await asyncio.to_thread(
        subprocess.run, [HALCTL, "--supervisor-url", env_url, "--auth-token", "x" * 40, "nodes", "list"],
        capture_output=True, text=True, timeout=30, env=env | {"HOME": str(tmp_path)})
    assert res.returncode == 3 and "Traceback" not in res.stderr
    # The runbook's ws:// URL form is accepted and mapped to the API port.
    ws_url = f"ws://127.0.0.1:{sup.http_port}"
    res = await asyncio.to_thread(
        subprocess.run, [HALCTL, "--supervisor-url", ws_url, "--auth-token", sup.token, "nodes", "list"],
        capture_output=True, text=True, timeout=30, env=env | {"HOME": str(tmp_path)})
    assert res.returncode == 0 and "live-node" in res.stdout


async def test_halctl_commands_are_audited_with_the_operator_as_actor(fleet):
    import getpass
    import socket

    sup, _ = fleet
    rc, _, err = await halctl(sup, "--actor", "ops-alice", "sessions", "prompt", "ses_seed", "from alice")
    assert rc == 0, err
    rc, _, err = await halctl(sup, "sessions", "prompt", "ses_seed", "from the default actor")
    assert rc == 0, err
    # The actor is the operator token's name; halctl's --actor (default user@host) is the client actor
    # recorded beside it, never instead of it (issue 14).
    rc, out, err = await halctl(sup, "audit", "list", "--actor", ADMIN_NAME, "--action", "prompt_session", "-o", "json")
    assert rc == 0, err
    rows = json.loads(out)
    default = f"{getpass.getuser()}@{socket.gethostname()}"
    assert [(a["actor"], a["client_actor"], a["result"]) for a in rows] == [
        (ADMIN_NAME, default, "success"), (ADMIN_NAME, "ops-alice", "success")]
    rc, out, err = await halctl(sup, "audit", "list", "--action", "prompt_session")
    assert rc == 0, err
    assert f"actor: {ADMIN_NAME}  client: ops-alice" in out  # piped: one key: value line per entry
    with sup.client() as c:  # nothing was recorded under a client-chosen name
        assert c.get("/api/v1/audit", params={"actor": "ops-alice"}).json()["meta"]["total"] == 0


async def test_transcript_and_session_id_completion(fleet):
    sup, agent = fleet
    events = [
        ("message.updated", {"sessionID": "ses_seed", "info": {"id": "msg_u", "role": "user"}}),
        ("message.part.updated", {"sessionID": "ses_seed", "part": {"id": "prt_u", "messageID": "msg_u",
                                                                     "type": "text", "text": "say hi"}}),
        ("message.part.updated", {"sessionID": "ses_seed", "part": {"id": "prt_a", "messageID": "msg_a",
                                                                     "type": "text", "text": "h"}}),
        ("message.part.updated", {"sessionID": "ses_seed", "part": {"id": "prt_a", "messageID": "msg_a",
                                                                     "type": "text", "text": "hi there",
                                                                     "time": {"end": 1}}}),
        ("session.idle", {"sessionID": "ses_seed"}),
    ]
    for seq, (etype, data) in enumerate(events, start=1):
        await agent.send_event(seq, etype, session_id="ses_seed", project="alpha", data=data)
    await agent.wait_acked(len(events))
    rc, out, err = await halctl(sup, "sessions", "logs", "ses_seed")
    assert rc == 0, err
    assert out.splitlines() == ["> say hi", "hi there", "-- idle --"]
    rc, out, _ = await halctl(sup, "sessions", "logs", "ses_seed", "--raw", "-o", "json")
    assert [e["type"] for e in json.loads(out)][-1] == "session.idle"
    # tab completion of session ids asks the live API (the completion env is click's, not a flag)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
    env |= {"HOME": str(sup.workdir), "HALCTL_SUPERVISOR_URL": sup.api, "HALCTL_AUTH_TOKEN": sup.token,
            "_HALCTL_COMPLETE": "bash_complete", "COMP_WORDS": "halctl sessions logs ses_", "COMP_CWORD": "3"}
    proc = await asyncio.create_subprocess_exec(HALCTL, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err_b.decode()
    assert out_b.decode().split() == ["plain,ses_seed"]
