"""Restore on a real supervisor process: `halctl restore` and the collection's restore.yml (through
ansible-runner) stop the service, restore, verify, start it and report the row counts; a bad backup is
refused before anything is stopped; a database the supervisor will not start with is rolled back."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.agentsim import SimAgent
from tests.support.backup import (
    PLAYBOOKS,
    SupervisorService,
    count,
    halctl,
    halctl_json,
    one_error_line,
    populate,
    run_playbook,
    sha256,
    task_result,
)

NODE = "node-a"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[SupervisorService]:
    svc = SupervisorService(tmp_path / "sup")
    svc.start()
    try:
        yield svc
    finally:
        svc.kill()


def _api_event_total(svc: SupervisorService) -> int:
    """The agent's events (the supervisor's own node.online/offline events are not counted)."""
    with svc.sup.client() as client:
        body = client.get("/api/v1/events", params={"node_id": NODE, "type": "message.updated", "limit": 1}).json()
    return int(body["meta"]["total"])


def _agent_events(db: Path | str) -> int:
    return count(db, "SELECT count(*) FROM events WHERE node_id = ? AND seq IS NOT NULL", (NODE,))


def _backup(svc: SupervisorService, backups: Path) -> dict:
    return halctl_json("backup", "create", "--config", str(svc.sup.config_path), "--dir", str(backups))


@pytest.mark.timeout(180)
def test_halctl_restore_round_trip_on_a_live_supervisor(service: SupervisorService, tmp_path: Path) -> None:
    svc, backups = service, tmp_path / "backups"
    assert populate(svc.sup, NODE, 1, 50) == 50
    taken = _backup(svc, backups)
    assert _agent_events(taken["path"]) == 50
    populate(svc.sup, NODE, 51, 80)
    assert _api_event_total(svc) == 80
    pid_before = svc.pid()

    res = halctl("restore", Path(taken["path"]).name, "--config", str(svc.sup.config_path), "--dir", str(backups),
                 "--stop-command", svc.stop_command, "--start-command", svc.start_command, "--ready-timeout", "30")
    assert res.returncode == 0, res.stderr
    # Piped: one `table: T  before: N  after: N  change: N` line per table (halctl's pipe rule).
    fields = [dict(f.split(": ", 1) for f in line.split("  ")) for line in res.stdout.splitlines() if line.strip()]
    rows = {f["table"]: [f["before"], f["after"], f["change"]] for f in fields}
    before, after, change = rows["events"]
    assert int(after) == taken["tables"]["events"] and int(before) >= 80 and int(change) == int(after) - int(before)
    assert rows["nodes"][:2] == ["1", "1"]
    assert "the supervisor is ready" in res.stderr
    replaced = next(line.rsplit(" ", 1)[-1] for line in res.stderr.splitlines() if "kept as" in line)

    # Data back, service up (a new process), the replaced database kept with all 80 events.
    assert svc.ready() and svc.pid() != pid_before
    assert _api_event_total(svc) == 50
    assert _agent_events(replaced) == 80
    db = svc.sup.db_path
    assert oct(db.stat().st_mode & 0o777) == "0o600"

    # The agent resumes from what the restored database holds and resends the rest (its outbox).
    async def resume() -> int:
        agent = SimAgent(svc.sup.ws_url, svc.sup.agent_token, NODE)
        registered = await agent.connect(last_acked_seq=80)
        await agent.close()
        return int(registered.resume_from_seq)

    assert asyncio.run(resume()) == 50
    populate(svc.sup, NODE, 51, 80)
    assert _api_event_total(svc) == 80


@pytest.mark.timeout(180)
def test_restore_playbook_round_trip_via_ansible_runner(service: SupervisorService, tmp_path: Path) -> None:
    svc, backups = service, tmp_path / "backups"
    populate(svc.sup, NODE, 1, 40)
    common = {"hal_backup_database": str(svc.sup.db_path), "hal_backup_dir": str(backups),
              "hal_backup_hosts": "localhost"}
    runner, results = run_playbook(PLAYBOOKS / "backup.yml", {**common, "hal_backup_keep": 2}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    backup = task_result(results, "Back up ")
    assert backup["integrity"] == "ok" and _agent_events(backup["path"]) == 40
    populate(svc.sup, NODE, 41, 70)

    extravars = {"hal_restore_hosts": "localhost", "hal_restore_backup": "latest", "hal_backup_dir": str(backups),
                 "hal_restore_database": str(svc.sup.db_path), "hal_restore_stop_command": svc.stop_command,
                 "hal_restore_start_command": svc.start_command, "hal_restore_ready_url": svc.sup.api + "/readyz",
                 "hal_restore_ready_delay": 1}
    runner, results = run_playbook(PLAYBOOKS / "restore.yml", extravars, tmp_path, check=True)
    assert runner.status == "successful", runner.stdout.read()
    assert _api_event_total(svc) == 70  # check mode changed nothing

    pid_before = svc.pid()
    runner, results = run_playbook(PLAYBOOKS / "restore.yml", extravars, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    restored = task_result(results, "Restore ")
    events = restored["changes"]["events"]
    assert events["after"] == backup["tables"]["events"] and events["before"] >= 70
    assert events["change"] == events["after"] - events["before"]
    assert restored["quick_check"] == "ok" and restored["replaced"]
    report = task_result(results, "Report the row counts")
    assert f"events {events['before']} -> {events['after']}" in report["msg"]
    assert svc.ready() and svc.pid() != pid_before
    assert _api_event_total(svc) == 40

    # list and verify through the same playbook
    runner, results = run_playbook(PLAYBOOKS / "backup.yml", {**common, "hal_backup_action": "verify"}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    messages = [item["msg"] for item in task_result(results, "Report the verification")["results"]]
    assert messages and all(m.endswith(": ok") for m in messages), messages


@pytest.mark.timeout(180)
def test_bad_backups_are_refused_before_the_service_is_touched(service: SupervisorService, tmp_path: Path) -> None:
    svc, backups = service, tmp_path / "backups"
    populate(svc.sup, NODE, 1, 30)
    good = Path(_backup(svc, backups)["path"])
    pid = svc.pid()
    live_before = _agent_events(svc.sup.db_path)
    args = ("--config", str(svc.sup.config_path), "--stop-command", svc.stop_command,
            "--start-command", svc.start_command)

    tampered = tmp_path / "tampered.db"
    tampered.write_bytes(good.read_bytes())
    (tmp_path / "tampered.db.sha256").write_text(good.with_name(good.name + ".sha256").read_text())
    conn = sqlite3.connect(tampered)
    conn.execute("UPDATE events SET data = '{\"forged\": true}' WHERE seq = 7")
    conn.commit()
    conn.close()
    res = halctl("restore", str(tampered), *args)
    assert res.returncode == 1
    assert "checksum mismatch" in one_error_line(res)

    corrupt = tmp_path / "corrupt.db"
    data = bytearray(good.read_bytes())
    data[4096 * 2:4096 * 4] = b"\xa5" * 8192
    corrupt.write_bytes(bytes(data))
    (tmp_path / "corrupt.db.sha256").write_text(f"{sha256(corrupt)}  corrupt.db\n")  # signed, but damaged
    res = halctl("restore", str(corrupt), *args)
    assert res.returncode == 1
    assert "integrity_check" in one_error_line(res)

    unsigned = tmp_path / "unsigned.db"
    unsigned.write_bytes(good.read_bytes())
    res = halctl("restore", str(unsigned), *args)
    assert res.returncode == 1 and "no checksum file" in one_error_line(res)

    assert svc.pid() == pid and svc.ready()  # never stopped
    assert _agent_events(svc.sup.db_path) == live_before


@pytest.mark.timeout(180)
def test_restore_is_undone_when_the_supervisor_does_not_come_up(service: SupervisorService, tmp_path: Path) -> None:
    svc, backups = service, tmp_path / "backups"
    populate(svc.sup, NODE, 1, 25)
    taken = Path(_backup(svc, backups)["path"])
    # A sound database the supervisor refuses: written by a "newer" release (unknown migration).
    future = backups / "supervisor-29990101T000000Z.db"
    future.write_bytes(taken.read_bytes())
    conn = sqlite3.connect(future)
    conn.execute("INSERT INTO schema_migrations VALUES ('999', '999_future.sql', 'x', 0)")
    conn.commit()
    conn.close()
    (backups / (future.name + ".sha256")).write_text(f"{sha256(future)}  {future.name}\n")

    res = halctl("restore", "latest", "--config", str(svc.sup.config_path), "--dir", str(backups),
                 "--stop-command", svc.stop_command, "--start-command", svc.start_command, "--ready-timeout", "8")
    assert res.returncode == 1
    line = one_error_line(res)
    assert "did not become ready" in line and "previous database was put back" in line
    svc.sup.wait_ready(30)
    assert _agent_events(svc.sup.db_path) == 25
    assert count(svc.sup.db_path, "SELECT count(*) FROM schema_migrations WHERE version='999'") == 0
    with httpx.Client(base_url=svc.sup.api, timeout=5) as client:
        assert client.get("/readyz").status_code == 200
    rejected = [p for p in svc.sup.db_path.parent.iterdir() if ".rejected-" in p.name]
    assert rejected, list(svc.sup.db_path.parent.iterdir())


@pytest.mark.timeout(240)
def test_halctl_ops_mode_backup_and_restore_through_an_inventory(service: SupervisorService, tmp_path: Path) -> None:
    """`-i INVENTORY`: halctl runs backup.yml / restore.yml through halswarm.ops.runner."""
    svc, backups = service, tmp_path / "backups"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"hal_supervisors": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "hal_supervisor_database_path": str(svc.sup.db_path), "hal_supervisor_backup_timer_dir": str(backups),
        "hal_supervisor_api_url": svc.sup.api, "hal_restore_stop_command": svc.stop_command,
        "hal_restore_start_command": svc.start_command, "hal_restore_ready_delay": 1}}}}}}))
    env = {"HALCTL_STATE_DIR": str(tmp_path / "state")}
    populate(svc.sup, NODE, 1, 60)
    res = halctl("backup", "create", "-i", str(inventory), env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Back up " in res.stdout  # per-task progress lines
    assert len(list(backups.glob("supervisor-*.db"))) == 1
    for action in ("list", "verify"):
        res = halctl("backup", action, "-i", str(inventory), env=env, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
    populate(svc.sup, NODE, 61, 90)
    res = halctl("restore", "latest", "-i", str(inventory), "--check", env=env, timeout=300)
    assert res.returncode == 0 and _api_event_total(svc) == 90, res.stdout + res.stderr
    res = halctl("restore", "latest", "-i", str(inventory), env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert svc.ready() and _api_event_total(svc) == 60
    broken = backups / "supervisor-29990101T000000Z.db"
    broken.write_bytes(b"not a database")
    (backups / (broken.name + ".sha256")).write_text(f"{sha256(broken)}  {broken.name}\n")
    res = halctl("restore", "latest", "-i", str(inventory), env=env, timeout=300)
    assert res.returncode == 1 and svc.ready() and _api_event_total(svc) == 60  # refused before stopping
