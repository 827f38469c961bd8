"""halswarm.ops.datasafety (halctl's local mode): where the database and /readyz are, backup name
resolution, service controls around a restore."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from halswarm.ops import datasafety


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def test_target_from_the_supervisor_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "supervisor.config.json", {
        "server": {"host": "0.0.0.0", "http_port": 9421, "auth_token_file": "/nonexistent/token"},
        "database": {"path": str(tmp_path / "data" / "supervisor.db")}})
    target = datasafety.supervisor_target(cfg)
    assert target.db_path == tmp_path / "data" / "supervisor.db"
    assert target.ready_url == "http://127.0.0.1:9421/readyz"  # the token file is not needed for this
    assert datasafety.default_backup_dir() == Path("/var/backups/hal-o-swarm")


def test_backup_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALCTL_BACKUP_DIR", str(tmp_path / "bk"))
    assert datasafety.default_backup_dir() == tmp_path / "bk"


def test_target_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "s.json", {"server": {"host": "::1"}, "security": {"tls": {"enabled": True}}})
    target = datasafety.supervisor_target(cfg)
    assert target.db_path == Path("/var/lib/hal-o-swarm/supervisor.db")  # SPEC default
    assert target.ready_url == "https://[::1]:8421/readyz"
    only_db = datasafety.supervisor_target(None, tmp_path / "x.db")
    assert only_db.db_path == tmp_path / "x.db" and only_db.ready_url is None and only_db.config_path is None


def test_unreadable_config_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(datasafety.DataSafetyFailure, match="cannot read the supervisor config"):
        datasafety.supervisor_target(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(datasafety.DataSafetyFailure, match="invalid JSON"):
        datasafety.supervisor_target(bad)


def test_resolve_backup_by_path_name_or_latest(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp in ("20260101T000000Z", "20260102T000000Z"):
        (backups / f"supervisor-{stamp}.db").write_bytes(b"x")
    assert datasafety.resolve_backup("latest", backups).name == "supervisor-20260102T000000Z.db"
    assert datasafety.resolve_backup("supervisor-20260101T000000Z.db", backups).parent == backups
    assert datasafety.resolve_backup(str(tmp_path / "elsewhere.db"), backups) == tmp_path / "elsewhere.db"
    with pytest.raises(datasafety.DataSafetyFailure, match="no backups"):
        datasafety.resolve_backup("latest", tmp_path / "empty")


def test_command_service_reports_failures(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    ok = datasafety.CommandService(f"{sys.executable} -c pass", f"touch {marker}")
    ok.stop()
    ok.start()
    assert marker.exists()
    failing = datasafety.CommandService(f"{sys.executable} -c 'import sys; sys.exit(\"boom\")'", "true")
    with pytest.raises(datasafety.DataSafetyFailure, match="stop command exited 1: boom"):
        failing.stop()
    missing = datasafety.SystemdService("x.service", systemctl=str(tmp_path / "no-systemctl"))
    with pytest.raises(datasafety.DataSafetyFailure, match=r"systemctl stop x\.service"):
        missing.stop()


def test_restore_refuses_a_bad_backup_before_stopping_anything(tmp_path: Path) -> None:
    calls: list[str] = []

    class Recorder:
        description = "recorder"

        def stop(self) -> None:
            calls.append("stop")

        def start(self) -> None:
            calls.append("start")

    bogus = tmp_path / "b.db"
    bogus.write_text("nope")
    with pytest.raises(datasafety.DataSafetyFailure, match="not an SQLite database"):
        datasafety.restore(bogus, tmp_path / "live.db", Recorder(), ready_url=None)
    assert calls == []


def test_a_postgresql_store_is_refused_in_local_mode(tmp_path: Path) -> None:
    """database.path would name a SQLite file a PostgreSQL supervisor no longer writes: local mode refuses
    instead of backing up (or restoring over) that file, and points at the collection's pg_dump path."""
    cfg = write_config(tmp_path / "s.json", {"storage": {"url": "postgresql://hal@db/hal", "password_file": "/x"},
                                             "database": {"path": str(tmp_path / "stale.db")}})
    with pytest.raises(datasafety.DataSafetyFailure, match=r"the store is PostgreSQL .*halctl backup create -i"):
        datasafety.supervisor_target(cfg)
    assert datasafety.supervisor_target(cfg, tmp_path / "x.db").db_path == tmp_path / "x.db"  # explicit wins
