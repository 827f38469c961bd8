"""The agent role's supervisor URLs (issue 21): `hal_agent_supervisor_urls` renders a `supervisor_url` list,
the single `hal_agent_supervisor_url` still renders a string, and the role's preflight refuses bad lists.

The real ansible-playbook (ansible-runner, localhost) runs the role's own preflight task (read from
tasks/preflight.yml, not copied) and its own config template with the role's defaults and vars; the
rendered file is then checked by the agent's config validator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from halswarm.config.validate import validate_data
from tests.support.backup import COLLECTIONS, run_playbook, task_result

pytestmark = pytest.mark.timeout(240)

ROLE = COLLECTIONS / "ansible_collections" / "halswarm" / "ops" / "roles" / "agent"
CHECK = "Check the supervisor URLs"


def render(tmp_path: Path, extravars: dict[str, Any], inventory: dict[str, Any] | None = None
           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(preflight result, rendered config or None when the preflight failed)."""
    preflight = yaml.safe_load((ROLE / "tasks" / "preflight.yml").read_text())
    check = next(t for t in preflight if t.get("name") == CHECK)
    out = tmp_path / f"agent-{len(list(tmp_path.glob('agent-*')))}.json"
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [check, {"name": "Render the agent config",
                          "ansible.builtin.template": {"src": str(ROLE / "templates" / "config.json.j2"),
                                                       "dest": str(out), "mode": "0600"}}],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    _, results = run_playbook(playbook, extravars, tmp_path, inventory=inventory)
    result = task_result(results, CHECK)
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_list_renders_a_list_and_a_single_url_a_string(tmp_path: Path) -> None:
    urls = ["wss://sup-a.example:8420/ws/agent", "wss://sup-b.example:8420/ws/agent"]
    res, cfg = render(tmp_path, {"hal_agent_supervisor_urls": urls})
    assert not res["_failed"] and cfg is not None
    assert cfg["supervisor_url"] == urls
    # (the token file is the host's; the token itself comes from the environment here)
    assert [str(p) for p in validate_data("agent", cfg, env={"HAL_AUTH_TOKEN": "k" * 40}) if p.is_error] == []

    res, cfg = render(tmp_path, {"hal_agent_supervisor_url": "ws://10.0.0.9:8420/ws/agent"})
    assert not res["_failed"] and cfg is not None
    assert cfg["supervisor_url"] == "ws://10.0.0.9:8420/ws/agent"  # unchanged for one supervisor

    res, cfg = render(tmp_path, {"hal_agent_supervisor_urls": ["ws://only:8420/ws/agent"]})
    assert cfg is not None and cfg["supervisor_url"] == "ws://only:8420/ws/agent"


@pytest.mark.parametrize("urls", [
    ["ws://a:8420/ws/agent", "http://b:8420/ws/agent"],
    ["ws://a:8420/ws/agent", "ws://a:8420/ws/agent"],
    ["ws://user:pw@a:8420/ws/agent"],
    "ws://a:8420/ws/agent",  # a string where the list goes
    [f"ws://s{i}:8420/ws/agent" for i in range(17)],
])
def test_preflight_refuses_bad_lists(tmp_path: Path, urls: Any) -> None:
    res, cfg = render(tmp_path, {"hal_agent_supervisor_urls": urls})
    assert res["_failed"], res
    assert cfg is None
    assert "must be ws:// or wss://" in res.get("msg", "")


def _ha_inventory(supervisors: dict[str, Any]) -> dict[str, Any]:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return {"all": {"children": {"hal_supervisors": {"hosts": supervisors},
                                 "hal_agents": {"hosts": {"localhost": local}}}}}


def test_several_supervisors_in_the_inventory_are_the_default_list(tmp_path: Path) -> None:
    """Empty hal_agent_supervisor_urls and several hosts in hal_supervisors: one URL per host, in inventory
    order, with each host's address and port and the scheme and path of hal_agent_supervisor_url."""
    inventory = _ha_inventory({"sup-a": {"ansible_host": "10.0.0.1"},
                               "sup-b": {"ansible_host": "fd00::2", "hal_supervisor_port": 9420},
                               "sup-c": {}})
    res, cfg = render(tmp_path, {"hal_agent_supervisor_url": "wss://ignored:8420/ws/agent"}, inventory)
    assert not res["_failed"] and cfg is not None
    assert cfg["supervisor_url"] == ["wss://10.0.0.1:8420/ws/agent", "wss://[fd00::2]:9420/ws/agent",
                                     "wss://sup-c:8420/ws/agent"]
    assert [str(p) for p in validate_data("agent", cfg, env={"HAL_AUTH_TOKEN": "k" * 40}) if p.is_error] == []
    # An explicit list still wins; one supervisor in the group keeps the single URL.
    res, cfg = render(tmp_path, {"hal_agent_supervisor_urls": ["ws://x:1/ws/agent", "ws://y:1/ws/agent"]}, inventory)
    assert cfg is not None and cfg["supervisor_url"] == ["ws://x:1/ws/agent", "ws://y:1/ws/agent"]
    res, cfg = render(tmp_path, {"hal_agent_supervisor_url": "ws://10.0.0.1:8420/ws/agent"},
                      _ha_inventory({"sup-a": {"ansible_host": "10.0.0.1"}}))
    assert cfg is not None and cfg["supervisor_url"] == "ws://10.0.0.1:8420/ws/agent"
