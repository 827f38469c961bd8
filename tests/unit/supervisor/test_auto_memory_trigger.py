"""agent-high-memory as a built-in trigger of the auto-remediation engine: heartbeats seen by the periodic
pass feed the detector; a firing goes through the same launch path and persisted throttle as agent-crashed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from halswarm.core.remediation.report import build_report
from halswarm.core.remediation.triggers import CostProviderFacts
from halswarm.store.reader import Reader
from halswarm.store.writer import Writer
from halswarm.supervisor.features.remediations.engine import AutoRemediation
from halswarm.supervisor.features.remediations.halctl_run import Outcome, RunSpec
from halswarm.supervisor.features.remediations.settings import AGENT_HIGH_MEMORY, COST_DISCREPANCY, AutoConfig
from tests.support.store_engines import StoreDb
from tests.support.store_rig import Emitted, running_store

NOW = 1_000_000.0


@pytest.fixture
async def store(store_db: StoreDb) -> AsyncIterator[tuple[Writer, Reader, StoreDb]]:
    """The engine's store on each engine (SQLite, PostgreSQL)."""
    async with running_store(store_db) as store:
        yield store


def beat(node: SimpleNamespace, pct: float) -> None:
    node.last_heartbeat = (node.last_heartbeat or 0) + 1
    node.resources = {"ram_used_mb": pct * 10, "ram_total_mb": 1000.0}


