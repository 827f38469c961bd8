"""Automatic remediation (remediation.auto): the pure decision, config, halctl command lines, report parsing,
the engine with a fake runner over a real store, and the detached DB-corruption launch (no systemd needed)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import parse_supervisor_config
from halswarm.store.reader import Reader
from halswarm.store.writer import Writer
from halswarm.supervisor.features.remediations.db_launch import launch_db_remediation, systemd_run_argv
from halswarm.supervisor.features.remediations.engine import AutoRemediation
from halswarm.supervisor.features.remediations.halctl_run import (
    Outcome,
    RunSpec,
    display_command,
    halctl_argv,
    parse_report,
    preflight,
    run_halctl,
)
from halswarm.supervisor.features.remediations.policy import NodeFacts, decide
from halswarm.supervisor.features.remediations.settings import AGENT_CRASHED, DB_CORRUPTION, AutoConfig
from tests.support.store_engines import StoreDb
from tests.support.store_rig import Emitted, running_store

TOKEN = "a" * 40
NOW = 1_000_000.0
CFG = AutoConfig(auto=(AGENT_CRASHED,), inventory="/inv", window_seconds=3600, offline_seconds=120)


def off(node: str, minutes: float) -> NodeFacts:
    return NodeFacts(node, "offline", NOW - minutes * 60)


# --------------------------------------------------------------------------- decide (pure)


def test_offline_one_minute_is_nothing() -> None:
    assert decide(NOW, CFG, [off("n1", 1)], {}) == []


def test_offline_three_minutes_runs_on_that_host() -> None:
    (d,) = decide(NOW, CFG, [off("n1", 3)], {})
    assert (d.kind, d.incident, d.host) == ("run", AGENT_CRASHED, "n1")
    assert d.episode == (AGENT_CRASHED, "n1", NOW - 180) and "offline for 180 s (threshold 120 s)" in d.reason


def test_same_incident_and_host_inside_window_is_throttled_once_per_episode() -> None:
    last = {(AGENT_CRASHED, "n1"): NOW - 600}
    (d,) = decide(NOW, CFG, [off("n1", 3)], last)
    assert (d.kind, d.host, d.last_started, d.retry_after) == ("throttled", "n1", NOW - 600, NOW - 600 + 3600)
    assert decide(NOW + 10, CFG, [off("n1", 3)], last, decided=[d.episode]) == []


def test_other_host_still_runs_while_one_is_throttled() -> None:
    out = decide(NOW, CFG, [off("n1", 3), off("n2", 5)], {(AGENT_CRASHED, "n1"): NOW - 60})
    assert [(d.kind, d.host) for d in out] == [("throttled", "n1"), ("run", "n2")]


def test_incident_not_in_auto_is_nothing() -> None:
    cfg = AutoConfig(auto=("supervisor-high-memory",), inventory="/inv")
    assert decide(NOW, cfg, [off("n1", 30)], {}) == []
    assert decide(NOW, AutoConfig(), [off("n1", 30)], {}) == []


def test_window_passed_runs_again_even_for_a_decided_episode() -> None:
    ep = (AGENT_CRASHED, "n1", NOW - 7200)
    (d,) = decide(NOW, CFG, [off("n1", 120)], {(AGENT_CRASHED, "n1"): NOW - 3601}, decided=[ep])
    assert d.kind == "run"


def test_online_nodes_and_pattern_like_ids_are_ignored() -> None:
    nodes = [NodeFacts("n1", "online", None), off("web*", 10), off("a:b", 10), NodeFacts("n3", "offline", None)]
    assert decide(NOW, CFG, nodes, {}) == []


# --------------------------------------------------------------------------- config


def test_config_keys_defaults_and_typed_values() -> None:
    cfg, warnings = parse_supervisor_config({"auth_token": TOKEN, "database": {"path": "/var/lib/h/s.db"},
                                             "security": {"operator_token": "o" * 40},
                                             "remediation": {"inventory": "/etc/h/hosts.ini", "auto": [AGENT_CRASHED],
                                                             "offline_minutes": 0.5, "window_minutes": 10,
                                                             "supervisor_host": "sup1"}})
    assert warnings == []
    a = AutoConfig.from_config(cfg)
    assert (a.auto, a.inventory, a.offline_seconds, a.window_seconds, a.timeout_seconds) == (
        (AGENT_CRASHED,), "/etc/h/hosts.ini", 30.0, 600.0, 900.0)
    assert a.supervisor_host == "sup1" and a.state_dir == Path("/var/lib/h/remediation-runs")
    assert 0.25 <= a.check_interval <= 5
    d, _ = parse_supervisor_config({"auth_token": TOKEN})
    assert (d.remediation_offline_minutes, d.remediation_window_minutes, d.remediation_auto) == (2.0, 60, ())


@pytest.mark.parametrize(("remediation", "path"), [
    ({"auto": ["agent-crashed", "reboot-everything"]}, "remediation.auto[1]"),
    ({"offline_minutes": 0}, "remediation.offline_minutes"),
    ({"timeout_minutes": -1}, "remediation.timeout_minutes"),
    ({"memory_percent": 0}, "remediation.memory_percent"),
    ({"memory_percent": 101}, "remediation.memory_percent"),
    ({"memory_heartbeats": 0}, "remediation.memory_heartbeats"),
    ({"memory_heartbeats": 2.5}, "remediation.memory_heartbeats"),
    ({"cost_failures": 0}, "remediation.cost_failures"),
])
def test_bad_remediation_config_is_a_clear_error(remediation: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_supervisor_config({"auth_token": TOKEN, "remediation": {"inventory": "/i", **remediation}})
    assert [p.path for p in exc.value.problems if p.is_error] == [path]


def test_auto_without_inventory_warns() -> None:
    _, warnings = parse_supervisor_config({"auth_token": TOKEN, "remediation": {"auto": [AGENT_CRASHED]},
                                           "security": {"operator_token": "o" * 40}})
    assert [(w.path, w.severity) for w in warnings] == [("remediation.inventory", "warning")]


# --------------------------------------------------------------------------- command lines and reports


def test_halctl_argv_and_display() -> None:
    argv = halctl_argv(AGENT_CRASHED, "/inv.ini", "n1", state_dir=Path("/s"), timeout=90.7)
    assert argv[:3] == [sys.executable, "-m", "halswarm.cli.main"]
    assert argv[3:] == ["--output", "json", "remediate", AGENT_CRASHED, "-i", "/inv.ini", "--limit", "n1",
                        "--state-dir", "/s", "--timeout", "90", "--no-send"]
    assert display_command(DB_CORRUPTION, None, "hal_supervisors") == \
        "halctl remediate supervisor-db-corruption -i INVENTORY --limit hal_supervisors"
    assert systemd_run_argv("u1", ["x"]) == ["systemd-run", "--unit", "u1", "--collect", "--quiet", "--no-block",
                                             "x"]


def test_parse_report_after_progress_lines() -> None:
    report = {"id": "r1", "status": "not_present", "nested": {"a": [1]}}
    text = "PLAY [x] ****\nTASK [y] ok\n" + json.dumps(report, indent=2) + "\n"
    assert parse_report(text) == report
    assert parse_report(json.dumps(report, indent=2)) == report
    assert parse_report("no json here\n{broken") is None


def test_preflight_names_the_missing_piece(tmp_path: Path) -> None:
    spec = RunSpec(AGENT_CRASHED, "n1", "n1", "r", None, 60, tmp_path)
    assert preflight(spec) == "remediation.inventory is not set"
    spec.inventory = str(tmp_path / "nope.ini")
    assert preflight(spec) == f"inventory {tmp_path / 'nope.ini'} does not exist"


async def test_run_halctl_missing_inventory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    out = await run_halctl(RunSpec(AGENT_CRASHED, "n1", "n1", "r", str(tmp_path / "x.ini"), 60, tmp_path),
                           asyncio.Event())
    assert out.report is None and out.error is not None and "does not exist" in out.error


# --------------------------------------------------------------------------- the engine (fake runner, real store)


@pytest.fixture
async def store(store_db: StoreDb) -> AsyncIterator[tuple[Writer, Reader, StoreDb]]:
    """The engine's store on each engine (SQLite, PostgreSQL)."""
    async with running_store(store_db) as store:
        yield store


