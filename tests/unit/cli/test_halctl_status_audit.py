"""`halctl status [PROJECT]` and `halctl audit list`."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from halswarm.cli.audit import since_param
from tests.fakes.supervisor_api import FakeSupervisor, ok

NODES = [
    {"id": "n1", "hostname": "h1", "status": "online", "projects": ["api"]},
    {"id": "n2", "hostname": "h2", "status": "online", "projects": ["web"]},
    {"id": "n3", "hostname": "h3", "status": "offline", "projects": ["api"]},
]
SESSIONS = [
    {"id": "s1", "node_id": "n1", "project": "api", "status": "running", "last_activity": None},
    {"id": "s2", "node_id": "n1", "project": "api", "status": "running", "last_activity": None},
    {"id": "s3", "node_id": "n1", "project": "api", "status": "waiting_input",
     "last_activity": "2025-01-02T03:04:05Z"},
    {"id": "s4", "node_id": "n3", "project": "api", "status": "unreachable", "last_activity": None},
    {"id": "s5", "node_id": "n2", "project": "api", "status": "idle", "last_activity": None},
]
READY = {"status": "ok", "components": {"database": {"status": "ok"}, "hub": {"status": "ok"},
                                       "dispatcher": {"status": "ok"}}}


def _setup(fake: FakeSupervisor, ready_status: int = 200, ready_body: dict | None = None) -> None:  # type: ignore[type-arg]
    fake.route("GET", "/readyz", lambda _r: httpx.Response(ready_status, json=ready_body or READY))
    fake.reply("GET", "/api/v1/nodes", NODES)
    fake.reply("GET", "/api/v1/sessions", SESSIONS)


def test_status_json_aggregates(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    _setup(fake)
    result = halctl("-o", "json", "status", "api")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["supervisor"]["ready"] is True
    assert report["nodes"] == {"total": 3, "online": 2, "offline": 1, "by_status": {"online": 2, "offline": 1},
                               "offline_nodes": ["n3"]}
    assert report["sessions"] == {"project": "api", "total": 5,
                                  "by_status": {"running": 2, "idle": 1, "waiting_input": 1, "unreachable": 1}}
    assert [s["id"] for s in report["attention"]] == ["s3", "s4"]
    assert dict(fake.last("/api/v1/sessions").url.params) == {"project": "api", "limit": "10000"}


def test_status_table(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    _setup(fake)
    result = halctl("status")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Supervisor  http://sup.test:8421  ready (ok)" in out
    assert "Nodes       3 total: 2 online, 1 offline" in out
    assert "Sessions    5 total: 2 running, 1 idle, 1 waiting_input, 1 unreachable" in out
    assert "Sessions needing attention (2):" in out
    assert "2025-01-02 03:04:05" in out
    assert "project" not in dict(fake.last("/api/v1/sessions").url.params)


def test_status_not_ready_shows_failing_component(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    _setup(fake, 503, {"status": "unhealthy",
                       "components": {"database": {"status": "error", "error": "disk I/O error"},
                                      "hub": {"status": "ok"}}})
    result = halctl("status")
    assert result.exit_code == 0, result.stderr
    assert "NOT READY (unhealthy)" in result.stdout
    assert "database error (disk I/O error)" in result.stdout


def test_status_ready_but_degraded_shows_why(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    _setup(fake, 200, {"status": "ok",
                       "components": {"database": {"status": "ok"},
                                      "leadership": {"status": "ok", "role": "leader", "detail": "leader since x"},
                                      "listen": {"status": "degraded", "detail": "LISTEN connection down for 3 s"}}})
    result = halctl("status")
    assert result.exit_code == 0, result.stderr
    assert "NOT READY" not in result.stdout
    assert "listen degraded (LISTEN connection down for 3 s)" in result.stdout
    assert "leadership ok" in result.stdout
    assert "leader since x" not in result.stdout  # an ok component's detail is not repeated


def test_status_without_readyz_route(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", [])
    fake.reply("GET", "/api/v1/sessions", [])
    result = halctl("-o", "yaml", "status")
    assert result.exit_code == 0, result.stderr
    assert "ready: null" in result.stdout


def test_audit_list_passes_filters(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    rows = [{"id": 2, "timestamp": "2025-01-02T03:04:05.000Z", "actor": "operator", "action": "kill_session",
             "target": "s1", "args": None, "result": "failure", "error": "target node offline",
             "duration_ms": 12, "ip_address": "10.0.0.1", "command_id": "c1", "client_actor": "alice@laptop"}]
    fake.route("GET", "/api/v1/audit", lambda _r: ok(rows, meta={"total": 9, "limit": 1, "offset": 0}))
    result = halctl("audit", "list", "--actor", "operator", "--action", "kill_session",
                    "--since", "2025-01-01T00:00:00Z", "--limit", "1")
    assert result.exit_code == 0, result.stderr
    assert dict(fake.last("/api/v1/audit").url.params) == {
        "actor": "operator", "action": "kill_session", "since": "2025-01-01T00:00:00Z", "limit": "1"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIMESTAMP", "ACTOR", "CLIENT", "ACTION", "TARGET", "RESULT", "ERROR"]
    assert lines[1].split() == ["2025-01-02", "03:04:05", "operator", "alice@laptop", "kill_session", "s1",
                                "failure", "target", "node", "offline"]
    assert "showing 1 of 9" in result.stderr
    assert halctl("-o", "json", "audit", "list").json() == rows


def test_audit_relative_since() -> None:
    now = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)
    assert since_param("2h", now=now) == "2025-01-02T10:00:00Z"
    assert since_param("7d", now=now) == "2024-12-26T12:00:00Z"
    assert since_param("30m", now=now) == "2025-01-02T11:30:00Z"
    assert since_param("1735787045") == "1735787045"
    assert since_param(None) is None
