"""Shell completion: incident ids offline, node/session ids from the API, silent when it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import httpx
import pytest

from halswarm.cli.completion import complete_incident_ids, complete_node_ids, complete_session_ids
from halswarm.cli.main import cli
from halswarm.core.remediation import catalog
from tests.fakes.supervisor_api import TOKEN, URL, FakeSupervisor, err

ROOT = Path(__file__).resolve().parents[3]


def _ctx(*args: str) -> click.Context:
    """The context click builds while completing (resilient parsing: no callbacks run)."""
    root = cli.make_context("halctl", list(args), resilient_parsing=True)
    return root


def _values(items: list) -> list[str]:  # type: ignore[type-arg]
    return [item.value for item in items]


def test_incident_ids_from_the_catalog() -> None:
    values = _values(complete_incident_ids(_ctx(), click.Argument(["x"]), "agent-"))
    assert values and all(v.startswith("agent-") for v in values)
    assert set(_values(complete_incident_ids(_ctx(), click.Argument(["x"]), ""))) == {i.id for i in catalog.INCIDENTS}


def test_node_and_session_ids_from_the_api(fake: FakeSupervisor) -> None:
    fake.reply("GET", "/api/v1/nodes", [{"id": "node-a", "hostname": "a"}, {"id": "node-b"}, {"id": "x-1"}])
    fake.reply("GET", "/api/v1/sessions", [{"id": "ses_1", "project": "api", "status": "idle"}, {"id": 7}])
    ctx = _ctx("--supervisor-url", URL, "--auth-token", TOKEN)
    nodes = complete_node_ids(ctx, click.Argument(["x"]), "node-")
    assert _values(nodes) == ["node-a", "node-b"]
    assert nodes[0].help == "a"
    sessions = complete_session_ids(ctx, click.Argument(["x"]), "")
    assert _values(sessions) == ["ses_1"] and sessions[0].help == "api idle"
    assert fake.last("/api/v1/sessions").headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("failure", ["denied", "unreachable", "garbage"])
def test_api_failures_complete_nothing(fake: FakeSupervisor, failure: str) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        if failure == "denied":
            return err(401, "AUTH_REQUIRED", "no")
        if failure == "unreachable":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, text="<html>")

    fake.route("GET", "/api/v1/sessions", handler)
    ctx = _ctx("--supervisor-url", URL, "--auth-token", TOKEN)
    assert complete_session_ids(ctx, click.Argument(["x"]), "") == []


@pytest.mark.process
def test_bash_completion_of_incident_ids_in_a_real_shell_call() -> None:
    env = {**os.environ, "_HALCTL_COMPLETE": "bash_complete", "COMP_WORDS": "halctl remediate show supervisor-",
           "COMP_CWORD": "3", "PYTHONPATH": str(ROOT)}
    env.pop("HALCTL_SUPERVISOR_URL", None)
    proc = subprocess.run([sys.executable, "-m", "halswarm.cli.main"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    expected = sorted(f"plain,{i.id}" for i in catalog.INCIDENTS if i.id.startswith("supervisor-"))
    assert sorted(proc.stdout.split()) == expected and expected
