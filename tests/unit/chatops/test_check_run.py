"""`AutoRemediation.check_run`, the engine path of a chat "Run check": halctl gets `--check`, the run is awaited
and its report stored with the person as actor and routed; it neither consumes nor honours the repair throttle;
a second press while one runs is told "busy" and runs nothing; a run that gives no report is a stored failure.
Fake runner, real migrated store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from halswarm.core.remediation.report import build_report
from halswarm.store.repos.remediations import load_auto_started
from halswarm.supervisor.features.remediations.engine import AutoRemediation
from halswarm.supervisor.features.remediations.halctl_run import Outcome, RunSpec, halctl_argv
from halswarm.supervisor.features.remediations.settings import AutoConfig
from tests.support.store_rig import Emitted, running_store

NOW = 1_800_000_000.0


def test_halctl_argv_asks_for_check_mode_only_when_told() -> None:
    assert "--check" in halctl_argv("agent-crashed", "/inv", "n1", check=True)
    assert "--check" not in halctl_argv("agent-crashed", "/inv", "n1")


async def test_a_check_is_awaited_stored_as_the_person_and_outside_the_throttle(tmp_path: Path) -> None:
    ran: list[RunSpec] = []
    gate, running = asyncio.Event(), asyncio.Event()

    async def runner(spec: RunSpec, stopping: asyncio.Event) -> Outcome:
        ran.append(spec)
        running.set()
        await gate.wait()
        if spec.limit == "n2":
            return Outcome(error="halctl exited 2: boom", rc=2)
        return Outcome(report=build_report(spec.incident, hosts=[spec.host], facts={}, plan={"decision": "repair"},
                                           status="check", check=True, started=NOW, finished=NOW + 1), rc=0)

    async with running_store(tmp_path / "sup.db") as (writer, reader, _path):
        ev = Emitted()
        cfg = AutoConfig(auto=(), inventory="/inv", window_seconds=3600, state_dir=tmp_path)
        eng = AutoRemediation(cfg, {}, ev, writer, reader, runner=runner, clock=lambda: NOW)
        first = asyncio.ensure_future(eng.check_run("agent-crashed", "n1", "n1", "slack:U1"))
        await asyncio.wait_for(running.wait(), 30)
        assert await eng.check_run("agent-crashed", "n1", "n1", "discord:2") == {"action": "busy"}
        gate.set()
        out = await first
        assert (out["action"], out["status"]) == ("checked", "check") and len(ran) == 1 and ran[0].check
        failed = await eng.check_run("agent-crashed", "n2", "n2", "slack:U1")
        assert (failed["action"], failed["status"]) == ("checked", "failed") and "boom" in failed["error"]
        rows = await reader.run(lambda c: c.execute(
            "SELECT id, actor, check_mode, status FROM remediations ORDER BY received_at, status").fetchall())
        assert sorted((r[1], r[2], r[3]) for r in rows) == [("slack:U1", 1, "check"), ("slack:U1", 1, "failed")]
        assert out["report_id"] in {r[0] for r in rows}
        assert await reader.run(load_auto_started) == {} and eng.last_started == {}  # no throttle mark
        assert [t for _n, t, _d in ev.events] == ["remediation.started", "remediation.completed",
                                                  "remediation.started", "remediation.failed"]
        assert ev.events[0][2]["check"] is True and ev.events[1][2]["actor"] == "slack:U1"
