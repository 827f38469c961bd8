"""Operator identities and agent credentials in the supervisor config (issue 14)."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.config import validate_data
from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import parse_supervisor_config
from tests.support.config_fixtures import NO_OPERATOR, OP_TOKEN, TOKEN

VIEWER = "v" * 8 + "1f2e3d4c5b6a79880f1e2d3c4b5a6978"
NODE = "n" * 8 + "8f9e0d1c2b3a49586f7e8d9c0b1a2f3e"


def doc(**security: Any) -> dict[str, Any]:
    return {"server": {"auth_token": TOKEN}, "security": security}


def problems(d: dict[str, Any]) -> list[str]:
    return [str(p) + ("" if p.is_error else " (warning)") for p in validate_data("supervisor", d, env={})]


def test_named_operators_with_roles_are_typed() -> None:
    cfg, warnings = parse_supervisor_config(doc(operators=[
        {"name": "root", "role": "admin", "token": OP_TOKEN}, {"name": "dash", "role": "viewer", "token": VIEWER}]),
        env={})
    assert warnings == []
    assert [(i.name, i.role.name, i.token) for i in cfg.operators] == [("root", "admin", OP_TOKEN),
                                                                        ("dash", "viewer", VIEWER)]
    assert OP_TOKEN not in repr(cfg) and VIEWER not in repr(cfg.operators)


def test_token_file_of_an_operator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "op").write_text(OP_TOKEN + "\n")
    (tmp_path / "op").chmod(0o600)
    cfg, _ = parse_supervisor_config(doc(operators=[{"name": "root", "role": "admin", "token_file": "op"}]),
                                     env={}, source_path=tmp_path / "s.json")
    assert cfg.operators[0].token == OP_TOKEN


@pytest.mark.parametrize(("entry", "expected"), [
    ({"name": "x", "role": "root", "token": OP_TOKEN},
     "security.operators[0].role: must be one of viewer, operator, admin (got 'root')"),
    ({"name": "x", "role": "admin", "token": "short"},
     "security.operators[0].token: token is too short (5 characters; at least 32 are required)"),
    ({"name": "x", "role": "admin", "token": "CHANGE_ME_OPERATOR_TOKEN_PLEASE_0000000"},
     "security.operators[0].token: token is a placeholder, not a secret; generate one with `halctl config init` or "
     "`openssl rand -hex 32`"),
    ({"name": "x", "role": "admin"}, "security.operators[0].token: is required (set token or token_file)"),
    ({"name": "bad name", "role": "admin", "token": OP_TOKEN},
     "security.operators[0].name: must be 1-64 letters, digits or . _ @ - (the audit actor) (got 'bad name')"),
    ({"name": "x", "role": "admin", "token": TOKEN},
     "security.operators[0].token: equals an agent token (server.auth_token): operators and agents never share "
     "a credential"),
])
def test_bad_operator_entries(entry: dict[str, Any], expected: str) -> None:
    assert expected in problems(doc(operators=[entry]))
    with pytest.raises(ConfigError):
        parse_supervisor_config(doc(operators=[entry]), env={})


def test_duplicate_names_and_shared_tokens_between_operators() -> None:
    out = problems(doc(operator_token=OP_TOKEN, operators=[
        {"name": "operator", "role": "viewer", "token": VIEWER}, {"name": "b", "role": "viewer", "token": VIEWER}]))
    assert "security.operators[0].name: duplicate operator name 'operator' (also security.operator_token)" in out
    assert "security.operators[1].token: equals another operator token (security.operators[0].token)" in out


def test_operator_token_equal_to_a_per_node_token_is_refused() -> None:
    out = problems(doc(operator_token=NODE, agent_tokens={"n1": NODE}, allow_shared_agent_token=True))
    assert out == ['security.operator_token: equals an agent token (security.agent_tokens.n1): operators and '
                   'agents never share a credential']


def test_go_era_single_token_says_so_in_one_line() -> None:
    assert problems({"auth_token": TOKEN}) == [f"{NO_OPERATOR} (warning)"]


def test_shared_agent_token_is_opt_in_once_nodes_have_their_own() -> None:
    cfg, warnings = parse_supervisor_config(doc(operator_token=OP_TOKEN, agent_tokens={"n1": NODE}), env={})
    assert cfg.shared_agent_token is None and cfg.auth_token == TOKEN
    assert [str(w) for w in warnings] == [
        "server.auth_token: is not accepted from agents: security.agent_tokens is set (set "
        "security.allow_shared_agent_token: true to keep the shared agent token)"]
    cfg, warnings = parse_supervisor_config(doc(operator_token=OP_TOKEN, agent_tokens={"n1": NODE},
                                                allow_shared_agent_token=True), env={})
    assert cfg.shared_agent_token == TOKEN and warnings == []
    cfg, _ = parse_supervisor_config({"server": {"auth_token": TOKEN}, "security": {"operator_token": OP_TOKEN}},
                                     env={})
    assert cfg.shared_agent_token == TOKEN  # no agent_tokens: the Go-era default keeps it


def test_per_node_tokens_alone_need_no_shared_token() -> None:
    cfg, warnings = parse_supervisor_config({"security": {"operator_token": OP_TOKEN, "agent_tokens": {"n1": NODE}}},
                                            env={})
    assert cfg.auth_token is None and cfg.shared_agent_token is None and warnings == []
