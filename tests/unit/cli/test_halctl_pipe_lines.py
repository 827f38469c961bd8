"""The pipe rule (issue 23): with no format chosen and stdout not a terminal, list commands print one
`key: value` line per item, so the runbook's `sessions list | wc -l` and `| grep "node_id: X"` work."""

from __future__ import annotations

import json

import pytest

from halswarm.cli import output
from tests.fakes.supervisor_api import FakeSupervisor, ok

pytestmark = pytest.mark.usefixtures("pipe_lines")

SESSIONS = [
    {"id": "ses-1", "node_id": "node-a", "project": "api", "status": "running", "tokens": {"total": 10},
     "cost_usd": 0.5, "started_at": "2025-01-02T03:00:00Z"},
    {"id": "ses-2", "node_id": "node-b", "project": "web app", "status": "idle", "tokens": {"total": 3},
     "cost_usd": 0, "started_at": None},
]


def test_piped_sessions_list_is_one_line_per_item(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/sessions", lambda _r: ok(SESSIONS))
    result = halctl("sessions", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2  # `| wc -l` counts sessions, no header
    mine = [ln for ln in lines if "node_id: node-b" in ln]
    assert mine == [lines[1]] and "id: ses-2" in mine[0] and "project: web app" in mine[0]


def test_piped_empty_list_prints_nothing(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/sessions", [])
    assert halctl("sessions", "list").stdout == ""


@pytest.mark.parametrize("how", [("-o", "table"), ("--output", "table", "TAIL")])
def test_explicit_output_table_still_wins(halctl, fake: FakeSupervisor, how) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/sessions", lambda _r: ok(SESSIONS))
    args = ("sessions", "list", *how[:2]) if how[-1] == "TAIL" else (*how, "sessions", "list")
    lines = halctl(*args).stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "NODE_ID"] and len(lines) == 3


def test_env_and_json_win(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/sessions", lambda _r: ok(SESSIONS))
    assert halctl("sessions", "list", env={"HALCTL_OUTPUT": "table"}).stdout.startswith("ID")
    assert [s["id"] for s in json.loads(halctl("-o", "json", "sessions", "list").stdout)] == ["ses-1", "ses-2"]


def test_terminal_still_gets_a_table(halctl, fake: FakeSupervisor, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    fake.route("GET", "/api/v1/sessions", lambda _r: ok(SESSIONS))
    out = halctl("sessions", "list").stdout
    assert "NODE_ID" in out and "node_id:" not in out


def test_help_states_the_rule(halctl) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(halctl("--help", bare=True).stdout.split())
    assert "not a terminal" in text and "key: value" in text


def test_as_line_is_single_line() -> None:
    assert output.as_line(("ID", "DATA"), ("a", "two\nlines  here")) == "id: a  data: two lines here"
    assert output.as_line(("ID", "X"), ("a", "")) == "id: a  x: -"
