"""Typed feature settings: parsed once from the config (defaults as before), a wrong value is one
`path: message` line, and the supervisor refuses to start on it instead of running on a default."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig, parse_supervisor_config
from halswarm.supervisor.app import StartupError, Supervisor
from halswarm.supervisor.features.cost.settings import CostSettings
from halswarm.supervisor.features.dependencies.settings import DependencySettings
from halswarm.supervisor.features.policies.settings import PolicyConfig
from halswarm.supervisor.features.retention.settings import RetentionSettings
from halswarm.supervisor.notify import NotifySettings
from halswarm.supervisor.notify.delivery import DeliverySettings

TOKEN = "a" * 40


def config(**doc: Any) -> SupervisorConfig:
    cfg, _ = parse_supervisor_config({"auth_token": TOKEN, **doc})
    return cfg


def with_section(cfg: SupervisorConfig, name: str, value: Any) -> SupervisorConfig:
    """The config with one section replaced, past the schema (as a caller building it in code could)."""
    return dataclasses.replace(cfg, raw={**cfg.raw, name: value})


def test_defaults_of_a_minimal_config() -> None:
    cfg = config()
    cost = CostSettings.from_config(cfg)
    assert (cost.poll_interval_s, cost.timeout_s, cost.max_retries, cost.backoff_base_s, cost.degraded_retry_s) == (
        3600.0, 15.0, 3, 0.5, 60.0)
    assert cost.enabled == []
    notify = NotifySettings.from_config(cfg)
    assert notify.routes == () and notify.sweep_s == 15.0 and notify.delivery == DeliverySettings()
    policies = PolicyConfig.from_config(cfg)
    assert not policies.any_enabled and policies.check_interval_seconds == 30.0
    assert (policies.resume.max_retries, policies.compaction.max_retries, policies.cost.max_retries) == (3, 2, 1)
    assert (policies.compaction.token_threshold, policies.cost.cost_threshold_usd) == (180000, 10.0)
    assert DependencySettings.from_config(cfg) == DependencySettings({}, False)
    assert RetentionSettings.from_config(cfg) == RetentionSettings(30, 90)
    assert cfg.read_timeout_sec == 10.0


def test_configured_values_are_typed() -> None:
    cfg = config(
        server={"read_timeout_sec": 2.5},
        cost={"poll_interval_minutes": 5, "max_retries": 0, "backoff_base_ms": 20,
              "providers": {"anthropic": {"admin_api_key": "sk-ant-admin-x", "model_rates": {"m": {"input": 1}}}}},
        routing={"queue_size": 3, "max_retries": 0, "backoff_base_ms": 10, "timeout_seconds": 1.5,
                 "sweep_seconds": 2},
        routes=[{"match": "session.error", "target": "webhook:http://127.0.0.1:9/x"}],
        dependencies={"b": ["a"], "c": {"depends_on": ["b"]}}, dependencies_autostart=True,
        retention={"events_days": 3, "audit_days": 4},
        policies={"kill_on_cost": {"enabled": True, "daily_limit_usd": 50}})
    assert cfg.read_timeout_sec == 2.5
    cost = CostSettings.from_config(cfg)
    assert (cost.poll_interval_s, cost.max_retries, cost.backoff_base_s) == (300.0, 0, 0.02)
    assert [p.name for p in cost.enabled] == ["anthropic"] and cost.rates_for("anthropic")["m"].input == 1.0
    notify = NotifySettings.from_config(cfg)
    assert notify.sweep_s == 2.0 and notify.delivery == DeliverySettings(3, 0, 0.01, 30.0, 1.5)
    assert [(r.match, r.target) for r in notify.routes] == [("session.error", "webhook:http://127.0.0.1:9/x")]
    deps = DependencySettings.from_config(cfg)
    assert deps == DependencySettings({"b": ["a"], "c": ["b"]}, True)
    assert RetentionSettings.from_config(cfg) == RetentionSettings(3, 4)
    policies = PolicyConfig.from_config(cfg)
    # as written: the policies API answers 50, not 50.0
    assert policies.cost.enabled and policies.cost.daily_limit_usd == 50
    assert isinstance(policies.cost.daily_limit_usd, int)


def test_section_is_a_copy() -> None:
    cfg = config(routes=[{"match": "x", "target": "n8n"}])
    cfg.section("routes").clear()
    assert cfg.section("routes") == [{"match": "x", "target": "n8n"}]


@pytest.mark.parametrize(("parse", "message"), [
    (lambda: CostSettings.parse({"max_retries": "3"}), "cost.max_retries: must be a number (got string)"),
    (lambda: CostSettings.parse({"poll_interval_minutes": 0}), "cost.poll_interval_minutes: must be greater than 0"),
    (lambda: CostSettings.parse({"providers": {"openai": "key"}}), "cost.providers.openai: must be an object"),
    (lambda: CostSettings.parse({"providers": {"openai": {"enabled": "yes"}}}),
     "cost.providers.openai.enabled: must be a boolean (got string)"),
    (lambda: CostSettings.parse({"providers": {"openai": {"model_rates": {"o3": {"input": -1}}}}}),
     "cost.providers.openai.model_rates.o3.input: must be >= 0 (got -1)"),
    (lambda: NotifySettings.parse({"match": "x"}), "routes: must be an array (got object)"),
    (lambda: NotifySettings.parse(["n8n"]), "routes[0]: must be an object (got string)"),
    (lambda: NotifySettings.parse([], routing={"sweep_seconds": -1}), "routing.sweep_seconds: must be greater than 0"),
    (lambda: NotifySettings.parse([], routing={"queue_size": 0}), "routing.queue_size: must be >= 1 (got 0)"),
    (lambda: NotifySettings.parse([], channels=["discord"]), "channels: must be an object (got array)"),
    (lambda: PolicyConfig.parse({"resume_on_idle": {"enabled": 1}}),
     "policies.resume_on_idle.enabled: must be a boolean (got integer)"),
    (lambda: PolicyConfig.parse({"kill_on_cost": {"daily_limit_usd": "50"}}),
     "policies.kill_on_cost.daily_limit_usd: must be a number or null (got string)"),
    (lambda: PolicyConfig.parse({"check_interval_seconds": 0}), "policies.check_interval_seconds: must be greater"),
    (lambda: DependencySettings.parse(["a"]), "dependencies: must be an object (got array)"),
    (lambda: DependencySettings.parse({}, "true"), "dependencies_autostart: must be a boolean (got string)"),
    (lambda: RetentionSettings(0, 90), "retention.events_days: must be an integer >= 1 (got 0)"),
])
def test_a_wrong_value_is_one_line_naming_its_key(parse: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse()
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text


@pytest.mark.parametrize(("section", "value", "message"), [
    ("cost", {"max_retries": "3"}, "cost.max_retries"),
    ("routing", {"timeout_seconds": "10"}, "routing.timeout_seconds"),
    ("policies", {"resume_on_idle": {"enabled": "true"}}, "policies.resume_on_idle.enabled"),
    ("dependencies", ["a", "b"], "dependencies"),
    ("chatops", {"discord": {"users": {"alice": "admin"}}}, "chatops.discord.users"),
    ("chatops", {"slack": {"signing_secret_file": "/nonexistent/slack-signing"}}, "chatops.slack.signing_secret_file"),
])
async def test_supervisor_refuses_to_start_on_a_wrong_value(section: str, value: Any, message: str) -> None:
    """Before: the value was silently replaced by its default at each use. Now: the start fails, one line,
    before the database is even opened."""
    sup = Supervisor(with_section(config(database={"path": "/nonexistent/dir/never-opened.db"}), section, value))
    with pytest.raises(StartupError) as err:
        await sup.start()
    assert str(err.value).startswith(f"invalid configuration: {message}: ") and "\n" not in str(err.value)
