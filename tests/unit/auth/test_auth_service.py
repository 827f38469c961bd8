"""AuthService with stand-in CLIs (shell scripts): reporting, the three commands, persistence, no leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.auth import AuthService
from halswarm.core.secret_values import SECRETS
from halswarm.protocol import AuthState, Command, CredentialSync
from tests.support.auth_tools import CLAUDE_MANUAL_REQUIRED, stand_in_tools
from tests.support.waiting import on_loop

pytestmark = pytest.mark.process  # runs stand-in CLIs as processes

SECRET = "sk-ant-api03-UNITSECRET-7f3a9c"
SECRET2 = "ghp_UNITSECRET2_d41d8cd98f"


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Any]:
    env = stand_in_tools(tmp_path)
    return {"env": env, "home": Path(env["HOME"]), "data": tmp_path / "data"}


class FakeOpencode:
    """The two routes the service uses, recording calls (values kept only to assert on them)."""

    def __init__(self) -> None:
        self.connected = ["opencode"]
        self.calls: list[tuple[str, str, Any]] = []

    async def _request(self, method: str, path: str, *, json_body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path, json_body))
        if (method, path) == ("GET", "/provider"):
            return {"all": [], "connected": list(self.connected)}
        if method == "PUT" and path.startswith("/auth/"):
            self.connected.append(path.rsplit("/", 1)[1])
            return True
        raise AssertionError(path)


def make(tools: dict[str, Any], frames: list[Any], **kw: Any) -> AuthService:
    return AuthService(None, frames.append, kw.pop("client", None), node_id="agent-node-1",
                       data_dir=str(tools["data"]), tool_paths=kw.pop("tool_paths", {}), base_env=tools["env"],
                       interval=kw.pop("interval", 60), **kw)


def states(frames: list[Any]) -> dict[str, tuple[str, str]]:
    reports = [f for f in frames if isinstance(f, AuthState)]
    # No report yet (the flow's end is emitted before the fresh state is probed): nothing known.
    return {e.tool: (e.status, e.reason) for e in reports[-1].states} if reports else {}


async def test_first_report_and_change_detection(tools: dict[str, Any]) -> None:
    frames: list[Any] = []
    svc = make(tools, frames, interval=0.2)
    svc.start()
    try:
        await asyncio.wait_for(svc.first_report.wait(), 20)
        assert states(frames) == {"claude_code": ("unauthenticated", "not logged in"),
                                  "codex": ("unauthenticated", "Not logged in"),
                                  "opencode": ("unauthenticated", "no credentials")}
        assert [f.credential_version for f in frames if isinstance(f, CredentialSync)] == [0]
        n = len([f for f in frames if isinstance(f, AuthState)])
        (tools["home"] / ".codex").mkdir()
        (tools["home"] / ".codex" / "auth.json").write_text('{"OPENAI_API_KEY": "k"}')
        await on_loop(lambda: len([f for f in frames if isinstance(f, AuthState)]) > n, "another auth state frame")
        assert states(frames)["codex"] == ("authenticated", "API key configured (codex login)")
        snap = svc.snapshot()
        assert snap["tools"]["codex"]["version"] == "codex-cli 0.171.0"
        assert snap["tools"]["claude_code"]["remote_oauth"] is False
        assert snap["tools"]["codex"]["path"].endswith("/bin/codex")
    finally:
        await svc.stop()


async def test_auth_refresh_command(tools: dict[str, Any]) -> None:
    frames: list[Any] = []
    svc = make(tools, frames)
    res = await svc.handlers()["auth_refresh"](Command("c1", "auth_refresh"))
    assert res.status == "success"
    assert res.output["auth_states"]["opencode"]["status"] == "unauthenticated"
    assert res.output["auth_states"]["opencode"]["version"] == "1.18.33"
    assert isinstance(frames[0], AuthState) and isinstance(frames[1], CredentialSync)
    bad = await svc.handle_auth_refresh(Command("c2", "auth_refresh", args={"tool": "vim"}))
    assert bad.status == "failure"


async def test_not_installed(tools: dict[str, Any], tmp_path: Path) -> None:
    frames: list[Any] = []
    tools["env"]["PATH"] = "/nonexistent"
    svc = make(tools, frames, tool_paths={"claude": str(tmp_path / "missing" / "claude")})
    await svc.refresh()
    st = svc.states["claude_code"]
    assert st.status == "not_installed" and st.installed is False and "missing/claude" in st.reason


async def test_credential_push_applies_persists_and_never_leaks(
        tools: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    frames: list[Any] = []
    restarts: list[list[str]] = []

    async def restart(env: dict[str, str]) -> None:
        restarts.append(sorted(env))

    client = FakeOpencode()
    svc = make(tools, frames, client=lambda: client, restart_opencode=restart)
    cmd = Command("push-1", "credential_push", args={"env_vars": {"ANTHROPIC_API_KEY": SECRET,
                                                                  "GITHUB_TOKEN": SECRET2}, "version": 3})
    res = await svc.handlers()["credential_push"](cmd)
    assert res.status == "success", res.error
    assert res.output["credential_version"] == 3
    assert res.output["applied"] == ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]
    assert res.output["opencode"] == {"providers": ["anthropic"], "restarted": True}
    assert restarts == [["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]]
    assert ("PUT", "/auth/anthropic", {"type": "api", "key": SECRET}) in client.calls
    assert [f.credential_version for f in frames if isinstance(f, CredentialSync)] == [3]
    assert states(frames)["claude_code"] == ("authenticated", "API key from ANTHROPIC_API_KEY")
    assert states(frames)["opencode"] == ("authenticated", "providers connected: anthropic")
    # persisted: the values in their own 0600 file (with the version), names and version in the other
    state_file = tools["data"] / "credentials.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    doc = json.loads(state_file.read_text())
    assert doc["version"] == 3 and doc["names"] == ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"]
    values = tools["data"] / "credentials.values.json"
    assert stat.S_IMODE(values.stat().st_mode) == 0o600
    assert json.loads(values.read_text())["env"] == {"ANTHROPIC_API_KEY": SECRET, "GITHUB_TOKEN": SECRET2}
    assert json.loads(values.read_text())["version"] == 3
    # duplicate delivery: same answer, applied once
    again = await svc.handle_credential_push(cmd)
    assert again is res and len(restarts) == 1
    # never a value in the result, the frames, the logs or any other file of the state dir
    blob = json.dumps(res.output) + repr(frames) + caplog.text
    blob += "".join(p.read_text(errors="replace") for p in tools["data"].rglob("*") if p.is_file() and p != values)
    assert SECRET not in blob and SECRET2 not in blob


@pytest.mark.parametrize(("args", "why"), [
    ({"env_vars": {}}, "non-empty"),
    ({"env_vars": {"1BAD": "v"}}, "invalid variable name"),
    ({"env_vars": {"PATH": "/evil"}}, "may not be pushed"),
    ({"env_vars": {"A": ""}}, "non-empty string"),
    ({"env_vars": {"A": "v"}, "version": -1}, "version"),
])
async def test_credential_push_rejected(tools: dict[str, Any], args: dict[str, Any], why: str) -> None:
    frames: list[Any] = []
    res = await make(tools, frames).handle_credential_push(Command("p", "credential_push", args=args))
    assert res.status == "failure" and why in (res.error or "")
    assert not frames


async def test_pushed_credentials_survive_a_restart_and_an_older_push_is_refused(tools: dict[str, Any]) -> None:
    svc = make(tools, [])
    ok = await svc.handle_credential_push(Command("p", "credential_push", args={"env_vars": {"X_TOKEN": SECRET},
                                                                                "version": 5}))
    assert ok.status == "success" and svc.credential_version == 5
    SECRETS.clear()  # a fresh process: only what the restart restores is known
    svc2 = make(tools, [])
    svc2.start()
    await svc2.stop()
    assert svc2.credential_version == 5 and svc2.toolenv.pushed == {"X_TOKEN": SECRET}
    assert SECRETS.scrub(f"echo {SECRET}") == "echo [REDACTED]"  # restored values are redacted from logs
    assert svc2.toolenv.env()["X_TOKEN"] == SECRET  # the tools get it again
    # an older push never replaces a newer one: refused, nothing changed in memory or on disk
    old = await svc2.handle_credential_push(Command("q", "credential_push", args={"env_vars": {"X_TOKEN": SECRET2},
                                                                                  "version": 4}))
    assert old.status == "failure" and "version 4 is older than version 5" in (old.error or "")
    assert SECRET2 not in (old.error or "") and svc2.toolenv.pushed == {"X_TOKEN": SECRET}
    assert json.loads((tools["data"] / "credentials.values.json").read_text())["env"] == {"X_TOKEN": SECRET}
    # the same version again, or a newer one, is applied
    same = await svc2.handle_credential_push(Command("r", "credential_push", args={"env_vars": {"Y_TOKEN": SECRET2},
                                                                                   "version": 5}))
    assert same.status == "success" and svc2.toolenv.pushed == {"Y_TOKEN": SECRET2}
    svc3 = make(tools, [])
    svc3.load()
    assert svc3.credential_version == 5 and svc3.toolenv.pushed == {"Y_TOKEN": SECRET2}


async def test_a_newer_push_on_disk_is_never_overwritten(tools: dict[str, Any]) -> None:
    """Two writers (another agent process on the same data_dir): the file keeps the newer push."""
    first, second = make(tools, []), make(tools, [])
    first.load()
    second.load()
    await first.handle_credential_push(Command("a", "credential_push", args={"env_vars": {"X_TOKEN": SECRET},
                                                                             "version": 7}))
    res = await second.handle_credential_push(Command("b", "credential_push", args={"env_vars": {"X_TOKEN": SECRET2},
                                                                                    "version": 6}))
    assert res.status == "success" and any("older than version 7" in w for w in res.output["warnings"])
    restarted = make(tools, [])
    restarted.load()
    assert restarted.credential_version == 7 and restarted.toolenv.pushed == {"X_TOKEN": SECRET}


async def test_restart_reports_version_zero_when_values_were_lost(tools: dict[str, Any],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """State written by an agent that kept values in memory only, or an unusable values file."""
    frames: list[Any] = []
    svc = make(tools, frames)
    await svc.handle_credential_push(Command("p", "credential_push", args={"env_vars": {"X_TOKEN": SECRET},
                                                                           "version": 5}))
    assert svc.credential_version == 5
    values = tools["data"] / "credentials.values.json"
    values.unlink()
    svc2 = make(tools, [])
    svc2.start()
    await svc2.stop()
    assert svc2.credential_version == 0 and svc2.credentials.names == ["X_TOKEN"] and svc2.toolenv.pushed == {}
    values.write_text('{"version": 5, "env": {"X_TOKEN": ""}}')  # damaged: refused, value never quoted
    svc3 = make(tools, [])
    svc3.load()
    assert svc3.credential_version == 0 and svc3.toolenv.pushed == {}
    assert "pushed credentials not restored" in caplog.text


async def test_oauth_trigger_claude_is_manual_required(tools: dict[str, Any]) -> None:
    frames: list[Any] = []
    svc = make(tools, frames)
    await svc.refresh()
    res = await svc.handlers()["oauth_trigger"](Command("o1", "oauth_trigger", args={"tool": "claude_code"}))
    assert res.status == "success"
    assert res.output == CLAUDE_MANUAL_REQUIRED
    await on_loop(lambda: svc.states["claude_code"].status == "manual_required", "claude_code manual_required")
    # once logged in (here: a pushed key) the override is gone
    await svc.handle_credential_push(Command("p", "credential_push", args={"env_vars": {"ANTHROPIC_API_KEY": SECRET},
                                                                           "version": 1}))
    assert svc.states["claude_code"].status == "authenticated"
    assert "claude_code" not in svc._manual


async def test_oauth_trigger_codex_device_flow(tools: dict[str, Any]) -> None:
    frames: list[Any] = []
    events: list[tuple[str, dict[str, Any]]] = []
    svc = make(tools, frames, emit_event=lambda t, d: events.append((t, d)))
    try:
        await svc.refresh()
        res = await svc.handle_oauth_trigger(Command("o2", "oauth_trigger", args={"tool": "codex"}))
        assert res.status == "success"
        assert res.output["status"] == "challenge"
        assert res.output["challenge_url"] == "https://auth.openai.com/codex/device"
        assert res.output["user_code"] == "K7QH-2XWPM"
        # a second trigger while it runs answers with the same challenge
        again = await svc.handle_oauth_trigger(Command("o3", "oauth_trigger", args={"tool": "codex"}))
        assert again.output["flow_id"] == res.output["flow_id"]
        await on_loop(lambda: events, "an auth event")
        assert events[0][0] == "auth.oauth_completed" and events[0][1]["status"] == "success"
        await on_loop(lambda: states(frames).get("codex", ("",))[0] == "authenticated", "codex authenticated")
    finally:
        # Always stop: a device flow left running would keep the event loop from closing.
        await asyncio.wait_for(svc.stop(), 10)


async def test_oauth_trigger_unknown_tool_and_opencode_provider(tools: dict[str, Any]) -> None:
    svc = make(tools, [])
    res = await svc.handle_oauth_trigger(Command("o", "oauth_trigger", args={"tool": "vim"}))
    assert res.output["status"] == "manual_required"
    assert res.output["manual_guidance"]["reason_code"] == "provider_unsupported"
    assert res.output["manual_guidance"]["login_command"] == "vim auth login"
    res = await svc.handle_oauth_trigger(Command("o", "oauth_trigger", args={"tool": "opencode",
                                                                             "provider": "anthropic"}))
    assert res.output["status"] == "manual_required" and "no device-code flow" in res.output["reason"]
    assert (await svc.handle_oauth_trigger(Command("o", "oauth_trigger"))).status == "failure"
