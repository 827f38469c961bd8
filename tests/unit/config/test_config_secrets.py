"""Secret resolution (HAL_AUTH_TOKEN > *_auth_token_file > inline) and permission warnings."""

from __future__ import annotations

import pytest

from halswarm.config import ConfigError, load_agent_config, load_supervisor_config, validate_data
from halswarm.config.secrets import holds_inline_secret, token_weakness
from tests.support.config_fixtures import NO_OPERATOR, TOKEN

OTHER = "b" * 64
PERM_WARNING = "(file): readable by group/others and holds secrets; chmod 600"


def test_env_overrides_file_and_inline(write) -> None:
    write("tok", OTHER + "\n")
    path = write("s.json", {"server": {"auth_token": "CHANGE_ME", "auth_token_file": "tok"}})
    cfg, _ = load_supervisor_config(path, env={"HAL_AUTH_TOKEN": TOKEN})
    assert cfg.auth_token == TOKEN


def test_weak_env_token_is_refused_at_its_own_path(write) -> None:
    path = write("s.json", {"server": {"auth_token": TOKEN}})
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path, env={"HAL_AUTH_TOKEN": "short"})
    assert [p.path for p in info.value.errors] == ["$HAL_AUTH_TOKEN"]


def test_blank_env_token_is_ignored(write) -> None:
    cfg, _ = load_supervisor_config(write("s.json", {"server": {"auth_token": TOKEN}}), env={"HAL_AUTH_TOKEN": " "})
    assert cfg.auth_token == TOKEN


def test_token_file_beats_inline_and_is_stripped(write) -> None:
    write("tokens/shared", f"  {OTHER}\n")
    path = write("s.json", {"server": {"auth_token": TOKEN, "auth_token_file": "tokens/shared"}})
    cfg, warnings = load_supervisor_config(path, env={})
    assert cfg.auth_token == OTHER  # relative to the config file's directory
    assert [str(w) for w in warnings] == [NO_OPERATOR]


@pytest.mark.parametrize("where", ["server", "top"])
def test_token_file_missing_is_an_error_without_fallback(write, tmp_path, where: str) -> None:
    doc = {"server": {"auth_token": TOKEN}}
    if where == "server":
        doc["server"]["auth_token_file"] = "missing.token"
    else:
        doc["auth_token_file"] = "missing.token"
    path = write("s.json", doc)
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path, env={})
    key = "server.auth_token_file" if where == "server" else "auth_token_file"
    assert [str(p) for p in info.value.errors] == [f"{key}: cannot read {tmp_path / 'missing.token'}: file not found"]


def test_token_file_empty_and_weak(write, tmp_path) -> None:
    write("empty.token", "\n")
    write("weak.token", "abc\n")
    empty = validate_data("agent", {"supervisor_url": "ws://s", "auth_token_file": str(tmp_path / "empty.token")})
    assert [str(p) for p in empty] == [f"auth_token_file: {tmp_path / 'empty.token'} is empty"]
    weak = validate_data("agent", {"supervisor_url": "ws://s", "auth_token_file": str(tmp_path / "weak.token")})
    assert [str(p) for p in weak] == [
        "auth_token_file: token in the file is too short (3 characters; at least 32 are required)"
    ]


def test_group_readable_token_file_warns(write, tmp_path) -> None:
    write("shared.token", TOKEN, mode=0o644)
    path = write("a.json", {"supervisor_url": "ws://s:8420", "auth_token_file": "shared.token"})
    _, warnings = load_agent_config(path, env={})
    assert [str(w) for w in warnings] == [
        f"auth_token_file: {tmp_path / 'shared.token'} is readable by group/others; chmod 600"
    ]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_group_or_other_readable_config_with_secret_warns(write, mode: int) -> None:
    path = write("s.json", {"server": {"auth_token": TOKEN}}, mode=mode)
    _, warnings = load_supervisor_config(path, env={})
    assert [(str(w), w.severity) for w in warnings] == [(PERM_WARNING, "warning"), (NO_OPERATOR, "warning")]


def test_private_config_or_config_without_secret_does_not_warn(write) -> None:
    _, private = load_supervisor_config(write("p.json", {"server": {"auth_token": TOKEN}}, mode=0o600), env={})
    assert [str(w) for w in private] == [NO_OPERATOR]
    write("t", TOKEN)
    _, no_secret = load_supervisor_config(write("n.json", {"server": {"auth_token_file": "t"}}, mode=0o644), env={})
    assert [str(w) for w in no_secret] == [NO_OPERATOR]


def test_credentials_values_count_as_secrets(write) -> None:
    doc = {"auth_token_file": "/dev/null", "credentials": {"defaults": {"env": {"DATABASE_URL": "postgres://u:p@h"}}}}
    problems = validate_data("supervisor", doc, source_path=write("c.json", doc, mode=0o644))
    assert PERM_WARNING in [str(p) for p in problems]


def test_secret_detection_by_key_name() -> None:
    assert holds_inline_secret({"cost": {"providers": {"openai": {"org_api_key": "sk"}}}})
    assert holds_inline_secret({"security": {"agent_tokens": {"n1": "x"}}})
    assert holds_inline_secret({"opencode": {"password": "pw"}})
    assert not holds_inline_secret({"server": {"auth_token_file": "/t", "auth_token": ""}})
    assert not holds_inline_secret({"security": {"tls": {"key_path": "/k"}, "token_rotation": {"enabled": True}}})


def test_operator_token_never_falls_back_to_the_agent_token(write) -> None:
    cfg, _ = load_supervisor_config(write("s.json", {"auth_token": TOKEN}), env={})
    assert cfg.auth_token == TOKEN and cfg.operator_token is None and cfg.operators == ()
    write("op", OTHER)
    cfg, _ = load_supervisor_config(
        write("s2.json", {"auth_token": TOKEN, "security": {"operator_token_file": "op"}}), env={}
    )
    assert (cfg.auth_token, cfg.operator_token) == (TOKEN, OTHER)
    # The legacy operator token is an admin named "operator".
    assert [(i.name, i.role.name, i.token) for i in cfg.operators] == [("operator", "admin", OTHER)]


def test_agent_opencode_password_file(write) -> None:
    write("pw", "hunter2-long-enough\n")
    doc = {"supervisor_url": "ws://s", "auth_token": TOKEN, "opencode": {"password": "x", "password_file": "pw"}}
    cfg, _ = load_agent_config(write("a.json", doc), env={})
    assert cfg.opencode_password == "hunter2-long-enough"
    assert "hunter2" not in repr(cfg) and TOKEN not in repr(cfg)


@pytest.mark.parametrize(
    ("token", "weak"),
    [
        (TOKEN, False),
        ("x" * 32, False),
        ("x" * 31, True),
        ("CHANGE_ME_SHARED_TOKEN", True),
        ("Change_Me_" + "0" * 40, True),
        ("your-shared-secret-here", True),
        ("changeme", True),
    ],
)
def test_token_weakness(token: str, weak: bool) -> None:
    assert (token_weakness(token) is not None) is weak