def good_report(spec: RunSpec) -> dict[str, Any]:
    from halswarm.core.remediation.report import build_report

    return build_report(spec.incident, hosts=[spec.host], facts={spec.host: {"agent": {"token": "s3cret"}}},
                        plan={"decision": "not_present"}, status="not_present", started=NOW, finished=NOW + 2)


async def test_engine_runs_records_audits_routes_and_throttles(store: Any, tmp_path: Path) -> None:
    writer, reader, path = store
    clock = [NOW]
    nodes = {"n1": SimpleNamespace(status="online"), "n2": SimpleNamespace(status="online")}
    ran: list[RunSpec] = []

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        if spec.host == "n2":
            return Outcome(error="ansible-runner is not installed for this supervisor")
        return Outcome(report=good_report(spec), rc=0)

    ev = Emitted()
    cfg = AutoConfig(auto=(AGENT_CRASHED,), inventory="/inv", window_seconds=3600, offline_seconds=120,
                     state_dir=tmp_path)
    eng = AutoRemediation(cfg, nodes, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng.start()
    eng._task.cancel()  # drive check() by hand  # type: ignore[union-attr]
    nodes["n1"].status = "offline"
    assert await eng.check() == []
    clock[0] += 60
    assert await eng.check() == []  # 1 min offline
    clock[0] += 90
    (d,) = await eng.check()
    assert (d.kind, d.host) == ("run", "n1")
    await asyncio.wait(eng._running, timeout=5)
    assert ev.types() == ["remediation.started", "remediation.completed"]
    assert ev.events[1][0] == "n1" and ev.events[1][2]["actor"] == "auto" and ev.events[1][2]["status"] == \
        "not_present"
    assert [s.limit for s in ran] == ["n1"]
    clock[0] += 30
    assert await eng.check() == []  # same episode, already run

    # back online, offline again inside the window: one throttled event, no run
    nodes["n1"].status = "online"
    await eng.check()
    nodes["n1"].status = "offline"
    await eng.check()
    clock[0] += 200
    (t,) = await eng.check()
    assert t.kind == "throttled" and ev.types()[-1] == "remediation.throttled"
    clock[0] += 200
    assert await eng.check() == [] and len(ran) == 1

    # the other host: a run whose halctl could not start -> recorded failed report + remediation.failed
    nodes["n2"].status = "offline"
    await eng.check()
    clock[0] += 130
    (f,) = await eng.check()
    assert f.host == "n2"
    await asyncio.wait(eng._running, timeout=5)
    assert ev.types()[-2:] == ["remediation.started", "remediation.failed"]
    assert "ansible-runner is not installed" in ev.events[-1][2]["error"]
    await eng.stop()

    db = path.connect()
    rows = db.execute("SELECT incident, status, actor, hosts, report FROM remediations ORDER BY received_at").fetchall()
    assert [(r[0], r[1], r[2], json.loads(r[3])) for r in rows] == [
        (AGENT_CRASHED, "not_present", "auto", ["n1"]), (AGENT_CRASHED, "failed", "auto", ["n2"])]
    assert "s3cret" not in rows[0][4]
    audit = [tuple(r) for r in db.execute("SELECT actor, action, target, result FROM audit_log"
                                          " ORDER BY timestamp").fetchall()]
    assert audit == [("auto", "remediation", AGENT_CRASHED, "not_present"), ("auto", "remediation", AGENT_CRASHED,
                                                                             "failed")]
    state = [tuple(r) for r in db.execute("SELECT host, started_at, status FROM auto_remediation_state"
                                          " ORDER BY host").fetchall()]
    assert [(h, s) for h, _, s in state] == [("n1", "not_present"), ("n2", "failed")]

    # a restart honours the window: the persisted start time throttles the next episode of n1
    eng2 = AutoRemediation(cfg, {"n1": SimpleNamespace(status="offline")}, ev, writer, reader, runner=runner,
                           clock=lambda: clock[0])
    await eng2.start()
    eng2._task.cancel()  # type: ignore[union-attr]
    clock[0] += 130
    (t2,) = await eng2.check()
    assert t2.kind == "throttled"
    await eng2.stop()


async def test_untriggered_ids_only_warn(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    writer, reader, _ = store
    eng = AutoRemediation(AutoConfig(auto=("supervisor-high-memory",)), {}, Emitted(), writer, reader)
    await eng.start()
    assert eng._task is None and "supervisor-high-memory has no automatic trigger" in caplog.text
    await eng.stop()


async def test_alert_starts_a_listed_incident_once_per_window_persisted(store: Any, tmp_path: Path) -> None:
    """`on_alert` (POST /api/v1/alerts): the same throttle as the built-in triggers, for incidents without one
    too; a storm starts one run and tells one throttled event; a restart keeps the window."""
    writer, reader, _ = store
    clock = [NOW]
    ran: list[RunSpec] = []

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        return Outcome(report=good_report(spec), rc=0)

    ev = Emitted()
    cfg = AutoConfig(auto=("credential-drift",), inventory="/inv", window_seconds=3600, state_dir=tmp_path)
    eng = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng.start()
    assert eng._task is None  # no liveness loop: only alerts start this incident
    storm = await asyncio.gather(*(eng.on_alert("credential-drift", "n1", "n1", "alert X") for _ in range(5)))
    assert sorted(storm) == ["started"] + ["throttled"] * 4
    assert await eng.on_alert("agent-crashed", "n1", "n1", "alert Y") == "not_auto"
    assert await eng.on_alert("credential-drift", "n2", "n2", "alert X") == "started"  # another host
    await asyncio.wait(eng._running, timeout=5)
    assert sorted(s.limit for s in ran) == ["n1", "n2"]
    assert ev.types().count("remediation.started") == 2 and ev.types().count("remediation.throttled") == 1
    await eng.stop()

    eng2 = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng2.start()
    clock[0] += 600
    assert await eng2.on_alert("credential-drift", "n1", "n1", "alert X") == "throttled"
    clock[0] += 3600
    assert await eng2.on_alert("credential-drift", "n1", "n1", "alert X") == "started"
    await asyncio.wait(eng2._running, timeout=5)
    await eng2.stop()
    assert len(ran) == 3


# --------------------------------------------------------------------------- DB corruption at start


def sup_cfg(tmp_path: Path, **remediation: Any) -> AutoConfig:
    cfg, _ = parse_supervisor_config({"auth_token": TOKEN, "database": {"path": str(tmp_path / "s.db")},
                                      "remediation": {"auto": [DB_CORRUPTION], **remediation}})
    return AutoConfig.from_config(cfg)


def test_db_launch_without_inventory_or_systemd_names_the_command(tmp_path: Path) -> None:
    assert launch_db_remediation(sup_cfg(tmp_path), systemd=True) == (
        "auto remediation not started (remediation.inventory is not set): run "
        "`halctl remediate supervisor-db-corruption -i INVENTORY --limit hal_supervisors`")
    msg = launch_db_remediation(sup_cfg(tmp_path, inventory="/i.ini", supervisor_host="sup1"), systemd=False)
    assert msg == ("not under systemd, auto remediation not started: run "
                   "`halctl remediate supervisor-db-corruption -i /i.ini --limit sup1`")


def test_db_launch_under_systemd_once_per_window(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> Any:
        calls.append(argv)
        return SimpleNamespace(returncode=0, stderr="")

    cfg = sup_cfg(tmp_path, inventory="/i.ini", window_minutes=10)
    msg = launch_db_remediation(cfg, now=NOW, systemd=True, run=run)
    assert msg.startswith(f"auto remediation started as systemd unit hal-remediate-db-{int(NOW)} ")
    (argv,) = calls
    assert argv[:6] == ["systemd-run", "--unit", f"hal-remediate-db-{int(NOW)}", "--collect", "--quiet",
                        "--no-block"]
    assert argv[6:] == halctl_argv(DB_CORRUPTION, "/i.ini", "hal_supervisors", state_dir=tmp_path / "remediation-runs",
                                   timeout=900, json_output=False, send=True)
    again = launch_db_remediation(cfg, now=NOW + 60, systemd=True, run=run)
    assert again.startswith(f"auto remediation already started as hal-remediate-db-{int(NOW)} 60 s ago") and \
        len(calls) == 1
    assert launch_db_remediation(cfg, now=NOW + 601, systemd=True, run=run).startswith("auto remediation started")


def test_db_launch_failure_is_one_line(tmp_path: Path) -> None:
    def run(argv: list[str], **_: Any) -> Any:
        return SimpleNamespace(returncode=1, stderr="Failed to start transient service unit: Access denied\n")

    msg = launch_db_remediation(sup_cfg(tmp_path, inventory="/i.ini"), systemd=True, run=run)
    assert msg == ("auto remediation could not be started (Failed to start transient service unit: Access denied): "
                   "run `halctl remediate supervisor-db-corruption -i /i.ini --limit hal_supervisors`")
    assert "\n" not in msg and not (tmp_path / "s.db.auto-remediation.json").exists()


async def test_reconnect_between_two_looks_is_a_new_episode(store: Any, tmp_path: Path) -> None:
    writer, reader, _ = store
    clock = [NOW]
    node = SimpleNamespace(status="offline", connected_at=NOW - 500)

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        return Outcome(report=good_report(spec), rc=0)

    ev = Emitted()
    cfg = AutoConfig(auto=(AGENT_CRASHED,), inventory="/inv", offline_seconds=120, state_dir=tmp_path)
    eng = AutoRemediation(cfg, {"n1": node}, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng.start()
    eng._task.cancel()  # type: ignore[union-attr]
    clock[0] += 130
    assert [d.kind for d in await eng.check()] == ["run"]
    node.connected_at = clock[0] + 1  # came back and dropped again between two checks
    clock[0] += 5
    assert await eng.check() == []  # the new episode starts now: not yet past the threshold
    clock[0] += 130
    assert [d.kind for d in await eng.check()] == ["throttled"]
    await eng.stop()


async def test_at_most_two_runs_at_once_and_stop_records_the_interrupted(store: Any, tmp_path: Path) -> None:
    writer, reader, path = store
    clock = [NOW]
    nodes = {f"n{i}": SimpleNamespace(status="offline") for i in range(3)}
    running: list[str] = []
    peak = [0]

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        running.append(spec.host)
        peak[0] = max(peak[0], len(running))
        await stopping.wait()
        running.remove(spec.host)
        return Outcome(error="interrupted: the supervisor is shutting down")

    ev = Emitted()
    cfg = AutoConfig(auto=(AGENT_CRASHED,), inventory="/inv", offline_seconds=120, state_dir=tmp_path)
    eng = AutoRemediation(cfg, nodes, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng.start()
    eng._task.cancel()  # type: ignore[union-attr]
    clock[0] += 130
    assert len(await eng.check()) == 3
    await asyncio.sleep(0.1)
    assert peak[0] == 2 and ev.types().count("remediation.started") == 3
    await eng.stop()
    assert ev.types().count("remediation.failed") == 3
    n = path.connect().execute("SELECT COUNT(*) FROM remediations WHERE status='failed' AND actor='auto'")
    assert n.fetchone()[0] == 3


async def test_an_incident_that_restarts_the_supervisor_is_handed_to_the_root_runner(store: Any,
                                                                                   tmp_path: Path) -> None:
    """supervisor-high-memory's repair restarts hal-supervisor: never run as its child (killed with it), but a
    request file for hal-supervisor-remediate.path, under the same throttle; no request directory -> a
    failed record naming the command, never the in-process run."""
    from halswarm.core.remediation.requests import parse_request

    writer, reader, _ = store
    ran: list[RunSpec] = []

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        return Outcome(report=good_report(spec), rc=0)

    requests = tmp_path / "remediation-requests"
    requests.mkdir()
    cfg = AutoConfig(auto=("supervisor-high-memory",), inventory="/inv", window_seconds=3600, state_dir=tmp_path,
                     request_dir=requests)
    ev = Emitted()
    eng = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: NOW)
    await eng.start()
    assert await eng.on_alert("supervisor-high-memory", "hal_supervisors", "hal_supervisors", "alert M") == "started"
    await asyncio.wait(eng._running, timeout=5)
    (name,) = os.listdir(requests)
    assert parse_request((requests / name).read_bytes(), NOW).incident == "supervisor-high-memory"
    assert await eng.on_alert("supervisor-high-memory", "hal_supervisors", "hal_supervisors", "again") == "throttled"
    assert ran == [] and len(os.listdir(requests)) == 1
    assert ev.types() == ["remediation.started", "remediation.throttled"]  # the POSTed report routes the rest
    await eng.stop()

    (requests / name).unlink()
    requests.rmdir()
    eng2 = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: NOW + 7200)
    await eng2.start()
    assert await eng2.on_alert("supervisor-high-memory", "hal_supervisors", "hal_supervisors", "alert M") == "started"
    await asyncio.wait(eng2._running, timeout=5)
    await eng2.stop()
    assert ran == []
    assert ev.types()[-2:] == ["remediation.started", "remediation.failed"]
    row = store[2].connect().execute("SELECT status, report FROM remediations").fetchone()
    assert row[0] == "failed" and "only the root request unit may run it" in json.loads(row[1])["error"], row
    assert "halctl remediate supervisor-high-memory -i /inv --limit hal_supervisors" in json.loads(row[1])["error"]
