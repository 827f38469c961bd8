"""render_default and write_config_atomic (`halctl config init`)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from halswarm.config import defaults, load_supervisor_config, render_default, validate_data, write_config_atomic
from halswarm.config.render import new_token
from tests.support.config_fixtures import TOKEN, load_fixture

HEX64 = re.compile(r"[0-9a-f]{64}")


def test_fresh_supervisor_is_valid_with_generated_token() -> None:
    doc = render_default("supervisor")
    assert HEX64.fullmatch(doc["server"]["auth_token"])
    # A separate admin operator token (issue 14): the shared token is for agents only.
    [admin] = doc["security"]["operators"]
    assert (admin["name"], admin["role"]) == ("admin", "admin") and HEX64.fullmatch(admin["token"])
    assert admin["token"] != doc["server"]["auth_token"]
    skip = ("server", "security")
    assert {k: v for k, v in doc.items() if k not in skip} == {k: v for k, v in defaults("supervisor").items()
                                                                if k not in skip}
    assert validate_data("supervisor", doc, strict=True) == []
    assert render_default("supervisor")["server"]["auth_token"] != doc["server"]["auth_token"]


def test_keeps_every_existing_key_including_unknown_ones() -> None:
    existing = load_fixture("go/supervisor.config.example.json")
    existing["server"]["custom_knob"] = {"keep": [1, 2]}
    existing["x_team_notes"] = "ours"
    doc = render_default("supervisor", existing=existing)
    assert doc["x_team_notes"] == "ours"
    assert doc["server"]["custom_knob"] == {"keep": [1, 2]}
    assert doc["server"]["auth_token"] == TOKEN  # a good token is kept
    # every key of the Go wizard's dropped list survives
    assert doc["server"]["allowed_origins"] == ["https://ops.example.com"]
    openai = doc["cost"]["providers"]["openai"]
    assert openai["model_rates"] == {"o3": {"input": 0.002, "output": 0.008}} and "api_key" in openai
    assert doc["cost"]["providers"]["anthropic"]["enabled"] is True
    assert doc["cost"]["request_timeout_seconds"] == 15 and doc["cost"]["backoff_base_ms"] == 500
    assert list(doc)[: len(existing)] == list(existing)  # existing order first, new defaults after
    assert doc["retention"] == {"events_days": 30, "audit_days": 90, "batch_rows": 2000, "batch_ms": 30}


def test_agent_keeps_tool_paths_and_fills_defaults() -> None:
    existing = load_fixture("go/agent.config.example.json")
    doc = render_default("agent", existing=existing)
    assert doc["tool_paths"] == existing["tool_paths"]
    assert doc["supervisor_url"] == "ws://192.168.10.x:8420"
    assert doc["opencode"] == {"manage": True, "binary": "opencode"}
    assert render_default("agent")["supervisor_url"] == "ws://127.0.0.1:8420/ws/agent"


@pytest.mark.parametrize("weak", ["CHANGE_ME_SHARED_TOKEN", "your-shared-secret-here", "short", ""])
def test_weak_or_missing_token_is_replaced(weak: str) -> None:
    doc = render_default("supervisor", existing={"server": {"auth_token": weak, "port": 9000}})
    assert HEX64.fullmatch(doc["server"]["auth_token"]) and doc["server"]["port"] == 9000


def test_explicit_token_and_token_locations() -> None:
    assert render_default("agent", token="t" * 40)["auth_token"] == "t" * 40
    top = render_default("supervisor", existing={"auth_token": "CHANGE_ME"})
    assert HEX64.fullmatch(top["auth_token"]) and "auth_token" not in top["server"]
    from_file = render_default("supervisor", existing={"server": {"auth_token_file": "/etc/hal/tok"}})
    assert "auth_token" not in from_file["server"]
    cli = render_default("cli")
    assert cli == {"supervisor_url": "http://localhost:8421", "output": "table"}  # never a made-up token
    assert render_default("cli", existing={"format": "json"}) == {"format": "json",
                                                                   "supervisor_url": "http://localhost:8421"}
    assert render_default("cli", token=TOKEN)["auth_token"] == TOKEN


def test_alias_is_not_doubled() -> None:
    doc = render_default("supervisor", existing={"auto_intervention": {"resume_on_idle": {"enabled": True}}})
    assert "policies" not in doc and doc["auto_intervention"] == {"resume_on_idle": {"enabled": True}}


def test_new_token_is_64_hex() -> None:
    assert HEX64.fullmatch(new_token())


def test_atomic_write_json_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "supervisor.config.json"
    doc = render_default("supervisor")
    write_config_atomic(target, doc)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text()) == doc
    assert target.read_text().endswith("}\n")
    assert [p.name for p in target.parent.iterdir()] == ["supervisor.config.json"]  # no temp file left
    cfg, warnings = load_supervisor_config(target, env={})
    assert cfg.auth_token == doc["server"]["auth_token"] and warnings == []


def test_atomic_write_replaces_a_readable_file_and_keeps_0600(tmp_path: Path) -> None:
    target = tmp_path / "agent.config.json"
    target.write_text("{}")
    target.chmod(0o644)
    write_config_atomic(target, {"a": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text()) == {"a": 1}


def test_atomic_write_yaml(tmp_path: Path) -> None:
    target = tmp_path / "halctl" / "config.yaml"
    write_config_atomic(target, {"supervisor_url": "http://s:8421", "output": "json"})
    assert yaml.safe_load(target.read_text()) == {"supervisor_url": "http://s:8421", "output": "json"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        write_config_atomic(target, {"bad": object()})
    assert target.read_text() == '{"old": true}'
    assert sorted(os.listdir(tmp_path)) == ["s.json"]


def test_broken_existing_shape_is_kept_not_crashed_on() -> None:
    doc = render_default("supervisor", existing={"server": ["not", "an", "object"]})
    assert doc["server"] == ["not", "an", "object"]
