"""The real supervisor on PostgreSQL (`storage.url`, issue 21): events acked only once committed, each
stored exactly once across a kill -9 and a restart, the API reading them back, the password taken from
its file and never written to the log, and bad storage settings refused with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.agentsim import SimAgent
from tests.support.postgres import PostgresCluster
from tests.support.supervisor_proc import REPO, SupervisorProc

pytestmark = pytest.mark.timeout(240)


def pg_rows(cluster: PostgresCluster, url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, password=cluster.password) as conn:
        return conn.execute(sql, args).fetchall()


def pg_supervisor(tmp_path: Path, cluster: PostgresCluster, url: str) -> SupervisorProc:
    secret = tmp_path / "pg.password"
    secret.write_text(cluster.password + "\n")
    secret.chmod(0o600)
    return SupervisorProc(tmp_path / "sup", extra={"storage": {"url": url, "password_file": str(secret)}})


async def test_events_on_postgresql_survive_kill9_stored_once(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database()
    sup = pg_supervisor(tmp_path, pg_cluster, url)
    sup.start(timeout=60)
    try:
        agent = SimAgent(sup.ws_url, sup.agent_token, "n1", [("p", "/p")])
        await agent.connect()
        for seq in range(1, 301):
            await agent.send_event(seq, "message.part.delta", session_id="ses_pg", project="p")
        await agent.wait_acked(300, timeout=60)
        agent.assert_acks_monotonic()
        # Acked means committed: another connection sees every acked event.
        assert pg_rows(pg_cluster, url, "SELECT count(*), min(seq), max(seq) FROM events"
                       " WHERE node_id='n1' AND seq IS NOT NULL") == [(300, 1, 300)]
        for seq in range(301, 351):  # more in flight when the supervisor dies
            await agent.send_event(seq, "message.part.delta", session_id="ses_pg", project="p")
        sup.kill9()
        await agent.close()
        assert not sup.db_path.exists(), "a SQLite file was made beside PostgreSQL"

        sup.start(timeout=60)
        again = SimAgent(sup.ws_url, sup.agent_token, "n1", [("p", "/p")])
        reg = await again.connect(last_acked_seq=agent.acked)
        resume = int(reg.resume_from_seq)
        assert resume >= agent.acked  # nothing acked is asked again as missing
        for seq in range(resume + 1, 401):  # the agent resends from where the store says
            await again.send_event(seq, "message.part.delta", session_id="ses_pg", project="p")
        await again.wait_acked(400, timeout=60)
        await again.close()
        got = pg_rows(pg_cluster, url, "SELECT seq, count(*) FROM events WHERE node_id='n1' AND seq IS NOT NULL"
                      " GROUP BY seq ORDER BY seq")
        assert [r[0] for r in got] == list(range(1, 401)) and {r[1] for r in got} == {1}
        assert pg_rows(pg_cluster, url, "SELECT last_seq FROM nodes WHERE id='n1'") == [(400,)]
        with sup.client() as c:  # the API reads through the PostgreSQL reader pool
            body = c.get("/api/v1/events", params={"node_id": "n1", "type": "message.part.*", "limit": 5,
                                                   "offset": 10}).json()
        assert [e["seq"] for e in body["data"]] == [11, 12, 13, 14, 15]
        assert body["meta"]["total"] == 400
    finally:
        sup.stop()
    log = sup.log_path.read_text(errors="replace")
    assert pg_cluster.password not in log
    assert "PostgreSQL at postgresql://hal_pw@127.0.0.1" in log


def run_supervisor_check(sup: SupervisorProc) -> subprocess.CompletedProcess[str]:
    """Start the supervisor with the written config and let it fail (bounded)."""
    sup.write_config()
    return subprocess.run([sys.executable, *sup.launcher, "--config", str(sup.config_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=90, check=False)


def test_password_in_the_url_is_refused(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database().replace("hal_pw@", f"hal_pw:{pg_cluster.password}@")
    sup = SupervisorProc(tmp_path / "sup", extra={"storage": {"url": url}})
    out = run_supervisor_check(sup)
    assert out.returncode != 0
    assert "storage.url" in out.stderr and "must not contain a password" in out.stderr
    assert pg_cluster.password not in out.stderr + out.stdout


def test_wrong_password_fails_the_start_with_one_line(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.password_database()
    secret = tmp_path / "wrong.password"
    secret.write_text("not-the-password-" + "x" * 20)
    secret.chmod(0o600)
    sup = SupervisorProc(tmp_path / "sup", extra={"storage": {"url": url, "password_file": str(secret)}})
    out = run_supervisor_check(sup)
    assert out.returncode == 1
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "password authentication failed" in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "not-the-password" not in out.stderr
