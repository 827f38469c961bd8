"""`credentials` settings: parsed once, typed, one-line errors naming the key (never a value)."""

from __future__ import annotations

import pytest

from halswarm.config import parse_supervisor_config
from halswarm.config.errors import ConfigError
from halswarm.supervisor.features.tool_auth.settings import CredentialsSettings

SECRET = "sk-ant-api03-SETTINGS-0a1b2c3d"


def test_from_a_loaded_config() -> None:
    cfg, _ = parse_supervisor_config({
        "server": {"auth_token": "a" * 40},
        "credentials": {"version": 4, "auto_push": False, "defaults": {"env": {"A_KEY": SECRET, "B": "1"}},
                        "agents": {"n1": {"env": {"B": "2", "C": "3"}}}},
    })
    s = CredentialsSettings.from_config(cfg)
    assert (s.version, s.auto_push) == (4, False)
    assert s.env_for("n1") == {"A_KEY": SECRET, "B": "2", "C": "3"}
    assert s.env_for("other") == {"A_KEY": SECRET, "B": "1"}
    assert SECRET not in repr(s)


def test_defaults_without_a_section() -> None:
    cfg, _ = parse_supervisor_config({"server": {"auth_token": "a" * 40}})
    s = CredentialsSettings.from_config(cfg)
    assert (s.version, s.auto_push, s.env_for("n1")) == (0, True, {})
    bare = CredentialsSettings.parse(None)  # a config built without the schema defaults
    assert (bare.version, bare.auto_push, bare.env_for("n1")) == (None, True, {})


def test_settings_are_read_only() -> None:
    s = CredentialsSettings.parse({"version": 1, "defaults": {"env": {"A": "x"}}})
    env = s.env_for("n1")
    env["A"] = "changed"
    assert s.env_for("n1") == {"A": "x"}
    with pytest.raises(TypeError):
        s.defaults_env["A"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(("section", "message"), [
    ("x", "credentials: must be an object"),
    ({"version": -1}, "credentials.version: must be a non-negative integer, not -1"),
    ({"version": "2"}, "credentials.version: must be a non-negative integer, not '2'"),
    ({"version": True}, "credentials.version: must be a non-negative integer, not True"),
    ({"auto_push": "no"}, "credentials.auto_push: must be true or false, not 'no'"),
    ({"agents": []}, "credentials.agents: must be an object of node id -> {env}"),
    ({"agents": {"n1": "x"}}, "credentials.agents.n1: must be an object"),
    ({"defaults": {"env": ["A"]}}, "credentials.defaults.env: must be an object of variable name -> value"),
    ({"defaults": {"env": {"": "v"}}}, "credentials.defaults.env: variable names must not be empty"),
    ({"agents": {"n1": {"env": {"TOKEN": ""}}}}, "credentials.agents.n1.env.TOKEN: value must be a non-empty string"),
    ({"defaults": {"env": {"TOKEN": 12345}}}, "credentials.defaults.env.TOKEN: value must be a non-empty string"),
])
def test_bad_values_are_one_line_errors(section: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        CredentialsSettings.parse(section)
    assert str(err.value) == message and "\n" not in message
