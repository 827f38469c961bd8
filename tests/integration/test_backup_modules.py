"""The data-safety modules through ansible-runner (plays against localhost): hal_sqlite_backup on a live
supervisor, hal_sqlite_recover on a damaged file, hal_config with the package's real validator (the
venv's hal-supervisor / hal-agent / halctl), backup.yml's list action."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.backup import PLAYBOOKS, REPO, count, populate, run_playbook, sha256, task_result
from tests.support.supervisor_proc import SupervisorProc

VENV = Path(sys.executable).parent.parent
TOKEN = "0123456789abcdef0123456789abcdef-module-test"


def _play(tmp: Path, tasks: list[dict]) -> Path:
    path = tmp / f"play-{len(list(tmp.glob('play-*.yml')))}.yml"
    path.write_text(yaml.safe_dump([{"name": "data-safety modules", "hosts": "localhost", "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    return path


@pytest.mark.timeout(240)
def test_backup_module_and_playbook_on_a_live_supervisor(supervisor: SupervisorProc, tmp_path: Path) -> None:
    populate(supervisor, "node-m", 1, 120)
    backups = tmp_path / "backups"
    play = _play(tmp_path, [
        {"name": "first backup", "halswarm.ops.hal_sqlite_backup": {
            "src": str(supervisor.db_path), "dest_dir": str(backups), "keep": 2}, "register": "b"},
        {"name": "other prefix", "halswarm.ops.hal_sqlite_backup": {
            "src": str(supervisor.db_path), "dest_dir": str(backups), "keep": 2, "prefix": "other"}},
        {"name": "check mode", "halswarm.ops.hal_sqlite_backup": {
            "src": str(supervisor.db_path), "dest_dir": str(backups), "keep": 1}, "check_mode": True,
         "diff": True},
    ])
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    first = task_result(results, "first backup")
    assert first["changed"] and first["integrity"] == "ok" and Path(first["path"]).exists()
    assert count(first["path"], "SELECT count(*) FROM events WHERE node_id='node-m' AND seq IS NOT NULL") == 120
    check = task_result(results, "check mode")
    assert check["changed"] and check["removed"] == [first["path"]]  # keep=1 would drop the older one
    assert len(list(backups.glob("*.db"))) == 2  # check mode wrote nothing

    runner, results = run_playbook(PLAYBOOKS / "backup.yml", {
        "hal_backup_hosts": "localhost", "hal_backup_action": "list", "hal_backup_dir": str(backups)}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    listed = task_result(results, "Show the backups")["msg"]
    assert sorted(listed) == sorted(p.name for p in backups.glob("*.db"))

    fetched = tmp_path / "fetched"
    runner, results = run_playbook(PLAYBOOKS / "backup.yml", {
        "hal_backup_hosts": "localhost", "hal_backup_database": str(supervisor.db_path),
        "hal_backup_dir": str(backups), "hal_backup_fetch_dir": str(fetched)}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    made = task_result(results, "Back up ")
    copy = fetched / "localhost" / Path(made["path"]).name
    assert sha256(copy) == made["sha256"] and (fetched / "localhost" / (copy.name + ".sha256")).exists()


@pytest.mark.timeout(240)
def test_recover_module_via_ansible(tmp_path: Path) -> None:
    sup = SupervisorProc(tmp_path / "sup")
    sup.start()
    try:
        populate(sup, "node-m", 1, 1500)
    finally:
        sup.stop()
    damaged = tmp_path / "damaged.db"
    shutil.copyfile(sup.db_path, damaged)
    with open(damaged, "r+b") as handle:  # destroy the first page: sqlite_master and the header
        handle.write(b"\xab" * 4096)
    before = sha256(damaged)
    play = _play(tmp_path, [
        {"name": "preview", "halswarm.ops.hal_sqlite_recover": {
            "src": str(damaged), "dest": str(tmp_path / "rec.db"),
            "migrations_dir": str(REPO / "halswarm/store/migrations")}, "check_mode": True},
        {"name": "recover", "halswarm.ops.hal_sqlite_recover": {
            "src": str(damaged), "dest": str(tmp_path / "rec.db"),
            "migrations_dir": str(REPO / "halswarm/store/migrations")}},
        {"name": "restore it", "halswarm.ops.hal_sqlite_restore": {
            "src": str(tmp_path / "rec.db"), "dest": str(tmp_path / "sup2" / "supervisor.db")}},
    ])
    (tmp_path / "sup2").mkdir()
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    preview, done = task_result(results, "preview"), task_result(results, "recover")
    assert preview["tables"]["events"]["saved"] == done["tables"]["events"]["saved"]
    assert done["schema_source"] == "migrations"
    assert done["tables"]["events"]["saved"] == count(sup.db_path)
    assert sha256(damaged) == before
    restored = task_result(results, "restore it")
    assert restored["quick_check"] == "ok" and restored["replaced"] is None
    # The supervisor accepts the result (migrations recorded as its migrator would have).
    sup2 = SupervisorProc(tmp_path / "sup2")
    sup2.start()
    try:
        with sup2.client() as client:
            body = client.get("/api/v1/events", params={"node_id": "node-m", "type": "message.updated", "limit": 1})
            assert body.json()["meta"]["total"] == 1500
    finally:
        sup2.stop()


def _config_task(name: str, path: Path, kind: str, config: dict | None, *, check: bool = False,
                 **extra: object) -> dict:
    args: dict[str, object] = {"path": str(path), "kind": kind, "venv": str(VENV), **extra}
    if config is not None:
        args["config"] = config
    task = {"name": name, "halswarm.ops.hal_config": args, "ignore_errors": name.startswith("bad")}
    if check:
        task.update(check_mode=True, diff=True)
    return task


@pytest.mark.timeout(240)
def test_hal_config_with_the_packages_validator(tmp_path: Path) -> None:
    sup_path = tmp_path / "etc" / "supervisor.config.json"
    agent_path = tmp_path / "etc" / "agent.config.json"
    manifest_path = tmp_path / "etc" / "manifest.json"
    sup_path.parent.mkdir()
    good = {"server": {"host": "127.0.0.1", "port": 8420, "http_port": 8421},
            "database": {"path": str(tmp_path / "supervisor.db")}}
    secrets = {"server.auth_token": TOKEN}
    play = _play(tmp_path, [
        _config_task("preview supervisor", sup_path, "supervisor", good, check=True, secrets=secrets),
        _config_task("write supervisor", sup_path, "supervisor", good, secrets=secrets),
        _config_task("rewrite supervisor", sup_path, "supervisor", good, secrets=secrets),
        _config_task("bad supervisor port", sup_path, "supervisor",
                     {**good, "server": {**good["server"], "port": 70000}}, secrets=secrets),
        _config_task("bad supervisor token", sup_path, "supervisor", good, secrets={"server.auth_token": "short"}),
        _config_task("write agent", agent_path, "agent", {"supervisor_url": "ws://127.0.0.1:8420/ws/agent",
                                                         "node_id": "n1"}, secrets={"auth_token": TOKEN}),
        _config_task("write manifest", manifest_path, "manifest", {"version": "1.0", "requirements": {}}),
        _config_task("validate supervisor", sup_path, "supervisor", None),
    ])
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "successful", runner.stdout.read()
    preview = task_result(results, "preview supervisor")
    assert preview["changed"] and preview["valid"]
    assert TOKEN not in json.dumps(preview)
    written = task_result(results, "write supervisor")
    assert written["changed"] and written["valid"]
    assert json.loads(sup_path.read_text())["server"]["auth_token"] == TOKEN
    assert oct(sup_path.stat().st_mode & 0o777) == "0o600"
    assert not task_result(results, "rewrite supervisor")["changed"]
    bad_port = task_result(results, "bad supervisor port")
    assert bad_port["_failed"] and "server.port" in bad_port["msg"]
    bad_token = task_result(results, "bad supervisor token")
    assert bad_token["_failed"] and "auth_token" in bad_token["msg"] and "short" not in bad_token["msg"]
    assert json.loads(sup_path.read_text())["server"]["port"] == 8420  # the invalid candidates were never written
    assert task_result(results, "write agent")["changed"]
    assert json.loads(agent_path.read_text())["auth_token"] == TOKEN
    assert task_result(results, "write manifest")["valid"]
    assert task_result(results, "validate supervisor")["valid"]
    # The validator is the same one halctl uses.
    from halswarm.config.report import run_validate

    assert run_validate(sup_path, "supervisor", env={}) == 0
    leftovers = [p.name for p in sup_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_recover_module_refuses_without_schema(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.db"
    conn = sqlite3.connect(damaged)
    conn.execute("CREATE TABLE t (a TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("z" * 300,)] * 200)
    conn.commit()
    conn.close()
    with open(damaged, "r+b") as handle:
        handle.write(b"\0" * 4096)
    play = _play(tmp_path, [{"name": "recover", "halswarm.ops.hal_sqlite_recover": {
        "src": str(damaged), "dest": str(tmp_path / "rec.db"), "release_root": str(tmp_path / "none")}}])
    runner, results = run_playbook(play, {}, tmp_path)
    assert runner.status == "failed"
    res = task_result(results, "recover")
    assert "no schema" in res["msg"] and not (tmp_path / "rec.db").exists()
