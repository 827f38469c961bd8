"""Storage faults under the real supervisor process (issue 15): the database file deleted, made
read-only or failing inside a write job. The supervisor stops acking, /readyz names the cause, and
no acknowledged event is lost."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import httpx
import pytest

from tests.support.agentsim import SimAgent
from tests.support.waiting import until


def _rows(db_path, sql: str, *args):  # type: ignore[no-untyped-def]
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _readyz(sup) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    try:
        r = httpx.get(sup.api + "/readyz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json()


async def test_deleted_database_stops_acks_and_keeps_every_acked_event(make_supervisor):
    sup = make_supervisor().start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "n1", [("p", "/p")])
    await agent.connect()
    stop = asyncio.Event()

    async def stream() -> None:
        seq = 0
        with contextlib.suppress(Exception):
            # Like a real agent, it stops running ahead once told to rewind (seq_gap).
            while not stop.is_set() and seq < 20_000 and not agent.errors:
                seq += 1
                await agent.send_event(seq, session_id="ses_d", project="p")
                if seq % 20 == 0:
                    await asyncio.sleep(0.01)  # a steady stream, not a flood

    sender = asyncio.create_task(stream())
    try:
        await agent.wait_acked(100, timeout=30)
        for suffix in ("", "-wal", "-shm"):
            sup.db_path.with_name(sup.db_path.name + suffix).unlink(missing_ok=True)
        # Not ready, naming the cause, until it exits with 1 for a restart.
        seen: list[dict] = []

        def gone_or_unready() -> bool:
            code, body = _readyz(sup)
            if code == 503:
                seen.append(body)
            return sup.proc.poll() is not None

        await until(gone_or_unready, timeout=60, what="supervisor to exit after its database was deleted",
                    interval=0.05)
        assert sup.proc.returncode == 1, sup.log_tail()
        acked = agent.acked
    finally:
        stop.set()
        await sender
        await agent.close()
    # /readyz answers 503 for the 5 s before the exit; on a starved machine the poll may miss that
    # window, so the cause is also checked in the log line (the same text /readyz reports; the unit
    # test of the writer checks health() names it).
    for body in seen:
        assert "deleted" in body["components"]["database"]["error"]
    log = sup.log_path.read_text()
    assert log.count("storage fault: ") == 1, sup.log_tail()
    assert "was deleted under the running supervisor" in log
    assert "Traceback" not in log
    # Every acknowledged event is in the file the next start opens.
    stored = {r[0] for r in _rows(sup.db_path, "SELECT seq FROM events WHERE node_id='n1' AND seq IS NOT NULL")}
    missing = set(range(1, acked + 1)) - stored
    assert not missing, f"{len(missing)} acked events lost (acked up to {acked})"
    sup.start()
    back = SimAgent(sup.ws_url, sup.agent_token, "n1", [("p", "/p")])
    reg = await back.connect(last_acked_seq=acked)
    try:
        assert reg.resume_from_seq >= acked
        await back.send_event(reg.resume_from_seq + 1, session_id="ses_d", project="p")
        await back.wait_acked(reg.resume_from_seq + 1)
    finally:
        await back.close()


async def test_read_only_database_stops_acks_and_recovers(supervisor):
    sup = supervisor
    agent = SimAgent(sup.ws_url, sup.agent_token, "ro", [("p", "/p")])
    await agent.connect()
    try:
        for seq in range(1, 11):
            await agent.send_event(seq, project="p")
        await agent.wait_acked(10)
        sup.db_path.chmod(0o444)
        try:
            await agent.send_event(11, project="p")
            await until(lambda: any(e["code"] == "seq_gap" for e in agent.errors), timeout=20,
                        what="the supervisor to refuse storing seq 11")
            code, body = _readyz(sup)
            assert code == 503 and "read-only" in body["components"]["database"]["error"]
            assert agent.acked == 10
            # A node registering now is refused cleanly (its registration could not be stored).
            late = SimAgent(sup.ws_url, sup.agent_token, "late", [("p", "/p")])
            try:
                with pytest.raises(Exception):  # noqa: B017 - closed before `registered`, any client error
                    await late.connect()
            finally:
                await late.close()
        finally:
            sup.db_path.chmod(0o644)
        await until(lambda: _readyz(sup)[0] == 200, timeout=20, what="readyz 200 after chmod back")
        await agent.send_event(11, project="p")
        await agent.wait_acked(11)
    finally:
        await agent.close()
    got = [r[0] for r in _rows(sup.db_path,
                               "SELECT seq FROM events WHERE node_id='ro' AND seq IS NOT NULL ORDER BY seq")]
    assert got == list(range(1, 12))
    log = sup.log_path.read_text()
    assert log.count("storage fault: ") == 1 and "Traceback" not in log


async def test_failure_inside_a_write_job_turns_readyz_503(supervisor):
    sup = supervisor
    agent = SimAgent(sup.ws_url, sup.agent_token, "jobfail", [("p", "/p")])
    await agent.connect()
    try:
        await agent.send_event(1, project="p")
        await agent.wait_acked(1)
        db = sqlite3.connect(sup.db_path, timeout=10)
        db.execute("CREATE TRIGGER inject BEFORE INSERT ON events WHEN NEW.type='boom' "
                   "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
        db.commit()
        try:
            await agent.send_event(2, "boom", project="p")
            await until(lambda: any(e["code"] == "seq_gap" for e in agent.errors), timeout=20,
                        what="the supervisor to fail storing seq 2")
            code, body = _readyz(sup)
            assert code == 503, body
            assert "injected fault" in body["components"]["database"]["error"]
            assert agent.acked == 1
        finally:
            db.execute("DROP TRIGGER inject")
            db.commit()
            db.close()
        await agent.send_event(2, "boom", project="p")
        await agent.wait_acked(2)
        await until(lambda: _readyz(sup)[0] == 200, timeout=30, what="readyz 200 after the fault cleared")
    finally:
        await agent.close()
