"""`halctl approvals ...` and `halctl sessions approve|deny` against the fake supervisor."""

from __future__ import annotations

import json
from typing import Any

import click

from halswarm.cli.completion import complete_approval_ids
from halswarm.cli.main import cli
from tests.fakes.supervisor_api import TOKEN, URL, FakeSupervisor, err, ok

APPROVAL: dict[str, Any] = {
    "id": "per_1", "node_id": "node-a", "session_id": "ses-1", "project": "api", "permission": "bash",
    "patterns": ["rm -rf build"], "always": ["rm *"], "command": "rm -rf build", "tool": {}, "status": "pending",
    "asked_at": "2025-01-02T03:00:00.000Z", "age_sec": 8000.0, "reply": None, "message": None,
    "replied_by": None, "replied_at": None, "escalated_at": None,
    "approve_command": "halctl approvals approve per_1", "deny_command": "halctl approvals deny per_1"}


def test_list_columns_and_filters(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/approvals", lambda _r: ok([APPROVAL], meta={"total": 3}))
    result = halctl("approvals", "list", "--session", "ses-1", "--limit", "1")
    assert result.exit_code == 0, result.stderr
    assert dict(fake.last("/api/v1/approvals").url.params) == {"session_id": "ses-1", "limit": "1"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NODE_ID", "SESSION", "PROJECT", "PERMISSION", "ASKED_FOR", "AGE"]
    assert lines[1].split() == ["per_1", "node-a", "ses-1", "api", "bash", "rm", "-rf", "build", "2h13m"]
    assert "showing 1 of 3 pending approvals" in result.stderr


def test_approve_always_and_deny_with_a_message(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/approvals/per_1", lambda r: ok(APPROVAL | {"reply": json.loads(r.content)["reply"]}))
    result = halctl("approvals", "approve", "per_1", "--always")
    assert result.exit_code == 0 and result.stdout.startswith("approved (always) per_1: bash rm -rf build")
    assert FakeSupervisor.body(fake.last()) == {"reply": "always"}
    result = halctl("approvals", "deny", "per_1", "-m", "not today")
    assert result.exit_code == 0 and "denied per_1" in result.stdout
    assert FakeSupervisor.body(fake.last()) == {"reply": "reject", "message": "not today"}
    result = halctl("approvals", "deny", "per_1", "-m", "x" * 2001)
    assert result.exit_code == 2 and "--message" in result.stderr


def test_a_second_answer_is_one_error_line(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/approvals/per_1", lambda _r: err(
        409, "CONFLICT", "approval per_1 was already answered (once by oncall); nothing was sent"))
    result = halctl("approvals", "approve", "per_1")
    assert result.exit_code == 1 and "already answered (once by oncall)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sessions_approve_needs_exactly_one(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    pending: list[dict[str, Any]] = []
    fake.route("GET", "/api/v1/approvals", lambda _r: ok(list(pending)))
    fake.route("POST", "/api/v1/approvals/per_1", lambda _r: ok(APPROVAL | {"reply": "once"}))
    result = halctl("sessions", "approve", "ses-1")
    assert result.exit_code == 1 and "session ses-1 has no pending approval" in result.stderr
    pending[:] = [APPROVAL, APPROVAL | {"id": "per_2", "command": None, "patterns": ["a", "b"]}]
    result = halctl("sessions", "deny", "ses-1")
    assert result.exit_code == 1 and "2 pending approvals" in result.stderr
    assert "per_1 (bash: rm -rf build); per_2 (bash: a, b)" in result.stderr
    pending[:] = [APPROVAL]
    result = halctl("sessions", "approve", "ses-1")
    assert result.exit_code == 0 and "approved per_1" in result.stdout
    assert dict(fake.last("/api/v1/approvals").url.params) == {"session_id": "ses-1", "limit": "100"}


def test_approval_ids_complete_from_the_api(fake: FakeSupervisor) -> None:
    fake.reply("GET", "/api/v1/approvals", [APPROVAL])
    ctx = cli.make_context("halctl", ["--supervisor-url", URL, "--auth-token", TOKEN], resilient_parsing=True)
    [item] = complete_approval_ids(ctx, click.Argument(["x"]), "per_")
    assert (item.value, item.help) == ("per_1", "ses-1 bash rm -rf build")
