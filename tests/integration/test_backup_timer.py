"""The supervisor role's scheduled backups: hal-supervisor-backup.{service,timer} rendered from the role's
templates with its defaults pass `systemd-analyze verify`, and the service's ExecStart, run as written,
backs up a live supervisor database (integrity check, checksum, retention). Under a real systemd,
Molecule scenario `default` (inventory.example enables the timer) checks in verify.yml that the timer is
enabled and active and that `systemctl start hal-supervisor-backup.service` writes a 0600 backup with a
sha256 sidecar that hal_sqlite_restore accepts (tests/fleet/test_ops_fleet.py::test_verify_real_systemd);
the timer's calendar firing itself is not waited for."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.backup import COLLECTIONS, count, populate, run_playbook
from tests.support.supervisor_proc import SupervisorProc

ROLE = COLLECTIONS / "ansible_collections/halswarm/ops/roles/supervisor"
HELPER = ROLE / "../../plugins/module_utils/hal_sqlite_backup.py"  # what backup_timer.yml copies (role_path-relative)


def _render(tmp: Path, variables: dict) -> Path:
    out = tmp / "units"
    out.mkdir()
    play = tmp / "render.yml"
    play.write_text(yaml.safe_dump([{
        "name": "render the backup units", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults/main.yml"), str(ROLE / "vars/main.yml")],
        "tasks": [{"name": "render", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / "{{ item }}.j2"), "dest": str(out / "{{ item }}"), "mode": "0644"},
            "loop": ["hal-supervisor-backup.service", "hal-supervisor-backup.timer",
                     "hal-supervisor-restore-test.service", "hal-supervisor-restore-test.timer"]}],
    }], sort_keys=False))
    runner, _results = run_playbook(play, variables, tmp)
    assert runner.status == "successful", runner.stdout.read()
    return out


def _exec_start(unit: Path) -> list[str]:
    line = next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.split("=", 1)[1])


@pytest.mark.timeout(180)
def test_units_from_the_role_defaults_pass_systemd_analyze(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = _render(tmp_path, {})
    service = (units / "hal-supervisor-backup.service").read_text()
    assert "User=hal-supervisor" in service and "ProtectSystem=strict" in service
    assert "ReadWritePaths=/var/backups/hal-o-swarm /var/lib/hal-o-swarm/supervisor" in service
    assert _exec_start(units / "hal-supervisor-backup.service") == [
        "/usr/bin/python3", "/opt/hal-o-swarm/libexec/hal_sqlite_backup.py", "backup",
        "--db", "/var/lib/hal-o-swarm/supervisor/supervisor.db", "--dest-dir", "/var/backups/hal-o-swarm",
        "--prefix", "supervisor", "--keep", "14", "--max-age-days", "0.0", "--anomaly-low", "0.5", "--anomaly-high",
        "2.0", "--anomaly-window", "5", "--anomaly-min-history", "3"]
    timer = (units / "hal-supervisor-backup.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    res = subprocess.run(["systemd-analyze", "verify", "hal-supervisor-backup.service", "hal-supervisor-backup.timer"],
                         cwd=units, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and (res.stdout + res.stderr).strip() == "", res.stdout + res.stderr
    assert HELPER.resolve().is_file()


@pytest.mark.timeout(180)
def test_restore_test_units_from_the_role_defaults_pass_systemd_analyze(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = _render(tmp_path, {})
    service = (units / "hal-supervisor-restore-test.service").read_text()
    assert "User=hal-supervisor" in service and "ProtectSystem=strict" in service and "PrivateTmp=yes" in service
    assert "ReadWritePaths=/var/backups/hal-o-swarm /var/lib/hal-o-swarm/supervisor\n" in service
    assert _exec_start(units / "hal-supervisor-restore-test.service") == [
        "/usr/bin/python3", "/opt/hal-o-swarm/libexec/hal_sqlite_restore_test.py", "run",
        "--db", "/var/lib/hal-o-swarm/supervisor/supervisor.db", "--backup-dir", "/var/backups/hal-o-swarm",
        "--prefix", "supervisor", "--scratch-dir", "/var/tmp", "--anomaly-low", "0.5", "--anomaly-high", "2.0",
        "--anomaly-window", "5", "--anomaly-min-history", "3"]
    timer = (units / "hal-supervisor-restore-test.timer").read_text()
    assert "OnCalendar=monthly" in timer and "RandomizedDelaySec=1h" in timer and "Persistent=true" in timer
    res = subprocess.run(["systemd-analyze", "verify", "hal-supervisor-restore-test.service",
                          "hal-supervisor-restore-test.timer"], cwd=units, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and (res.stdout + res.stderr).strip() == "", res.stdout + res.stderr
    (tmp_path / "s").mkdir()
    scratch = _render(tmp_path / "s", {"hal_supervisor_restore_test_scratch_dir": "/srv/scratch"})
    assert "ReadWritePaths=/var/backups/hal-o-swarm /var/lib/hal-o-swarm/supervisor /srv/scratch\n" in (
        scratch / "hal-supervisor-restore-test.service").read_text()


@pytest.mark.timeout(180)
def test_the_timer_service_command_backs_up_a_live_supervisor(supervisor: SupervisorProc, tmp_path: Path) -> None:
    populate(supervisor, "node-t", 1, 200)
    backups = tmp_path / "backups"
    units = _render(tmp_path, {
        "hal_supervisor_database_path": str(supervisor.db_path), "hal_supervisor_backup_timer_dir": str(backups),
        "hal_supervisor_backup_timer_keep": 2, "hal_supervisor_backup_timer_helper": str(HELPER.resolve()),
        "hal_supervisor_backup_timer_python": "/usr/bin/python3"})
    argv = _exec_start(units / "hal-supervisor-backup.service")
    made = []
    for _ in range(3):
        backups.mkdir(exist_ok=True)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        made.append(json.loads(res.stdout))  # same second: the name gets a -1, -2 suffix
    assert all(m["integrity"] == "ok" for m in made)
    assert count(made[-1]["path"], "SELECT count(*) FROM events WHERE node_id='node-t' AND seq IS NOT NULL") == 200
    names = sorted(p.name for p in backups.iterdir())
    assert len([n for n in names if n.endswith(".db")]) == 2  # retention: keep 2
    assert made[-1]["removed"] == [made[0]["path"]]
    res = subprocess.run(["sha256sum", "-c", Path(made[-1]["checksum_file"]).name], cwd=backups,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and ": OK" in res.stdout
