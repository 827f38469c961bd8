"""`halctl auth ...` against a fake supervisor (the runbook's text layouts, JSON, exit codes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from halswarm.cli import client as client_mod
from halswarm.cli.auth_cmd import auth, parse_env, render_drift, render_status
from halswarm.cli.errors import UsageProblem
from halswarm.cli.main import add_output_option, cli, run
from halswarm.ops.ssh_login import SshLoginError, login_command, status_command
from tests.fakes.supervisor_api import TOKEN, URL, FakeSupervisor, Result, ok

AUTH = {
    "node_id": "agent-node-1", "credential_sync": "in_sync", "credential_version": 1,
    "auth_states": {"claude_code": {"tool": "claude_code", "status": "authenticated",
                                    "reason": "Logged in as user@example.com", "checked_at": 1.0}},
}
MANUAL = {
    "status": "manual_required",
    "reason": "Tool 'claude_code' does not support remote OAuth flows",
    "manual_guidance": {
        "tool": "claude_code", "reason_code": "no_remote_oauth",
        "reason": "Tool 'claude_code' does not support remote OAuth flows",
        "steps": ["SSH into the agent server: ssh user@agent-node-1", "Run the login command: claude auth login",
                  "Follow the browser-based authentication flow", "Verify auth status: claude auth status"],
        "login_command": "claude auth login", "node_id": "agent-node-1",
    },
}


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Mount the group the way halswarm/cli/main.py does once it is wired; isolate HOME and env."""
    if "auth" not in cli.commands:
        monkeypatch.setitem(cli.commands, "auth", auth)
        add_output_option(auth)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    for name in ("HALCTL_SUPERVISOR_URL", "HALCTL_AUTH_TOKEN", "HALCTL_OUTPUT", "HAL_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSupervisor:
    sup = FakeSupervisor()
    monkeypatch.setattr(client_mod, "transport_factory", lambda: httpx.MockTransport(sup.handle))
    return sup


@pytest.fixture
def halctl() -> Callable[..., Result]:
    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        with runner.isolation(env=env) as (out, errs, _):
            code = run(["--supervisor-url", URL, "--auth-token", TOKEN, *args])
            sys.stdout.flush()
            sys.stderr.flush()
        return Result(code, out.getvalue().decode(), errs.getvalue().decode())

    return invoke


def test_render_status_is_the_runbook_layout() -> None:
    assert render_status(AUTH) == (
        "Node: agent-node-1\n"
        "Credential Sync: in_sync\n"
        "Credential Version: 1\n"
        "\n"
        "Tool            Status              Reason\n"
        "----            ------              ------\n"
        "claude_code     authenticated       Logged in as user@example.com"
    )
    assert render_status({"node_id": "n"}).endswith("(no auth states reported)")


def test_render_drift_is_the_runbook_layout() -> None:
    assert render_drift([{"node_id": "agent-node-1", "credential_sync": "drift_detected",
                          "credential_version": 0}]) == (
        "Node ID         Sync Status       Version\n"
        "-------         -----------       -------\n"
        "agent-node-1    drift_detected    0\n"
        "\n"
        "Total: 1 nodes with credential drift"
    )


def test_parse_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "creds.env"
    f.write_text("# comment\nexport A=1\nB='two'\n")
    monkeypatch.setenv("FROM_ENV", "three")
    assert parse_env(["C=x=y", "FROM_ENV"], str(f)) == {"A": "1", "B": "two", "C": "x=y", "FROM_ENV": "three"}
    with pytest.raises(UsageProblem):
        parse_env(["NOPE_NOT_SET_ANYWHERE"], None)
    with pytest.raises(UsageProblem):
        parse_env(["E="], None)


def test_auth_status_table_and_json(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes/agent-node-1/auth", AUTH)
    res = halctl("auth", "status", "agent-node-1")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == render_status(AUTH)
    res = halctl("auth", "status", "agent-node-1", "--output", "json")
    assert res.json() == AUTH


def test_auth_drift(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    rows = [{"node_id": "n1", "credential_sync": "drift_detected", "credential_version": 0}]
    fake.reply("GET", "/api/v1/auth/drift", rows)
    res = halctl("auth", "drift")
    assert res.exit_code == 0 and "n1" in res.stdout and "Total: 1 nodes with credential drift" in res.stdout


def test_auth_push_body_and_output(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/commands/credentials/push", lambda req: ok({
        "command_id": "c", "status": "success", "node_id": "n1", "credential_sync": "in_sync",
        "output": {"credential_version": 4, "applied": ["A", "B"], "warnings": []}}))
    res = halctl("auth", "push", "n1", "--env", "A=secret-a", "--env", "B=secret-b", "--version", "4")
    assert res.exit_code == 0, res.stderr
    assert FakeSupervisor.body(fake.last("/api/v1/commands/credentials/push")) == {
        "target_node": "n1", "env_vars": {"A": "secret-a", "B": "secret-b"}, "version": 4}
    assert "ok (version 4, 2 variable(s): A, B)" in res.stdout and "secret" not in res.stdout


def test_auth_login_claude_prints_the_guidance_json(halctl, fake: FakeSupervisor) -> None:  # type: ignore
    fake.route("POST", "/api/v1/oauth/trigger", lambda req: ok(MANUAL))
    res = halctl("auth", "login", "agent-node-1", "claude_code", "--output", "json")
    assert res.exit_code == 0, res.stderr
    assert res.json() == MANUAL
    assert FakeSupervisor.body(fake.last("/api/v1/oauth/trigger")) == {"node_id": "agent-node-1",
                                                                      "tool": "claude_code"}
    res = halctl("auth", "login", "agent-node-1", "claude_code")  # not a terminal: guidance + the --ssh hint
    assert "manual login required" in res.stdout and "--ssh" in res.stdout


def test_auth_login_device_flow_waits_for_the_result(halctl, fake: FakeSupervisor) -> None:  # type: ignore
    fake.route("POST", "/api/v1/oauth/trigger", lambda req: ok({
        "status": "challenge", "tool": "codex", "flow_id": "f1", "challenge_url": "https://auth.openai.com/codex/device",
        "user_code": "ABCD-EFGH"}))
    fake.reply("GET", "/api/v1/events", [{"type": "auth.oauth_completed",
                                          "data": {"tool": "codex", "flow_id": "f1", "status": "success"}}])
    fake.reply("GET", "/api/v1/nodes/n1/auth", AUTH)
    res = halctl("auth", "login", "n1", "codex")
    assert res.exit_code == 0, res.stderr
    assert "open https://auth.openai.com/codex/device" in res.stdout and "ABCD-EFGH" in res.stdout
    assert "device flow success" in res.stdout
    res = halctl("auth", "login", "n1", "codex", "-o", "json")  # JSON: the challenge, no waiting
    assert res.json()["user_code"] == "ABCD-EFGH"


def test_auth_login_failure_exit_code(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/oauth/trigger", lambda req: ok({"status": "failure", "reason": "offline"}))
    res = halctl("auth", "login", "n1", "codex")
    assert res.exit_code == 1 and "offline" in res.stderr


def test_ssh_login_commands() -> None:
    assert login_command("codex") == "codex login --device-auth"
    assert login_command("claude_code", tool_path="/opt/c d/claude") == "'/opt/c d/claude' auth login"
    assert login_command("opencode") == "opencode auth login"
    api = login_command("codex", "api-key", "/x/codex")
    assert api.startswith("sh -c ") and api.endswith(" /x/codex") and "stty -echo" in api
    assert status_command("codex", "/x/codex") == "/x/codex login status"
    with pytest.raises(SshLoginError):
        login_command("codex", "telepathy")


def test_guidance_json_roundtrip() -> None:
    from halswarm.core.auth_capability import manual_required

    assert json.loads(json.dumps(manual_required("claude_code", "agent-node-1"))) == MANUAL


def test_ssh_identity_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ssh-user/--run-as > halctl config (`ssh_user`, `run_as`) > local user / hal-agent."""
    import click

    from halswarm.cli.auth_cmd import _ssh_identity
    from halswarm.ops.ssh_login import local_user

    cfg_home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg_home))
    monkeypatch.delenv("HALCTL_CONFIG", raising=False)

    def resolve(user: str | None, run_as: str | None) -> tuple[str, str | None]:
        with click.Context(click.Command("t")):
            return _ssh_identity(user, run_as)

    assert resolve(None, None) == (local_user(), "hal-agent")
    (cfg_home / "halctl").mkdir(parents=True)
    (cfg_home / "halctl" / "config.yaml").write_text("ssh_user: alice\nrun_as: svc-agent\n")
    (cfg_home / "halctl" / "config.yaml").chmod(0o600)
    assert resolve(None, None) == ("alice", "svc-agent")
    assert resolve("bob", "hal-agent") == ("bob", "hal-agent")
