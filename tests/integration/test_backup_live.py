"""Online backup of a live supervisor while the ingest benchmark's load generator keeps events flowing:
the copy passes PRAGMA integrity_check and holds every event acknowledged before the backup started."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agentsim import SimAgent
from tests.support.backup import REPO, count, halctl_json
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import on_loop

PROBE = "probe-node"


def _bench_events(db: Path) -> int:
    try:
        return count(db, "SELECT count(*) FROM events WHERE node_id LIKE 'bench-%'")
    except sqlite3.Error:
        return 0


@pytest.mark.timeout(240)
def test_backup_under_ingest_load_keeps_every_acked_event(supervisor: SupervisorProc, tmp_path: Path) -> None:
    sup = supervisor
    load = subprocess.Popen(
        [sys.executable, "bench/ingest.py", "--role", "loadgen", "--url", sup.ws_url, "--token", sup.agent_token,
         "--agents", "20", "--seconds", "12"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    backups = tmp_path / "backups"
    outcome: dict[str, object] = {}
    try:
        async def scenario() -> None:
            agent = SimAgent(sup.ws_url, sup.agent_token, PROBE, projects=[("proj", "/srv/proj")])
            await agent.connect()
            stop = asyncio.Event()
            sent = 0

            async def stream() -> None:  # the probe agent keeps sending during the backup too
                nonlocal sent
                while not stop.is_set():
                    if sent - agent.acked < 200:
                        sent += 1
                        await agent.send_event(sent, "message.part.delta", session_id="ses_probe", project="proj",
                                               data={"n": sent, "text": "x" * 200})
                    else:
                        await asyncio.sleep(0.002)
                    if sent % 25 == 0:
                        await asyncio.sleep(0)

            sender = asyncio.create_task(stream())
            try:
                def flowing() -> bool:
                    assert load.poll() is None, load.stderr.read() if load.stderr else ""
                    return _bench_events(sup.db_path) >= 2000 and agent.acked >= 500

                await on_loop(flowing, "the load flowing (2,000 bench events, 500 acked)", 60, interval=0.1)
                acked_before = agent.acked  # cumulative: every seq <= this is durably stored
                bench_before = _bench_events(sup.db_path)
                result = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: halctl_json("backup", "create", "--config", str(sup.config_path),
                                              "--dir", str(backups), "--keep", "3"))
                outcome.update(result=result, acked_before=acked_before, bench_before=bench_before,
                               load_running_after=load.poll() is None, acked_after=agent.acked)
            finally:
                stop.set()
                await sender
                await agent.close()

        asyncio.run(scenario())
        out, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.communicate()
    assert load.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["events_per_s"] > 0 and stats["error_count"] == 0, stats

    result = outcome["result"]
    assert isinstance(result, dict)
    assert outcome["load_running_after"], "the backup finished after the load stopped; it proves nothing"
    assert result["integrity"] == "ok"
    path = Path(result["path"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    acked_before = int(outcome["acked_before"])  # type: ignore[call-overload]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = {r[0] for r in conn.execute("SELECT seq FROM events WHERE node_id = ? AND seq <= ?",
                                           (PROBE, acked_before))}
        assert seqs == set(range(1, acked_before + 1)), f"missing acked events: {acked_before - len(seqs)}"
        bench_in_backup = conn.execute("SELECT count(*) FROM events WHERE node_id LIKE 'bench-%'").fetchone()[0]
        assert bench_in_backup >= int(outcome["bench_before"])  # type: ignore[call-overload]
        assert conn.execute("SELECT last_seq FROM nodes WHERE id = ?", (PROBE,)).fetchone()[0] >= acked_before
    finally:
        conn.close()
    assert result["tables"]["events"] >= acked_before + bench_in_backup
    assert int(outcome["acked_after"]) > acked_before  # type: ignore[call-overload]  # writes went on meanwhile
    # The live database moved on past the snapshot: the backup is a point-in-time copy, not the live file.
    assert count(sup.db_path) > result["tables"]["events"]
    verified = halctl_json("backup", "verify", str(path))
    assert verified["ok"] and verified["checksum"] == "ok"
