"""The agent role's supervisor URLs (issue 21): `hal_agent_supervisor_urls` renders a `supervisor_url` list,
the single `hal_agent_supervisor_url` still renders a string, and the role's preflight refuses bad lists.

The real ansible-playbook (ansible-runner, localhost) runs the role's own preflight task (read from
tasks/preflight.yml, not copied) and its own config template with the role's defaults and vars; the
rendered file is then checked by the agent's config validator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from halswarm.config.validate import validate_data
from tests.support.backup import COLLECTIONS, run_playbook, task_result

pytestmark = pytest.mark.timeout(240)

ROLE = COLLECTIONS / "ansible_collections" / "halswarm" / "ops" / "roles" / "agent"
CHECK = "Check the supervisor URLs"


def render(tmp_path: Path, extravars: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
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
    _, results = run_playbook(playbook, extravars, tmp_path)
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
