"""Configs written for the Go version load unchanged (go-original 5.1-5.3, 14.2)."""

from __future__ import annotations

import copy
import json

import pytest

from halswarm.config import (
    ConfigError,
    detect_kind,
    load_agent_config,
    load_cli_config,
    load_supervisor_config,
    validate_data,
)
from tests.support.config_fixtures import NO_OPERATOR, TOKEN, load_fixture

# Every key of go-original 5.1 (supervisor) and 5.2 (agent), as dotted paths.
GO_SUPERVISOR_KEYS = [
    "server.port", "server.http_port", "server.auth_token", "server.heartbeat_interval_sec",
    "server.heartbeat_timeout_count", "server.allowed_origins", "database.path",
    "channels.discord.bot_token", "channels.discord.guild_id", "channels.discord.channels.alerts",
    "channels.discord.channels.dev-log", "channels.discord.channels.build-log", "channels.slack.bot_token",
    "channels.slack.channels.alerts", "channels.slack.channels.dev-log", "channels.n8n.webhook_url",
    "cost.poll_interval_minutes", "cost.request_timeout_seconds", "cost.max_retries", "cost.backoff_base_ms",
    "routes", "policies.check_interval_seconds", "dependencies",
    "security.tls.enabled", "security.tls.cert_path", "security.tls.key_path", "security.origin_allowlist",
    "security.token_rotation.enabled", "security.token_rotation.check_interval_seconds",
    "security.audit.enabled", "security.audit.retention_days", "credentials.version",
]
GO_PROVIDER_KEYS = ["api_key", "admin_api_key", "org_api_key", "enabled", "base_url", "model_rates"]
GO_POLICY_KEYS = {
    "resume_on_idle": ["enabled", "idle_threshold_seconds", "max_retries", "retry_reset_seconds"],
    "restart_on_compaction": ["enabled", "token_threshold", "max_retries", "retry_reset_seconds"],
    "kill_on_cost": ["enabled", "cost_threshold_usd", "max_retries", "retry_reset_seconds"],
}
GO_AGENT_KEYS = [
    "supervisor_url", "auth_token", "opencode_port", "auth_report_interval_sec",
    "tool_paths.opencode", "tool_paths.claude", "tool_paths.codex",
]


def _schema_has(schema: dict, dotted: str) -> bool:
    from halswarm.config.schemas import resolve

    node = schema
    for part in dotted.split("."):
        node = resolve(node, schema)
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


@pytest.mark.parametrize("dotted", GO_SUPERVISOR_KEYS)
def test_supervisor_schema_names_every_go_key(dotted: str) -> None:
    from halswarm.config.schemas import load_schema

    assert _schema_has(load_schema("supervisor"), dotted)


def test_supervisor_schema_names_provider_and_policy_keys() -> None:
    from halswarm.config.schemas import load_schema

    schema = load_schema("supervisor")
    for provider in ("anthropic", "openai"):
        for key in GO_PROVIDER_KEYS:
            assert _schema_has(schema, f"cost.providers.{provider}.{key}"), (provider, key)
    for policy, keys in GO_POLICY_KEYS.items():
        for key in keys:
            assert _schema_has(schema, f"policies.{policy}.{key}")
            assert _schema_has(schema, f"auto_intervention.{policy}.{key}")
    assert _schema_has(schema, "credentials.defaults.env.ANY")
    assert _schema_has(schema, "credentials.agents.node.env.ANY")


@pytest.mark.parametrize("dotted", GO_AGENT_KEYS)
def test_agent_schema_names_every_go_key(dotted: str) -> None:
    from halswarm.config.schemas import load_schema

    assert _schema_has(load_schema("agent"), dotted)


def test_go_supervisor_example_loads_unchanged_even_strict(copy_fixture) -> None:
    path = copy_fixture("go/supervisor.config.example.json")
    cfg, warnings = load_supervisor_config(path, strict=True, env={})
    # It loads; its single auth_token is an agent token now, so the API needs an operator token (issue 14).
    assert [str(w) for w in warnings] == [NO_OPERATOR]
    assert (cfg.port, cfg.http_port, cfg.host) == (8420, 8421, "0.0.0.0")
    assert cfg.auth_token == TOKEN and cfg.operator_token is None and cfg.operators == ()
    assert cfg.allowed_origins == ("https://ops.example.com",)
    assert cfg.database_path == "/var/lib/hal-o-swarm/supervisor.db"
    assert cfg.audit_retention_days == 90 and cfg.events_retention_days == 30
    assert cfg.tls_enabled is False and cfg.tls_cert is None
    rates = cfg.raw["cost"]["providers"]["anthropic"]["model_rates"]
    assert rates["claude-sonnet-4-5"] == {"input": 0.003, "output": 0.015}
    assert cfg.raw["policies"]["resume_on_idle"]["enabled"] is True
    assert cfg.raw["credentials"]["version"] == 1
    assert cfg.raw["channels"]["discord"]["channels"]["dev-log"] == "channel-id-for-dev-log"