async def test_memory_streak_runs_once_per_window_and_persists(store: Any, tmp_path: Path) -> None:
    writer, reader, path = store
    clock = [NOW]
    node = SimpleNamespace(status="online", last_heartbeat=None, resources={})
    bad = SimpleNamespace(status="online", last_heartbeat=None, resources={})
    nodes = {"n1": node, "n1,all": bad}
    ran: list[RunSpec] = []

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        return Outcome(report=build_report(spec.incident, hosts=[spec.host], facts={}, plan={"decision": "present"},
                                           status="verified", started=NOW, finished=NOW + 1), rc=0)

    ev = Emitted()
    cfg = AutoConfig(auto=(AGENT_HIGH_MEMORY,), inventory="/inv", window_seconds=3600, state_dir=tmp_path,
                     memory_percent=80, memory_heartbeats=3)
    eng = AutoRemediation(cfg, nodes, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng.start()
    assert eng._task is not None
    eng._task.cancel()  # drive check() by hand  # type: ignore[union-attr]
    for pct in (90, 90):
        beat(node, pct)
        beat(bad, 99)
        await eng.check()
        await eng.check()  # the same heartbeat looked at twice counts once
    assert ran == [] and ev.types() == []
    beat(node, 90)
    beat(bad, 99)
    await eng.check()
    await asyncio.wait(eng._running, timeout=5)
    assert [(s.incident, s.host, s.limit) for s in ran] == [(AGENT_HIGH_MEMORY, "n1", "n1")]  # not "n1,all"
    assert ev.types() == ["remediation.started", "remediation.completed"]
    assert "memory at 90%" in ev.events[0][2]["trigger"]

    # still high: another 3 heartbeats fire again, inside the window -> one throttled event, no run
    for _ in range(6):
        clock[0] += 30
        beat(node, 95)
        await eng.check()
    assert len(ran) == 1 and ev.types()[2:] == ["remediation.throttled"]
    await eng.stop()

    row = [tuple(r) for r in path.connect().execute("SELECT incident, host FROM auto_remediation_state").fetchall()]
    assert row == [(AGENT_HIGH_MEMORY, "n1")]

    # a restart honours the persisted window
    eng2 = AutoRemediation(cfg, {"n1": node}, ev, writer, reader, runner=runner, clock=lambda: clock[0])
    await eng2.start()
    eng2._task.cancel()  # type: ignore[union-attr]
    for _ in range(3):
        beat(node, 95)
        await eng2.check()
    assert len(ran) == 1 and ev.types()[-1] == "remediation.throttled"
    # after the window: runs again
    clock[0] += 3600
    for _ in range(3):
        beat(node, 95)
        await eng2.check()
    await asyncio.wait(eng2._running, timeout=5)
    assert len(ran) == 2
    await eng2.stop()


async def test_not_listed_means_no_memory_trigger(store: Any, tmp_path: Path) -> None:
    writer, reader, _ = store
    node = SimpleNamespace(status="online", last_heartbeat=None, resources={})
    eng = AutoRemediation(AutoConfig(auto=("agent-crashed",), state_dir=tmp_path), {"n1": node}, Emitted(),
                          writer, reader, runner=lambda s, e: asyncio.sleep(0, Outcome(error="x")))
    await eng.start()
    eng._task.cancel()  # type: ignore[union-attr]
    for _ in range(5):
        beat(node, 99)
        await eng.check()
    assert eng.stats.runs == 0
    await eng.stop()


def test_every_incident_has_a_trigger_or_a_stated_reason() -> None:
    from halswarm.core.remediation.catalog import INCIDENTS
    from halswarm.supervisor.features.remediations.settings import NO_TRIGGER, TRIGGERS

    ids = {i.id for i in INCIDENTS}
    assert ids == set(TRIGGERS) | set(NO_TRIGGER) and not set(TRIGGERS) & set(NO_TRIGGER)
    doc = (Path(__file__).resolve().parents[3] / "docs" / "remediation.md").read_text()
    table = doc.split("### Which incidents start by themselves", 1)[1]
    assert all(f"| `{i}` |" in table for i in ids)


async def test_untriggered_warning_says_why(store: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer, reader, _ = store
    eng = AutoRemediation(AutoConfig(auto=("manual-auth-required",), state_dir=tmp_path), {}, Emitted(), writer,
                          reader)
    await eng.start()
    assert "manual-auth-required has no automatic trigger (a human must complete the login)" in caplog.text
    await eng.stop()


async def test_cost_failures_run_cost_data_discrepancy_on_the_supervisor_host(store: Any, tmp_path: Path) -> None:
    writer, reader, _ = store
    clock = [NOW]
    state = [CostProviderFacts("anthropic", 1, NOW)]
    ran: list[RunSpec] = []

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        return Outcome(error="no inventory")

    ev = Emitted()
    cfg = AutoConfig(auto=(COST_DISCREPANCY,), inventory="/inv", state_dir=tmp_path, supervisor_host="sup1",
                     cost_failures=3)
    eng = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: clock[0],
                          cost_state=lambda: list(state), cost_health=_health(running=True))
    await eng.start()
    eng._task.cancel()  # type: ignore[union-attr]
    await eng.check()
    assert ran == []
    state[0] = CostProviderFacts("anthropic", 3, NOW)
    await eng.check()
    await eng.check()  # the same episode decides once
    await asyncio.wait(eng._running, timeout=5)
    assert [(s.incident, s.limit) for s in ran] == [(COST_DISCREPANCY, "sup1")]
    assert ev.types() == ["remediation.started", "remediation.failed"]
    # recovered, then degraded again inside the window: one throttled event
    state[0] = CostProviderFacts("anthropic", 0, None)
    await eng.check()
    state[0] = CostProviderFacts("anthropic", 4, NOW + 60)
    await eng.check()
    await eng.check()
    assert len(ran) == 1 and ev.types()[-1] == "remediation.throttled"
    assert ev.types().count("remediation.throttled") == 1
    await eng.stop()


def _health(*, running: bool, fail: bool = False) -> Any:
    async def health() -> dict[str, Any]:
        if fail:
            raise RuntimeError("database is locked")
        return {"running": running, "poll_interval_s": 3600, "providers_configured": ["anthropic"],
                "last_update_age_s": 30.0, "missing_dates": [], "degraded_providers": ["anthropic"]}
    return health


@pytest.mark.parametrize(("running", "fail"), [(False, False), (True, True)])
async def test_cost_run_whose_plan_restarts_the_supervisor_goes_to_the_root_runner(
        store: Any, tmp_path: Path, running: bool, fail: bool) -> None:
    """The aggregator is not running (the plan restarts hal-supervisor), or its health cannot be read: not the
    supervisor's child (it would be killed by the restart) but one request file for the root runner."""
    from halswarm.core.remediation.requests import parse_request

    writer, reader, _ = store
    ran: list[RunSpec] = []

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        return Outcome(error="must not run")

    requests = tmp_path / "remediation-requests"
    requests.mkdir()
    ev = Emitted()
    cfg = AutoConfig(auto=(COST_DISCREPANCY,), inventory="/inv", state_dir=tmp_path, supervisor_host="sup1",
                     cost_failures=3, request_dir=requests)
    eng = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: NOW,
                          cost_health=_health(running=running, fail=fail))
    await eng.start()
    assert await eng.on_alert(COST_DISCREPANCY, "sup1", "sup1", "HalCostDataStale") == "started"
    await asyncio.wait(eng._running, timeout=5)
    await eng.stop()
    assert ran == []
    (name,) = os.listdir(requests)
    assert parse_request((requests / name).read_bytes(), NOW).incident == COST_DISCREPANCY
    assert ev.types() == ["remediation.started"]  # the report the root runner POSTs routes the rest
