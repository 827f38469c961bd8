"""Global options, precedence, exit codes and start-up cost of halctl."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from tests.fakes.supervisor_api import TOKEN, URL, FakeSupervisor, err, ok

NODE = {"id": "n1", "hostname": "worker-1", "status": "online", "projects": ["api"], "resources": {},
        "last_heartbeat": "2025-01-02T03:04:05.000Z", "connected_at": 1735786800.0}


def _closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_unreachable_supervisor_exits_3(halctl) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{_closed_port()}"
    result = halctl("--supervisor-url", url, "--auth-token", TOKEN, "--timeout", "5", "nodes", "list", bare=True)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot reach supervisor at " + url)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_timeout_exits_3(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    fake.route("GET", "/api/v1/nodes", slow)
    result = halctl("nodes", "list")
    assert result.exit_code == 3
    assert "timed out" in result.stderr


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_exits_4(halctl, fake: FakeSupervisor, status: int) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/nodes", lambda _r: err(status, "FORBIDDEN", "nope"))
    result = halctl("nodes", "list")
    assert result.exit_code == 4
    assert result.stderr == "error: authentication failed (check --auth-token / HALCTL_AUTH_TOKEN)\n"


def test_wrong_token_exits_4(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    result = halctl("--supervisor-url", URL, "--auth-token", "wrong", "nodes", "list", bare=True)
    assert result.exit_code == 4


def test_server_error_exits_1_with_message_and_code(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/nodes", lambda _r: err(503, "SERVICE_UNAVAILABLE", "database is locked"))
    result = halctl("nodes", "list")
    assert result.exit_code == 1
    assert result.stderr == "error: database is locked (SERVICE_UNAVAILABLE, HTTP 503)\n"


def test_not_found_exits_1(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    result = halctl("nodes", "get", "ghost")
    assert result.exit_code == 1
    assert result.stderr == "error: not found: node ghost\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--output", "xml", "nodes", "list"],
        ["nodes", "get"],
        ["frobnicate"],
        ["sessions", "list", "--status", "sleeping"],
        ["sessions", "logs", "s1", "--limit", "0"],
        ["--timeout", "0", "nodes", "list"],
        ["--supervisor-url", "ftp://x", "nodes", "list"],
    ],
)
def test_usage_errors_exit_2_on_one_line(halctl, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = halctl(*args, bare=True)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_no_args_shows_help_exit_2(halctl) -> None:  # type: ignore[no-untyped-def]
    result = halctl(bare=True)
    assert result.exit_code == 2
    assert "Usage: halctl" in result.stderr


def test_help_exits_0(halctl) -> None:  # type: ignore[no-untyped-def]
    result = halctl("--help", bare=True)
    assert result.exit_code == 0
    for name in ("nodes", "sessions", "status", "audit", "config", "--supervisor-url", "--auth-token", "--output"):
        assert name in result.stdout


def test_ws_url_is_mapped_to_api_port(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", [NODE])
    result = halctl("--supervisor-url", "ws://sup.test:8420/ws/agent", "--auth-token", TOKEN, "nodes", "list",
                    bare=True)
    assert result.exit_code == 0, result.stderr
    request = fake.last("/api/v1/nodes")
    assert (request.url.scheme, request.url.host, request.url.port) == ("http", "sup.test", 8421)


def test_env_supplies_url_and_token(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", [])
    result = halctl("nodes", "list", bare=True,
                    env={"HALCTL_SUPERVISOR_URL": "wss://sup.test", "HALCTL_AUTH_TOKEN": TOKEN})
    assert result.exit_code == 0, result.stderr
    request = fake.last("/api/v1/nodes")
    assert str(request.url).startswith("https://sup.test:8421/")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_flag_token_beats_env(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", [])
    result = halctl("--supervisor-url", URL, "--auth-token", TOKEN, "nodes", "list", bare=True,
                    env={"HALCTL_AUTH_TOKEN": "from-env"})
    assert result.exit_code == 0
    assert fake.last().headers["authorization"] == f"Bearer {TOKEN}"


def test_default_url(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", [])
    result = halctl("--auth-token", TOKEN, "nodes", "list", bare=True)
    assert result.exit_code == 0, result.stderr
    assert str(fake.last().url) == "http://localhost:8421/api/v1/nodes"


def test_output_json_and_yaml_print_data(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", [NODE])
    as_json = halctl("--output", "json", "nodes", "list")
    assert as_json.exit_code == 0
    assert as_json.json() == [NODE]
    assert as_json.stdout.startswith('[\n  {\n    "id": "n1"')  # 2-space indent
    as_yaml = halctl("-o", "yaml", "nodes", "list")
    import yaml

    assert yaml.safe_load(as_yaml.stdout) == [NODE]


def test_unexpected_exception_is_one_line(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/nodes", lambda _r: ok([NODE["id"]]))  # garbage: strings, not objects
    result = halctl("nodes", "list")
    assert "Traceback" not in result.stderr
    assert result.exit_code == 1 and result.stderr.count("\n") == 1


@pytest.mark.process
def test_help_is_fast_and_light() -> None:
    code = (
        "import sys, time; t = time.perf_counter();"
        "from halswarm.cli.main import run; rc = run(['--help']);"
        "heavy = [m for m in ('httpx', 'rich', 'yaml', 'ansible', 'ansible_runner') if m in sys.modules];"
        "print(rc, heavy, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert proc.stderr.strip().splitlines()[-1] == "0 []", proc.stderr


def _write_cli_config(home, text: str, name: str = ".config/halctl/config.yaml"):  # type: ignore[no-untyped-def]
    path = home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


FILE_TOKEN = "file-token-abcdefghijklmnopqrstuvwxyz012345"


def test_config_file_supplies_url_token_and_output(halctl, fake: FakeSupervisor, isolated_env) -> None:  # type: ignore[no-untyped-def]
    _write_cli_config(isolated_env, f"supervisor_url: ws://sup.test:8420\nauth_token: {FILE_TOKEN}\noutput: json\n")
    fake.token = FILE_TOKEN
    fake.reply("GET", "/api/v1/nodes", [NODE])
    result = halctl("nodes", "list", bare=True)
    assert result.exit_code == 0, result.stderr
    assert result.json() == [NODE]
    request = fake.last("/api/v1/nodes")
    assert str(request.url) == "http://sup.test:8421/api/v1/nodes"
    assert request.headers["authorization"] == f"Bearer {FILE_TOKEN}"


def test_token_precedence_flag_env_file(halctl, fake: FakeSupervisor, isolated_env) -> None:  # type: ignore[no-untyped-def]
    _write_cli_config(isolated_env, f"supervisor_url: {URL}\nauth_token: {FILE_TOKEN}\n")
    fake.reply("GET", "/api/v1/nodes", [])
    fake.token = "x" * 40  # accept anything we send; we look at the header
    tokens = []
    for args, env in (
        (["--auth-token", "flag-token"], {"HALCTL_AUTH_TOKEN": "env-token"}),
        ([], {"HALCTL_AUTH_TOKEN": "env-token"}),
        ([], {}),
    ):
        halctl(*args, "nodes", "list", bare=True, env=env)
        tokens.append(fake.last().headers.get("authorization"))
    assert tokens == ["Bearer flag-token", "Bearer env-token", f"Bearer {FILE_TOKEN}"]


def test_go_config_json_is_read(halctl, fake: FakeSupervisor, isolated_env) -> None:  # type: ignore[no-untyped-def]
    doc = {"supervisor_url": "http://sup.test:8421", "auth_token": FILE_TOKEN, "format": "json"}
    _write_cli_config(isolated_env, json.dumps(doc), name=".halctl/config.json")
    fake.token = FILE_TOKEN
    fake.reply("GET", "/api/v1/nodes", [])
    result = halctl("nodes", "list", bare=True)
    assert result.exit_code == 0, result.stderr
    assert result.json() == []


def test_flags_beat_config_file(halctl, fake: FakeSupervisor, isolated_env) -> None:  # type: ignore[no-untyped-def]
    _write_cli_config(isolated_env, f"supervisor_url: http://elsewhere:1\nauth_token: {FILE_TOKEN}\noutput: json\n")
    fake.reply("GET", "/api/v1/nodes", [NODE])
    result = halctl("-o", "table", "nodes", "list")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ID")
    assert fake.last().url.host == "sup.test"


def test_broken_config_file_is_one_line_exit_1(halctl, isolated_env) -> None:  # type: ignore[no-untyped-def]
    _write_cli_config(isolated_env, "output: purple\n")
    result = halctl("--auth-token", TOKEN, "nodes", "list", bare=True)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: halctl config file: ")
    assert result.stderr.count("\n") == 1


def test_actor_header_precedence_flag_env_config_default(halctl, fake, isolated_env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import getpass

    fake.reply("GET", "/api/v1/nodes", [NODE])

    def actor_sent() -> str | None:
        return fake.last("/api/v1/nodes").headers.get("x-hal-actor")

    monkeypatch.setattr(getpass, "getuser", lambda: "opuser")
    assert halctl("nodes", "list").exit_code == 0
    assert actor_sent() == f"opuser@{socket.gethostname()}"
    cfg = isolated_env / ".config" / "halctl" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("actor: from-config\n")
    assert halctl("nodes", "list").exit_code == 0
    assert actor_sent() == "from-config"
    assert halctl("nodes", "list", env={"HALCTL_ACTOR": "from-env"}).exit_code == 0
    assert actor_sent() == "from-env"
    assert halctl("--actor", "alice@laptop", "nodes", "list", env={"HALCTL_ACTOR": "from-env"}).exit_code == 0
    assert actor_sent() == "alice@laptop"
    result = halctl("--actor", "  ", "nodes", "list")
    assert result.exit_code == 2 and "--actor must not be empty" in result.stderr


def test_actor_header_value_is_ascii_and_bounded() -> None:
    from halswarm.cli.client import actor_header_value

    assert actor_header_value("  bob@host\n") == "bob@host"
    assert actor_header_value("jürgen@h") == "j\\xfcrgen@h"
    assert len(actor_header_value("x" * 500)) == 100