def test_go_supervisor_example_with_its_original_placeholder_is_refused() -> None:
    data = load_fixture("go/supervisor.config.example.json")
    data["server"]["auth_token"] = "your-shared-secret-here"
    problems = validate_data("supervisor", data)
    assert [str(p) for p in problems if p.is_error] == [
        "server.auth_token: token is a placeholder, not a secret; "
        "generate one with `halctl config init` or `openssl rand -hex 32`"
    ]


@pytest.mark.parametrize("name", ["go/supervisor.installer.config.json", "go/agent.installer.config.json"])
def test_installer_template_with_change_me_token_is_refused(copy_fixture, name: str) -> None:
    path = copy_fixture(name)
    loader = load_supervisor_config if "supervisor" in name else load_agent_config
    with pytest.raises(ConfigError) as info:
        loader(path, env={})
    errors = info.value.errors
    assert len(errors) == 1
    assert errors[0].path == ("server.auth_token" if "supervisor" in name else "auth_token")
    assert "placeholder" in errors[0].message
    assert "CHANGE_ME" not in str(info.value)  # the secret itself is never echoed


def test_installer_template_accepted_once_token_comes_from_env(copy_fixture) -> None:
    path = copy_fixture("go/supervisor.installer.config.json")
    cfg, _ = load_supervisor_config(path, env={"HAL_AUTH_TOKEN": TOKEN})
    assert cfg.auth_token == TOKEN
    assert cfg.raw["credentials"]["defaults"]["env"] == {}


def test_go_invalid_example_is_refused_for_its_empty_token_only(copy_fixture) -> None:
    path = copy_fixture("go/supervisor-invalid.config.json")
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path, env={})
    assert [str(p) for p in info.value.errors] == [
        "server.auth_token: is required (set server.auth_token, server.auth_token_file, env HAL_AUTH_TOKEN or "
        "security.agent_tokens)"
    ]


def test_go_invalid_example_nulls_are_accepted(copy_fixture) -> None:
    """`auto_intervention: null` and `dependencies: null` are fine; with a token the file loads."""
    path = copy_fixture("go/supervisor-invalid.config.json")
    cfg, _ = load_supervisor_config(path, env={"HAL_AUTH_TOKEN": TOKEN})
    assert cfg.port == 8080
    assert cfg.http_port == 8421  # Python default; Go's 0 would disable the API
    assert cfg.raw["policies"]["kill_on_cost"]["cost_threshold_usd"] == 10.0
    assert "auto_intervention" not in cfg.raw
    assert cfg.raw["dependencies"] == {}


def test_go_agent_example_loads_unchanged(copy_fixture, monkeypatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "node-7")
    cfg, warnings = load_agent_config(copy_fixture("go/agent.config.example.json"), strict=True, env={})
    assert cfg.supervisor_url == "ws://192.168.10.x:8420"
    assert cfg.node_id == "node-7"
    assert cfg.opencode_port == 4096 and cfg.auth_report_interval_sec == 30
    assert cfg.tool_paths == {
        "opencode": "/usr/local/bin/opencode", "claude": "/usr/local/bin/claude", "codex": "/usr/local/bin/codex",
    }
    assert [p.name for p in cfg.projects] == ["ai-os-interfaces", "ai-os-l0"]
    # the example's directories do not exist here: warnings, never errors
    assert {(w.path, w.severity) for w in warnings} == {
        ("projects[0].directory", "warning"), ("projects[1].directory", "warning"),
    }


def test_go_env_manifest_example_is_valid() -> None:
    data = load_fixture("go/env-manifest.example.json")
    assert detect_kind(data) == "manifest"
    assert validate_data("manifest", data, strict=True) == []


def test_spec_8_1_manifest_shape_is_accepted() -> None:
    data = {
        "version": "1.0",
        "projects": {
            "ai-os-interfaces": {
                "runtime": {"java": ">=17", "android_sdk": {"compile_sdk": 34, "build_tools": "34.0.0"}},
                "tools": ["protoc", "aidl"],
                "env_vars": {"ANDROID_HOME": "/opt/android-sdk"},
                "agent_config": {"AGENT.md": "templates/x/AGENT.md", "context_dir": ".context/",
                                 "required_docs": ["INTERFACE_l0_l1.md"]},
                "git": {"remote": "git@proxmox:x.git", "branch": "main", "hooks": ["pre-commit"]},
            },
            "ai-os-l1": {"runtime": {"ndk": ">=26.1"}, "tools": ["cmake"], "native_libs": ["faiss"]},
        },
    }
    assert detect_kind(data) == "manifest"
    assert validate_data("manifest", data, strict=True) == []
    bad = copy.deepcopy(data)
    bad["projects"]["ai-os-l1"]["git"] = {"hooks": ["on-save"]}
    assert [p.path for p in validate_data("manifest", bad)] == ['projects.ai-os-l1.git.hooks[0]']


def test_go_halctl_config_json(copy_fixture) -> None:
    cfg, warnings = load_cli_config(copy_fixture("go/halctl.config.json"), env={})
    assert (cfg.supervisor_url, cfg.auth_token, cfg.output) == ("http://localhost:8421", TOKEN, "json")
    assert warnings == []
    assert json.loads((copy_fixture("go/halctl.config.json")).read_text())["format"] == "json"
