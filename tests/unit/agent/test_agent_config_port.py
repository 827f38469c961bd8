"""`opencode_port: 0` (opencode picks a free port): allowed for a managed opencode only."""

from __future__ import annotations

import pytest

from halswarm.config.agent import parse_agent_config
from halswarm.config.errors import ConfigError

BASE = {"supervisor_url": "ws://127.0.0.1:8420/ws/agent", "auth_token": "t" * 40}


@pytest.mark.parametrize("doc", [{"opencode_port": 0}, {"opencode": {"port": 0}}])
def test_port_zero_is_valid_for_a_managed_opencode(doc: dict) -> None:
    cfg, _ = parse_agent_config({**BASE, **doc}, env={})
    assert cfg.opencode_port == 0 and cfg.opencode_manage is True


@pytest.mark.parametrize(("doc", "path"), [
    ({"opencode_port": 0, "opencode": {"manage": False}}, "opencode_port"),
    ({"opencode": {"manage": False, "port": 0}}, "opencode.port"),
])
def test_port_zero_in_attach_mode_is_a_clear_error(doc: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config({**BASE, **doc}, env={})
    (problem,) = info.value.errors
    assert problem.path == path and "needs opencode.manage: true" in problem.message


@pytest.mark.parametrize("port", [-1, 65536])
def test_out_of_range_ports_are_still_refused(port: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent_config({**BASE, "opencode_port": port}, env={})
    assert any(p.path == "opencode_port" for p in info.value.errors)
