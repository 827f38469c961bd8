"""Typed configs: defaults from the schemas, aliases, overrides and the CLI config search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from halswarm.config import (
    ConfigError,
    Project,
    SupervisorConfig,
    defaults,
    load_agent_config,
    load_cli_config,
    load_supervisor_config,
    parse_supervisor_config,
)
from tests.support.config_fixtures import FIXTURES, NO_OPERATOR, TOKEN


def test_minimal_supervisor_gets_every_default(write) -> None:
    cfg, warnings = load_supervisor_config(write("s.json", {"auth_token": TOKEN}), env={})
    assert [str(w) for w in warnings] == [NO_OPERATOR]
    assert dataclasses.asdict(cfg) | {"raw": None} == {
        "host": "0.0.0.0", "port": 8420, "http_port": 8421, "auth_token": TOKEN, "operator_token": None,
        "operators": (), "alert_token": None, "allow_shared_agent_token": True,
        "heartbeat_interval_sec": 30, "heartbeat_timeout_count": 3, "allowed_origins": (), "origin_allowlist": (),
        "database_path": "/var/lib/hal-o-swarm/supervisor.db", "storage_url": "", "storage_password": None,
        "events_retention_days": 30,
        "audit_retention_days": 90, "retention_batch_rows": 2000, "retention_batch_ms": 30.0,
        "integrity_check_hours": 24.0, "tls_enabled": False, "tls_cert": None, "tls_key": None, "agent_tokens": {},
        "log_level": "info", "log_format": "text", "memory_warn_percent": 80, "max_frame_bytes": 1048576,
        "max_body_bytes": 1048576, "read_timeout_sec": 10.0,
        "command_timeout_sec": 30, "remediation_inventory": None, "remediation_auto": (), "remediation_chat_check": (),
        "remediation_window_minutes": 60, "remediation_offline_minutes": 2.0, "remediation_timeout_minutes": 15.0,
        "remediation_memory_percent": 80.0, "remediation_memory_heartbeats": 3, "remediation_cost_failures": 3,
        "remediation_supervisor_host": None, "raw": None,
        "source_path": str(write("s.json", {"auth_token": TOKEN})),
    }
    assert cfg.offline_after_sec == 90
    assert cfg.raw["policies"]["check_interval_seconds"] == 30
    assert cfg.raw["cost"]["poll_interval_minutes"] == 60


def test_full_python_supervisor_config(copy_fixture, write) -> None:
    path = copy_fixture("supervisor.full.json")
    write("shared.token", TOKEN)
    cfg, warnings = load_supervisor_config(path, strict=True, env={})
    assert warnings == []
    assert (cfg.host, cfg.port, cfg.http_port, cfg.auth_token) == ("127.0.0.1", 9420, 9421, TOKEN)
    assert cfg.operator_token == "op-8d0e4c1a9b7f6e5d4c3b2a19087f6e5d4c3b2a1908"
    assert cfg.agent_tokens == {"build-node-1": "ag-1f2e3d4c5b6a79880f1e2d3c4b5a69788f9e0d1c"}
    assert [(i.name, i.role.name) for i in cfg.operators] == [("operator", "admin"), ("alice", "viewer")]
    assert cfg.shared_agent_token == TOKEN  # explicit opt-in beside agent_tokens
    assert (cfg.events_retention_days, cfg.audit_retention_days) == (14, 365)
    assert (cfg.log_level, cfg.log_format, cfg.command_timeout_sec) == ("debug", "json", 45)
    assert (cfg.tls_enabled, cfg.tls_cert, cfg.tls_key) == (
        True, "/etc/hal-o-swarm/tls/cert.pem", "/etc/hal-o-swarm/tls/key.pem",
    )
    assert cfg.remediation_auto == ("agent-crashed", "supervisor-high-memory")
    assert cfg.remediation_inventory == "/etc/hal-o-swarm/inventory/hosts.yml"
    assert (cfg.remediation_window_minutes, cfg.remediation_offline_minutes) == (30, 2.0)
    assert (cfg.max_frame_bytes, cfg.max_body_bytes) == (2097152, 65536)
    # auto_intervention is folded into policies, and Go defaults fill what the spec form leaves out
    assert "auto_intervention" not in cfg.raw
    assert cfg.raw["policies"]["resume_on_idle"] == {
        "enabled": True, "idle_threshold_minutes": 10, "max_retries": 3,
        "idle_threshold_seconds": 600, "retry_reset_seconds": 3600,
    }
    assert cfg.raw["policies"]["kill_on_cost"]["daily_limit_usd"] == 50
    assert cfg.raw["routes"][2] == {"match": "cost.daily > 20", "target": "webhook:https://hooks.example.com/hal"}


def test_go_audit_retention_is_used_when_the_new_key_is_absent() -> None:
    cfg, _ = parse_supervisor_config({"auth_token": TOKEN, "security": {"audit": {"retention_days": 30}}})
    assert cfg.audit_retention_days == 30
    cfg, _ = parse_supervisor_config(
        {"auth_token": TOKEN, "retention": {"audit_days": 7}, "security": {"audit": {"retention_days": 30}}}
    )
    assert cfg.audit_retention_days == 7


def test_overrides_are_merged_before_validation(write) -> None:
    path = write("s.json", {"server": {"auth_token": TOKEN, "port": 8420}})
    cfg, _ = load_supervisor_config(path, env={}, overrides={"server": {"port": 9999}, "log": {"level": "debug"}})
    assert (cfg.port, cfg.auth_token, cfg.log_level) == (9999, TOKEN, "debug")
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path, env={}, overrides={"server": {"port": 0}})
    assert [p.path for p in info.value.errors] == ["server.port"]


def test_config_error_lists_every_error_one_per_line(write) -> None:
    path = write("s.json", {"server": {"port": 0, "auth_token": "x"}, "log": {"level": "loud"}, "zzz": 1})
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path, env={})
    assert str(info.value).splitlines() == [
        "log.level: must be one of debug, info, warning, error (got 'loud')",
        "server.auth_token: token is too short (1 character; at least 32 are required)",
        "server.port: must be between 1 and 65535 (got 0)",
        f"{NO_OPERATOR} (warning)",
        "zzz: unknown key (warning)",
    ]


def test_config_is_frozen_and_hides_secrets() -> None:
    cfg, _ = parse_supervisor_config({"auth_token": TOKEN, "security": {"agent_tokens": {"n": "z" * 40}}})
    assert isinstance(cfg, SupervisorConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]
    assert TOKEN not in repr(cfg) and "z" * 40 not in repr(cfg)


def test_agent_defaults(write, monkeypatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "worker-3")
    cfg, warnings = load_agent_config(write("a.json", {"supervisor_url": "wss://sup:8420/ws/agent"}),
                                      env={"HAL_AUTH_TOKEN": TOKEN})
    assert warnings == []
    assert (cfg.node_id, cfg.auth_token, cfg.opencode_port, cfg.auth_report_interval_sec) == (
        "worker-3", TOKEN, 4096, 30,
    )
    assert (cfg.opencode_manage, cfg.opencode_binary, cfg.opencode_password) == (True, "opencode", None)
    assert (cfg.data_dir, cfg.resume_message, cfg.outbox_max_events) == (
        "/var/lib/hal-o-swarm/agent", "continue", 100000,
    )
    assert (cfg.projects, cfg.tool_paths, cfg.log_level, cfg.log_format) == ((), {}, "info", "text")
    assert cfg.probe_tools == {}


def test_agent_explicit_values(write, tmp_path: Path) -> None:
    project_dir = tmp_path / "api"
    project_dir.mkdir()
    doc = {
        "supervisor_url": "ws://sup:8420", "auth_token": TOKEN, "node_id": "gpu-1.dc2", "opencode_port": 4096,
        "opencode": {"manage": False, "binary": "/opt/opencode/bin/opencode", "port": 5000},
        "tool_paths": {"claude": "/usr/local/bin/claude", "codex": ""},
        "projects": [{"name": "api", "directory": str(project_dir)}],
        "log": {"level": "warning", "format": "json"}, "resume_message": "keep going", "outbox": {"max_events": 10},
        "data_dir": str(tmp_path / "data"),
        "env": {"probe_tools": {"cmake": ["cmake", "--version"], "protoc": ["/opt/protoc/bin/protoc", "--version"]}},
    }
    cfg, warnings = load_agent_config(write("a.json", doc), env={})
    assert [(w.path, w.message) for w in warnings] == [("opencode_port", "ignored: opencode.port is also set")]
    assert cfg.node_id == "gpu-1.dc2" and cfg.opencode_port == 5000 and cfg.opencode_manage is False
    assert cfg.tool_paths == {"claude": "/usr/local/bin/claude"}
    assert cfg.probe_tools == {"cmake": ("cmake", "--version"), "protoc": ("/opt/protoc/bin/protoc", "--version")}
    assert cfg.projects == (Project("api", str(project_dir)),)
    assert cfg.project("api") == Project("api", str(project_dir)) and cfg.project("nope") is None
    assert (cfg.log_level, cfg.log_format, cfg.resume_message, cfg.outbox_max_events) == (
        "warning", "json", "keep going", 10,
    )


def test_cli_defaults_when_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg, warnings = load_cli_config(env={})
    assert (cfg.supervisor_url, cfg.auth_token, cfg.output, cfg.source_path) == (
        "http://localhost:8421", None, "table", None,
    )
    assert warnings == []


def test_cli_search_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    go = tmp_path / ".halctl" / "config.json"
    go.parent.mkdir()
    go.write_text('{"supervisor_url": "http://go:8421", "format": "json"}')
    cfg, _ = load_cli_config(env={})
    assert (cfg.supervisor_url, cfg.output, cfg.source_path) == ("http://go:8421", "json", str(go))
    new = tmp_path / ".config" / "halctl" / "config.yaml"
    new.parent.mkdir(parents=True)
    new.write_text("supervisor_url: https://new:8421\noutput: yaml\n")
    cfg, _ = load_cli_config(env={})
    assert (cfg.supervisor_url, cfg.output, cfg.source_path) == ("https://new:8421", "yaml", str(new))
    xdg = tmp_path / "xdg" / "halctl" / "config.yaml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("supervisor_url: http://xdg:8421\n")
    cfg, _ = load_cli_config(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert cfg.supervisor_url == "http://xdg:8421"


def test_cli_token_resolution_and_errors(write) -> None:
    path = write("c.yaml", f"auth_token: {TOKEN}\n")
    assert load_cli_config(path, env={"HALCTL_AUTH_TOKEN": "e" * 40})[0].auth_token == "e" * 40
    assert load_cli_config(path, env={})[0].auth_token == TOKEN
    weak, warnings = load_cli_config(write("w.yaml", "auth_token: short\ncolor: true\n"), env={})
    assert weak.auth_token == "short"  # the supervisor is the judge; here it is only a warning
    assert [(w.path, w.severity) for w in warnings] == [("auth_token", "warning"), ("color", "warning")]
    with pytest.raises(ConfigError) as info:
        load_cli_config(write("bad.yaml", "output: xml\n"), env={})
    assert [str(p) for p in info.value.errors] == ["output: must be one of table, json, yaml (got 'xml')"]
    with pytest.raises(ConfigError):
        load_cli_config(write("d.json", "{}").parent / "absent.yaml", env={})


@pytest.mark.process
def test_importing_the_cli_config_does_not_import_jsonschema() -> None:
    import subprocess
    import sys

    code = (
        "import sys, halswarm.config.cli, halswarm.config;"
        "from halswarm.config import load_cli_config;"
        "load_cli_config(sys.argv[1], env={});"
        "print('jsonschema' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "go" / "halctl.config.json")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_come_from_the_schema() -> None:
    doc = defaults("supervisor")
    assert doc["server"] == {
        "host": "0.0.0.0", "port": 8420, "http_port": 8421, "heartbeat_interval_sec": 30,
        "heartbeat_timeout_count": 3, "allowed_origins": [], "max_frame_bytes": 1048576, "max_body_bytes": 1048576,
        "read_timeout_sec": 10,
    }
    assert doc["retention"] == {"events_days": 30, "audit_days": 90, "batch_rows": 2000, "batch_ms": 30}
    assert doc["commands"] == {"default_timeout_sec": 30}
    assert "auto_intervention" not in doc
    assert defaults("cli") == {"supervisor_url": "http://localhost:8421", "output": "table"}


def test_storage_url_selects_the_engine_and_keeps_the_password_out(tmp_path, monkeypatch):
    """storage.url (issue 21): a path is SQLite (database.path follows it), postgresql://... selects
    PostgreSQL with its password from a file or an environment variable, never from the URL."""
    from halswarm.config import load_supervisor_config

    def load(storage, env=None):  # type: ignore[no-untyped-def]
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"auth_token": TOKEN, "storage": storage}))
        path.chmod(0o600)
        return load_supervisor_config(path, env=env or {})[0]

    cfg = load({"url": str(tmp_path / "x.db")})
    assert (cfg.storage_url, cfg.database_path, cfg.uses_postgresql) == ("", str(tmp_path / "x.db"), False)
    secret = tmp_path / "pg.pw"
    secret.write_text("s3cret-pg-password\n")
    secret.chmod(0o600)
    cfg = load({"url": "postgresql://hal@db.example:5432/hal?sslmode=verify-full", "password_file": str(secret)})
    assert cfg.uses_postgresql and cfg.storage_password == "s3cret-pg-password"
    assert cfg.storage_display == "postgresql://hal@db.example:5432/hal?sslmode=verify-full"
    assert "s3cret" not in repr(cfg)
    cfg = load({"url": "postgresql://hal@db/hal", "password_env": "HAL_PG_PW"}, env={"HAL_PG_PW": "from-env-pw"})
    assert cfg.storage_password == "from-env-pw"
    with pytest.raises(ConfigError, match="must not contain a password") as err:
        load({"url": "postgresql://hal:inline-pw@db/hal"})
    assert "inline-pw" not in str(err.value)
    with pytest.raises(ConfigError, match="needs a database name"):
        load({"url": "postgresql://hal@db"})
    with pytest.raises(ConfigError, match="unknown engine 'mysql'"):
        load({"url": "mysql://hal@db/hal"})
    with pytest.raises(ConfigError, match=r"storage\.password_file"):
        load({"url": "postgresql://hal@db/hal", "password_file": str(tmp_path / "missing")})
