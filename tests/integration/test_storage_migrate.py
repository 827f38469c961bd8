"""`halctl storage migrate --to postgresql://...` (issue 21): every row of every table of a SQLite
installation arrives in PostgreSQL (row counts and the rows themselves compared here, independently of
the command's own check), ids continue after SQLite's last one, the real supervisor then runs on the
copy and an agent resumes from the stored seq; bad targets are refused with one line, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from halswarm.core.approvals import Asked
from halswarm.core.cost import Bucket, SessionUsage
from halswarm.core.model import Node, Session
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.pg import connect as pg_connect
from halswarm.store.repos import approvals, audit, commands, cost, dependencies, env, nodes, policies, remediations
from halswarm.store.repos.events import insert_events
from halswarm.store.repos.retention import delete_step
from halswarm.store.repos.sessions import upsert_sessions
from halswarm.store.transfer import pg_columns, sqlite_columns, sqlite_tables
from tests.support.agentsim import SimAgent
from tests.support.postgres import PostgresCluster
from tests.support.supervisor_proc import REPO, SupervisorProc

pytestmark = pytest.mark.timeout(300)
NOW = time.time()


def build_sqlite(path: Path) -> None:
    """A database with rows in every table the supervisor writes (through the repos it writes with)."""
    conn = connect(path)
    migrate(conn)
    conn.execute("BEGIN")
    for n in ("n1", "n2"):
        nodes.upsert_node(conn, Node(id=n, hostname=f"{n}.test", status="online", projects=[{"name": "p"}],
                                     last_heartbeat=NOW, connected_at=NOW, first_seen_at=NOW - 100))
    upsert_sessions(conn, [Session(id=f"ses_{i}", node_id="n1", project="p", status="completed",
                                   started_at=NOW - 1000 + i, last_activity=NOW - 10 + i, title="t ü ✓")
                           for i in range(20)])
    rows = [("n1", i, f"e{i}", f"ses_{i % 20}", "p", "message.part.delta", json.dumps({"i": i, "s": "ü"}),
             NOW - 5000 + i, NOW - 5000 + i) for i in range(1, 1201)]
    rows += [("n2", i, f"f{i}", None, "p", "t", None, NOW - 50 + i, NOW) for i in range(1, 11)]
    rows += [(None, None, "sup-1", None, None, "node.online", "{}", NOW, NOW)]
    insert_events(conn, rows)
    nodes.set_nodes_last_seq(conn, {"n1": 1200, "n2": 10})
    for k in range(30):
        audit.insert_audit(conn, {"timestamp": NOW - k, "actor": "op", "action": "kill_session", "target": str(k),
                                  "result": "success", "args": {"k": k}, "duration_ms": k})
    commands.insert_command(conn, {"command_id": "c1", "type": "kill_session", "target": {"session_id": "s"},
                                   "args": {}, "status": "success", "actor": "op", "created_at": NOW})
    commands.put_idempotent(conn, "h1", "c1", {"ok": True}, NOW + 3600)
    cost.replace_days(conn, "anthropic", ["2026-12-01"], [Bucket("anthropic", "2026-12-01", "m", "p", 10, 5, 0.5)],
                      NOW)
    cost.add_session_usage(conn, [(SessionUsage("2026-12-01", "ses_1", "p", "anthropic", "m", 100, 0.5), 60, 40,
                                   False)], {"ses_1": (60, 40, 100, 0.5)})
    policies.save_policy_state(conn, "ses_1", "resume_on_idle", (1, NOW, None, "failure", "boom", None))
    dependencies.save_marks(conn, {"p": "event:e1"}, NOW)
    dependencies.insert_start(conn, "q", "p", "m", None, "c1", "success", None, NOW)
    env.add_manifest(conn, {"version": "1.0"}, "spec", "d1", "op")
    env.store_checks(conn, "n1", [{"project": "p", "status": "ready", "manifest_version": 1}], "api", None, NOW)
    env.offer_pending(conn, "n1", "p", [{"id": "a", "token": "t", "category": "tools", "item": "x",
                                         "command": "apt-get install -y x", "reason": "r"}], NOW)
    for rid in ("r-b", "r-a"):  # arrival order differs from id order
        remediations.insert_remediation(conn, {"id": rid, "incident": "node-offline", "severity": "high",
                                               "status": "success", "decision": "run", "hosts": ["h1"],
                                               "check": False, "duration_s": 1.5}, actor="op", now=NOW)
    remediations.save_auto_started(conn, "node-offline", "h1", NOW, "offline")
    approvals.apply_changes(conn, [Asked("per_1", "n1", "ses_1", "p", "bash", ("rm *",), (), "rm -rf x",
                                         {"callID": "c"}, NOW)])
    conn.execute("COMMIT")
    # Retention took the newest events of n2 away: ids must still continue after the last one handed out.
    conn.execute("DELETE FROM events WHERE node_id='n2' AND seq > 5")
    assert delete_step(conn, "events", NOW - 4990, 100, 5.0) == 9
    conn.close()


def halctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "halswarm.cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=180, check=False)


def _norm(v: Any) -> Any:
    return float(v) if isinstance(v, float) else v


def table_rows(conn: Any, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in cols)
    return sorted((tuple(_norm(v) for v in r) for r in conn.execute(f'SELECT {names} FROM "{table}"')), key=repr)


def test_every_row_arrives_and_the_supervisor_runs_on_the_copy(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    db = tmp_path / "supervisor.db"
    build_sqlite(db)
    url = pg_cluster.password_database()
    pw = tmp_path / "pg.password"
    pw.write_text(pg_cluster.password)
    pw.chmod(0o600)
    out = halctl("storage", "migrate", "--from", str(db), "--to", url, "--password-file", str(pw))
    assert out.returncode == 0, out.stderr
    assert "copied and verified" in out.stdout and "DIFFERENT" not in out.stdout
    assert pg_cluster.password not in out.stdout + out.stderr

    src = connect(db, readonly=True)
    dst = pg_connect(url, password=pg_cluster.password)
    try:
        tables = sqlite_tables(src)
        assert len(tables) >= 20
        for t in tables:
            cols = sqlite_columns(src, t)
            assert set(cols) <= set(pg_columns(dst, t)), t
            want, got = table_rows(src, t, cols), table_rows(dst, t, cols)
            assert len(got) == len(want), f"{t}: {len(got)} rows, want {len(want)}"
            assert got == want, f"{t}: the rows differ"
        assert sum(len(table_rows(src, t, sqlite_columns(src, t))) for t in tables) > 1200
        # The runbook's generated text exists on the copy too, computed by PostgreSQL.
        assert dst.execute("SELECT count(*) FROM sessions WHERE timestamp IS NULL").fetchone()[0] == 0
        # Arrival order of remediations kept (SQLite's rowid order).
        assert [r[0] for r in dst.execute("SELECT id FROM remediations ORDER BY received_seq")] == ["r-b", "r-a"]
        last_handed = src.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()[0]
        assert dst.execute("SELECT nextval('events_id_seq')").fetchone()[0] == last_handed + 1
    finally:
        dst.close()
        src.close()

    sup = SupervisorProc(tmp_path / "sup", extra={"storage": {"url": url, "password_file": str(pw)}})
    sup.start(timeout=60)
    try:
        import asyncio

        async def resume() -> int:
            agent = SimAgent(sup.ws_url, sup.agent_token, "n1", [("p", "/p")])
            reg = await agent.connect(last_acked_seq=1200)
            await agent.send_event(1201, "message.part.delta", session_id="ses_1", project="p")
            await agent.wait_acked(1201, timeout=60)
            await agent.close()
            return int(reg.resume_from_seq)

        assert asyncio.run(resume()) == 1200
        with sup.client() as c:
            body = c.get("/api/v1/events", params={"node_id": "n1", "type": "message.part.*", "limit": 1,
                                                   "order": "desc"}).json()
            assert body["data"][0]["seq"] == 1201
            assert c.get("/api/v1/sessions/ses_3").json()["data"]["title"] == "t ü ✓"
    finally:
        sup.stop()


def test_bad_targets_are_refused_and_nothing_is_written(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    db = tmp_path / "supervisor.db"
    build_sqlite(db)
    url = pg_cluster.fresh_database()
    out = halctl("storage", "migrate", "--from", str(db), "--to", str(tmp_path / "other.db"))
    assert out.returncode != 0 and "must be a postgresql://" in out.stderr
    out = halctl("storage", "migrate", "--from", str(tmp_path / "missing.db"), "--to", url)
    assert out.returncode != 0 and "no such database file" in out.stderr
    out = halctl("storage", "migrate", "--from", str(db), "--to", url.replace("hal@", "hal:pw-in-url@"))
    assert out.returncode != 0 and "must not contain a password" in out.stderr and "pw-in-url" not in out.stderr
    # A value PostgreSQL's typed column refuses: one line, and the target stays empty (one transaction).
    bad = tmp_path / "odd.db"
    build_sqlite(bad)
    c = connect(bad)
    c.execute("UPDATE audit_log SET duration_ms = 'not a number' WHERE id = 3")
    c.close()
    out = halctl("storage", "migrate", "--from", str(bad), "--to", url)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode != 0 and len(errors) == 1 and "nothing was written" in errors[0], out.stderr
    with psycopg.connect(url) as dst:
        assert dst.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    # Now a good copy, then a second one into the same (no longer empty) database is refused.
    assert halctl("storage", "migrate", "--from", str(db), "--to", url).returncode == 0
    out = halctl("storage", "migrate", "--from", str(db), "--to", url)
    assert out.returncode != 0 and "is not empty" in out.stderr
    with psycopg.connect(url) as dst:
        n = connect(db, readonly=True).execute("SELECT count(*) FROM events").fetchone()[0]
        assert dst.execute("SELECT count(*) FROM events").fetchone()[0] == n
