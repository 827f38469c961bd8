"""Automatic remediation in the real supervisor: a node that stays offline gets the real
`halctl remediate agent-crashed` (real ansible-runner, local connection) on its inventory host; the run is
recorded (actor auto), audited and routed to a webhook; a second offline inside the window is throttled.
Plus the start-up refusal on a corrupt database with supervisor-db-corruption in remediation.auto.

This host runs no hal-agent.service, so the playbook's honest outcome is whatever it diagnoses (typically
not_present); the test asserts the mechanism, not that outcome.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.receivers import Receiver, receivers
from tests.support.agentsim import SimAgent
from tests.support.ports import free_port
from tests.support.supervisor_proc import REPO
from tests.support.waiting import until

pytest.importorskip("ansible_runner")

NODE = "auto-node"


def _types(hook: Receiver) -> list[str]:
    return [b["event"]["type"] for b in hook.bodies()]


@pytest.mark.timeout(120)
async def test_offline_node_gets_agent_crashed_once_per_window(make_supervisor: Any, tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hal_agents]\n{NODE} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    with receivers("ok") as (hook,):
        sup = make_supervisor(
            remediation={"inventory": str(inv), "auto": ["agent-crashed"], "offline_minutes": 0.02,
                         "window_minutes": 60, "timeout_minutes": 2},
            routes=[{"match": "remediation.*", "target": f"webhook:{hook.url}/rem"}],
            routing={"backoff_base_ms": 50, "timeout_seconds": 2}).start()
        agent = SimAgent(sup.ws_url, sup.agent_token, NODE)
        await agent.connect()
        await agent.close()  # offline; the threshold is 1.2 s
        await until(lambda: "remediation.started" in _types(hook), "remediation.started", 15, interval=0.2)

        # Second offline episode inside the window (while the first run may still be going): throttled.
        again = SimAgent(sup.ws_url, sup.agent_token, NODE)
        await again.connect()
        await again.close()
        await until(lambda: "remediation.throttled" in _types(hook), "remediation.throttled", 15, interval=0.2)
        done = ("remediation.completed", "remediation.escalated", "remediation.failed")
        try:
            await until(lambda: any(t in done for t in _types(hook)), "the run to finish", 60, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {_types(hook)}\n{sup.log_tail()}") from None

        with sup.client() as c:
            items = c.get("/api/v1/remediations").json()["data"]
            audit = c.get("/api/v1/audit", params={"actor": "auto"}).json()["data"]
        assert len(items) == 1, items
        (rec,) = items
        assert rec["actor"] == "auto" and rec["incident"] == "agent-crashed", rec
        final = next(b["event"] for b in hook.bodies() if b["event"]["type"] in done)
        assert final["node_id"] == NODE and final["data"]["id"] == rec["id"] and final["data"]["actor"] == "auto"
        assert final["data"]["status"] == rec["status"]
        if final["type"] == "remediation.failed":  # no report from halctl: the error is recorded
            assert rec["status"] == "failed" and rec.get("error"), rec
        else:  # the real playbook ran against this host
            assert rec["hosts"] == [NODE] and rec["run"]["status"] in ("successful", "failed"), rec
            assert final["type"] == ("remediation.escalated" if rec["status"] in ("failed", "escalated")
                                     else "remediation.completed")
        assert [(a["action"], a["target"], a["result"]) for a in audit] == [
            ("remediation", "agent-crashed", rec["status"])], audit
        throttled = next(b["event"] for b in hook.bodies() if b["event"]["type"] == "remediation.throttled")
        assert throttled["node_id"] == NODE and throttled["data"]["window_minutes"] == 60
        assert _types(hook).count("remediation.started") == 1
        print(f"auto remediation outcome on this host: {rec['status']} ({rec.get('decision')})")


def test_corrupt_database_names_the_remediation_command_without_systemd(tmp_path: Path) -> None:
    db = tmp_path / "supervisor.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({
        "server": {"auth_token": "a" * 40, "port": free_port(), "http_port": free_port()},
        "database": {"path": str(db)},
        "remediation": {"inventory": str(tmp_path / "hosts.ini"), "auto": ["supervisor-db-corruption"]}}))
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "HAL_AUTH_TOKEN")}
    res = subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    assert "halctl restore" in lines[0] and "failed its integrity check" in lines[0]
    assert lines[0].endswith(f"; not under systemd, auto remediation not started: run `halctl remediate "
                             f"supervisor-db-corruption -i {tmp_path / 'hosts.ini'} --limit hal_supervisors`")
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(db).execute("SELECT * FROM sqlite_master").fetchall()  # untouched, still corrupt


def test_corrupt_database_writes_a_request_the_root_runner_accepts(tmp_path: Path) -> None:
    """Deployed, the supervisor cannot start a root unit: with its request directory present it writes a
    request (no systemd-run), and the runner the role's root path unit starts takes it and runs the fixed
    halctl command line (here a missing inventory: halctl fails fast, one line, nothing touched)."""
    db = tmp_path / "supervisor.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    requests = tmp_path / "remediation-requests"
    requests.mkdir(mode=0o700)
    inventory = tmp_path / "no-such-hosts.ini"
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps({
        "server": {"auth_token": "a" * 40, "port": free_port(), "http_port": free_port()},
        "database": {"path": str(db)},
        "remediation": {"inventory": str(inventory), "auto": ["supervisor-db-corruption"]}}))
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "HAL_AUTH_TOKEN")}
    res = subprocess.run([sys.executable, "-m", "halswarm.supervisor.main", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert res.returncode == 1
    (line,) = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    (req,) = requests.iterdir()
    assert f"; auto remediation requested ({req}; hal-supervisor-remediate.service runs `halctl remediate " \
           f"supervisor-db-corruption -i {inventory} --limit hal_supervisors`)" in line, line
    run = subprocess.run([sys.executable, "-m", "halswarm.supervisor.features.remediations.request_runner",
                          "--config", str(cfg), "--dir", str(requests)],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert f"{req.name}: accepted (supervisor-db-corruption)" in run.stdout, run.stdout + run.stderr
    assert f"running `halctl remediate supervisor-db-corruption -i {inventory} --limit hal_supervisors`" \
        in run.stdout and run.returncode != 0, run.stdout + run.stderr
    assert list(requests.iterdir()) == []
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(db).execute("SELECT * FROM sqlite_master").fetchall()  # untouched, still corrupt
