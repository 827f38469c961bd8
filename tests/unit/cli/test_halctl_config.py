"""`halctl config validate|init` (the work itself is halswarm.config's; here: wiring, exit codes, masking)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import yaml

GOOD_TOKEN = "0123456789abcdef0123456789abcdef0123456789abcdef"


def test_validate_valid_and_invalid(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "supervisor.config.json"
    good.write_text(json.dumps({"server": {"auth_token": GOOD_TOKEN}}))
    good.chmod(0o600)
    result = halctl("config", "validate", str(good), bare=True)
    assert result.exit_code == 0, result.stdout + result.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"server": {"port": 70000, "auth_token": GOOD_TOKEN}}))
    bad.chmod(0o600)
    result = halctl("config", "validate", str(bad), "--kind", "supervisor", bare=True)
    assert result.exit_code == 1
    assert "server.port: " in result.stdout


def test_validate_strict_turns_unknown_keys_into_errors(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.config.json"
    path.write_text(json.dumps({"supervisor_url": "ws://s:8420/ws/agent", "auth_token": GOOD_TOKEN,
                                "surprise": 1}))
    path.chmod(0o600)
    assert halctl("config", "validate", str(path), bare=True).exit_code == 0
    strict = halctl("config", "validate", str(path), "--strict", bare=True)
    assert strict.exit_code == 1
    assert "surprise" in strict.stdout


def test_validate_missing_file_exit_1(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = halctl("config", "validate", str(tmp_path / "nope.json"), "--kind", "agent", bare=True)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr


def test_validate_bad_kind_is_usage_error(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert halctl("config", "validate", str(tmp_path / "x.json"), "--kind", "toaster", bare=True).exit_code == 2


def test_init_supervisor_writes_0600_and_masks_token(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "etc" / "supervisor.config.json"
    result = halctl("config", "init", "supervisor", "--path", str(path), bare=True)
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    token = data["server"]["auth_token"]
    assert len(token) >= 32
    assert token not in result.stdout + result.stderr
    assert f"server.auth_token: {token[:4]}…" in result.stdout
    assert halctl("config", "validate", str(path), bare=True).exit_code == 0


def test_init_supervisor_with_nodes_gives_each_its_own_token(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "supervisor.config.json"
    result = halctl("config", "init", "supervisor", "--path", str(path), "--node", "n1", "--node", "n2", bare=True)
    assert result.exit_code == 0, result.stderr
    data = json.loads(path.read_text())
    tokens = data["security"]["agent_tokens"]
    [admin] = data["security"]["operators"]
    assert sorted(tokens) == ["n1", "n2"] and "auth_token" not in data["server"]  # no shared agent token
    assert (admin["name"], admin["role"]) == ("admin", "admin")
    values = [tokens["n1"], tokens["n2"], admin["token"]]
    assert len(set(values)) == 3 and all(len(v) == 64 for v in values)
    assert not any(v in result.stdout + result.stderr for v in values)
    assert f"agent_tokens.n1: {tokens['n1'][:4]}…" in result.stdout and "operators.admin: admin" in result.stdout
    check = halctl("config", "validate", str(path), bare=True)
    assert check.exit_code == 0 and "warning" not in check.stdout, check.stdout
    assert halctl("config", "init", "agent", "--path", str(tmp_path / "a.json"), "--node", "n1",
                  bare=True).exit_code != 0


def test_init_refuses_to_overwrite_without_force_and_keeps_keys(halctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.config.json"
    original = {"supervisor_url": "wss://sup:8420/ws/agent", "auth_token": GOOD_TOKEN,
                "tool_paths": {"claude": "/opt/claude"}, "x_custom": {"keep": True}}
    path.write_text(json.dumps(original))
    path.chmod(0o644)
    result = halctl("config", "init", "agent", "--path", str(path), bare=True)
    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert json.loads(path.read_text()) == original

    result = halctl("-o", "json", "config", "init", "agent", "--path", str(path), "--force", bare=True)
    assert result.exit_code == 0, result.stderr
    data = json.loads(path.read_text())
    for key, value in original.items():
        assert data[key] == value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    summary = result.json()
    assert summary["action"] == "updated"
    assert summary["auth_token"] == GOOD_TOKEN[:4] + "…"
    assert GOOD_TOKEN not in result.stdout


def test_init_cli_uses_explicit_url_and_token(halctl, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    result = halctl("--supervisor-url", "ws://sup.test:8420", "--auth-token", GOOD_TOKEN, "config", "init", "cli",
                    bare=True)
    assert result.exit_code == 0, result.stderr
    path = isolated_env / ".config" / "halctl" / "config.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["supervisor_url"] == "http://sup.test:8421"
    assert data["auth_token"] == GOOD_TOKEN
    assert GOOD_TOKEN not in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
