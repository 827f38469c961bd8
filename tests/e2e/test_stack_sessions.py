"""The whole stack, for real: halctl -> supervisor -> hal-agent -> opencode serve -> fake LLM, and back
as events. One supervisor + one agent (managing one opencode) shared by the module; each test works
on its own sessions. Skipped only when the pinned opencode is not installed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fakes.fake_llm import FakeLLM, opencode_config_content
from tests.support.agent_proc import (
    AgentProc,
    api_get,
    opencode_env,
    reply_text,
    session_events,
    session_of,
    wait_status,
)
from tests.support.halctl import halctl, halctl_json
from tests.support.ports import free_port
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NODE = "e2e-node"


@dataclass
class Stack:
    sup: SupervisorProc
    agent: AgentProc
    fake: FakeLLM
    project: Path

    def start(self, prompt: str | None = None, *extra: str) -> dict:
        args = ["sessions", "start", "demo", *extra]
        if prompt is not None:
            args += ["--prompt", prompt]
        return halctl_json(self.sup, *args)

    def llm_saw(self, needle: str) -> bool:
        return any(needle in r.last_user_text for r in self.fake.chat_requests() if r.body.get("tools"))


@pytest.fixture(scope="module")
def stack(opencode_bin: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    project = root / "projects" / "demo"
    project.mkdir(parents=True)
    sup = SupervisorProc(root / "sup", extra={"server": {"heartbeat_interval_sec": 1}}).start()
    env = opencode_env(root / "home", opencode_config_content(fake_llm.base_url, permission_ask_bash=True))
    # opencode_port 0: opencode picks a free port and the agent reads its URL from stdout (also on
    # every restart, see test_opencode_killed_is_restarted_and_reported).
    agent = AgentProc(root / "agent", sup.ws_url, sup.agent_token, node_id=NODE, projects=[("demo", str(project))],
                      manage=True, binary=opencode_bin, env=env, clean_env=True, opencode_port=0)
    try:
        agent.start()
        agent.wait_online(sup, timeout=60, sessions_available=True)
        yield Stack(sup, agent, fake_llm, project)
    finally:
        agent.cleanup()
        sup.stop()


def test_node_reports_opencode(stack: Stack) -> None:
    n = halctl_json(stack.sup, "nodes", "get", NODE)
    assert n["status"] == "online" and n["projects"] == ["demo"]
    caps = n["capabilities"]
    assert caps["opencode"] is True and caps["sessions"] == {"available": True, "reason": None}
    assert caps["opencode_server"]["mode"] == "manage" and caps["opencode_server"]["version"] == "1.18.33"
    assert caps["tools"]["opencode"]["version"] == "1.18.33"
    # opencode_port 0: the URL is the port opencode picked, read from its stdout, and it answers there.
    url = caps["opencode_server"]["url"]
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
    assert m and int(m.group(1)) > 0, url
    assert httpx.get(url + "/global/health", timeout=5).json()["healthy"] is True
    pid = stack.agent.opencode_pid()
    assert pid is not None and "--port 0" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_start_prompt_reply_as_events_and_tokens(stack: Stack) -> None:
    sess = stack.start("hello e2e")
    sid = sess["id"]
    assert sid.startswith("ses_") and sess["project"] == "demo" and sess["node_id"] == NODE
    assert sess["status"] in ("running", "idle")
    done = wait_status(stack.sup, sid, "idle")
    wait_for(lambda: reply_text(stack.sup, sid).strip() == "FAKE-REPLY: hello e2e", "the reply as delta events")

    got = halctl_json(stack.sup, "sessions", "get", sid)
    assert got["tokens"]["input"] > 0 and got["tokens"]["output"] > 0
    assert got["tokens"]["total"] >= got["tokens"]["input"] + got["tokens"]["output"]
    assert got["model"] == "fake/fake-model" and got["error"] is None and done["status"] == "idle"

    logs = halctl_json(stack.sup, "sessions", "logs", sid, "--limit", "1000")
    types = [e["type"] for e in logs]
    for t in ("session.created", "session.status", "message.updated", "message.part.delta", "session.idle",
              "session.state"):
        assert t in types, (t, types)
    assert "plugin.added" not in types
    seqs = [e["seq"] for e in logs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    states = [e["data"]["status"] for e in logs if e["type"] == "session.state"]
    assert "running" in states and states[-1] == "idle"

    # prompt and resume through halctl
    res = halctl(stack.sup, "sessions", "prompt", sid, "second", "message")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: "FAKE-REPLY: second message" in reply_text(stack.sup, sid), "second reply")
    wait_status(stack.sup, sid, "idle")
    assert halctl(stack.sup, "sessions", "resume", sid).returncode == 0
    wait_for(lambda: "FAKE-REPLY: continue" in reply_text(stack.sup, sid), "reply to the resume message")


def test_kill_a_running_session(stack: Stack) -> None:
    sid = stack.start("SLOW please")["id"]
    wait_for(lambda: stack.llm_saw("SLOW please"), "slow request at the LLM")
    wait_status(stack.sup, sid, "running")
    res = halctl(stack.sup, "sessions", "kill", sid)
    assert res.returncode == 0, res.stderr
    wait_status(stack.sup, sid, "killed", timeout=10)
    # The status is what the kill command reported; opencode's own events about it follow.
    wait_for(lambda: "session.deleted" in [e["type"] for e in session_events(stack.sup, sid)], "session.deleted", 10)
    errors = wait_for(lambda: session_events(stack.sup, sid, "session.error"), "the abort's session.error", 10)
    assert errors and errors[0]["data"]["error"]["name"] == "MessageAbortedError"  # the abort
    assert session_of(stack.sup, sid)["error"] is None  # an abort is not an error
    res = halctl(stack.sup, "sessions", "prompt", sid, "still there?")
    assert res.returncode != 0


def test_permission_request_is_waiting_input(stack: Stack) -> None:
    sid = stack.start("TOOLCALL please")["id"]
    s = wait_status(stack.sup, sid, "waiting_input")
    assert s["status"] == "waiting_input"
    asked = wait_for(lambda: session_events(stack.sup, sid, "permission.asked"), "permission.asked stored", 10)
    assert asked and asked[0]["data"]["permission"] == "bash"
    assert halctl(stack.sup, "sessions", "kill", sid).returncode == 0
    wait_status(stack.sup, sid, "killed", timeout=10)


def test_upstream_401_is_an_error_with_the_message(stack: Stack) -> None:
    sid = stack.start("FAIL401 now")["id"]
    s = wait_status(stack.sup, sid, "error")
    assert "Incorrect API key provided" in s["error"]
    got = halctl_json(stack.sup, "sessions", "get", sid)
    assert got["status"] == "error" and "Incorrect API key" in got["error"]


def test_unknown_model_is_an_error_with_the_message(stack: Stack) -> None:
    """opencode 1.18.33 creates the session (the model is not checked then); the prompt then fails
    asynchronously with session.error "Model not found: nope/no-such-model ...": the session is
    `error` with that message."""
    sess = stack.start("hi", "--model", "nope/no-such-model")
    sid = sess["id"]
    assert sid.startswith("ses_")
    s = wait_status(stack.sup, sid, "error")
    assert s["error"].startswith("Model not found: nope/no-such-model"), s["error"]
    errors = wait_for(lambda: session_events(stack.sup, sid, "session.error"), "session.error stored", 10)
    assert errors and "Model not found: nope/no-such-model" in errors[0]["data"]["error"]["data"]["message"]


def test_handover_starts_a_session_that_reads_the_context(stack: Stack) -> None:
    old = stack.start("plan the work")["id"]
    wait_status(stack.sup, old, "idle")
    out = halctl_json(stack.sup, "sessions", "handover", old)
    result = out.get("output", out)
    assert result["old_session"]["id"] == old and result["old_session"]["status"] == "killed"
    assert result["idle_wait"] == "idle"
    new = result["session"]["id"]
    assert new != old and result["session"]["project"] == "demo"
    assert result["session"]["directory"] == str(stack.project)
    assert stack.llm_saw("HANDOVER:")  # the old session was asked to write its notes first
    wait_for(lambda: stack.llm_saw("read .context/PROGRESS.md and .context/CURRENT_TASK.md"), "init prompt at LLM")
    # The LLM saw the prompt before the agent's events about it are necessarily stored.
    first_user = wait_for(lambda: next((e for e in session_events(stack.sup, new, "message.part.updated")
                                        if e["data"]["part"].get("type") == "text"), None),
                          "the new session's first text part", 15)
    assert ".context/PROGRESS.md" in first_user["data"]["part"]["text"]
    assert session_of(stack.sup, old)["status"] == "killed"
    wait_status(stack.sup, new, "idle")
    assert (stack.project / ".context").is_dir()


def test_restart_replaces_the_session(stack: Stack) -> None:
    old = stack.start()["id"]
    res = halctl_json(stack.sup, "sessions", "restart", old)
    result = res.get("output", res)
    new = result["session"]["id"]
    assert result["old_session"]["status"] == "killed" and result["idle_wait"] == "skipped"
    wait_status(stack.sup, old, "killed")
    wait_status(stack.sup, new, "running", "idle")


def test_opencode_killed_is_restarted_and_reported(stack: Stack) -> None:
    before = stack.start("before the crash")["id"]
    wait_status(stack.sup, before, "idle")
    pid = stack.agent.opencode_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def lifecycle() -> list[str] | None:
        evs = api_get(stack.sup, "/api/v1/events", node_id=NODE, limit=10000)
        types = [e["type"] for e in evs if e["type"].startswith("opencode.")]
        tail = types[types.index("opencode.exited"):] if "opencode.exited" in types else []
        return tail if tail[:3] == ["opencode.exited", "opencode.restarting", "opencode.started"] else None

    wait_for(lifecycle, "opencode.exited -> restarting -> started", 45)
    exited = api_get(stack.sup, "/api/v1/events", node_id=NODE, type="opencode.exited")[-1]
    assert exited["data"]["returncode"] == -signal.SIGKILL
    new_pid = stack.agent.opencode_pid()
    assert new_pid is not None and new_pid != pid
    assert stack.agent.running()
    # the old session survived in opencode's database and is still reported; commands reach the new
    # server and its events reach the supervisor (the agent followed it to its new port)
    wait_status(stack.sup, before, "idle")
    after = stack.start()["id"]
    wait_for(lambda: session_events(stack.sup, after, "session.created"), "session.created from the new server")


def test_attach_mode_with_password(stack: Stack, opencode_bin: str, tmp_path: Path) -> None:
    """opencode.manage: false against a password-protected `opencode serve` the test runs itself: a
    second node attaches with opencode.password; a session started through halctl replies as events."""
    password = "attach-secret-7"
    project = tmp_path / "attached"
    project.mkdir()
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "npm_config_offline": "true",
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
           "OPENCODE_SERVER_PASSWORD": password,
           **opencode_env(tmp_path / "home", opencode_config_content(stack.fake.base_url))}
    log = open(tmp_path / "opencode.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([opencode_bin, "serve", "--hostname", "127.0.0.1", "--port", str(port)],
                              cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    agent = AgentProc(tmp_path / "agent", stack.sup.ws_url, stack.sup.agent_token, node_id="e2e-attach",
                      projects=[("attached", str(project))], manage=False, opencode_port=port,
                      extra={"opencode": {"password": password}}, env=opencode_env(tmp_path / "agent-home", "{}"),
                      clean_env=True)
    try:
        def health() -> bool:
            assert server.poll() is None, (tmp_path / "opencode.log").read_text()
            return httpx.get(url + "/global/health", auth=("opencode", password), timeout=2).status_code == 200

        wait_for(health, "opencode serve up", 45)
        assert httpx.get(url + "/global/health", timeout=2).status_code == 401  # really protected

        agent.start()
        n = agent.wait_online(stack.sup, timeout=60, sessions_available=True)
        assert n["capabilities"]["opencode_server"]["mode"] == "attach"
        assert n["capabilities"]["opencode_server"]["state"] == "running"

        sess = halctl_json(stack.sup, "sessions", "start", "attached", "--prompt", "hello attached")
        assert sess["node_id"] == "e2e-attach"
        sid = sess["id"]
        wait_status(stack.sup, sid, "idle")
        wait_for(lambda: reply_text(stack.sup, sid).strip() == "FAKE-REPLY: hello attached", "the reply as events")
        assert halctl(stack.sup, "sessions", "prompt", sid, "and again").returncode == 0
        wait_for(lambda: "FAKE-REPLY: and again" in reply_text(stack.sup, sid), "second reply")
    finally:
        agent.cleanup()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)  # its own group: nothing it started lives on
        server.wait(10)
        log.close()
