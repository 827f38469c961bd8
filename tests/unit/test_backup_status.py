"""Strict parsing of backup-status.json / restore-test.json, the events they call for (once per backup name),
the backups feature's settings, and its bounded, no-symlink file reads."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from halswarm.config.errors import ConfigError
from halswarm.core.backup_status import (
    EVENT_ANOMALY,
    EVENT_RESTORE_FAILED,
    MAX_FILE_BYTES,
    BadStatusFile,
    due_events,
    parse_backup_status,
    parse_restore_test,
)
from halswarm.supervisor.features.backups.service import BackupCollector, BackupWatch, read_snapshot
from halswarm.supervisor.features.backups.settings import BackupSettings

STATUS = {"version": 1, "time": "2026-12-07T04:00:00Z", "timestamp": 1_796_000_000.5, "backup": "supervisor-1.db",
          "size": 4096, "ok": True, "size_anomaly": {"anomaly": False, "reason": None}}
RESULT = {"version": 1, "timestamp": 1_796_000_100.0, "backup": "supervisor-1.db", "ok": True, "status": "ok",
          "reasons": [], "counts": {}, "size_anomaly": None}


def test_parse_valid_documents() -> None:
    s = parse_backup_status(json.dumps(STATUS))
    assert (s.backup, s.size, s.anomaly, s.timestamp) == ("supervisor-1.db", 4096, False, 1_796_000_000.5)
    r = parse_restore_test(json.dumps(RESULT).encode())
    assert r.ok and r.reasons == () and r.backup == "supervisor-1.db"
    assert parse_restore_test(json.dumps(RESULT | {"backup": None, "ok": False, "reasons": ["x"]})).backup is None


@pytest.mark.parametrize(("doc", "message"), [
    ("[]", "not a JSON object"),
    ("{", "not JSON"),
    (json.dumps(STATUS | {"version": 2}), "unknown version"),
    (json.dumps(STATUS | {"size": -1}), "size must be"),
    (json.dumps(STATUS | {"size": True}), "size must be"),
    (json.dumps(STATUS | {"timestamp": "now"}), "timestamp must be"),
    (json.dumps(STATUS | {"backup": "../etc/passwd"}), "backup must be a file name"),
    (json.dumps(STATUS | {"backup": ""}), "backup must be a file name"),
    (json.dumps(STATUS | {"size_anomaly": {"anomaly": "yes"}}), "size_anomaly must be"),
    ('{"version": 1, "pad": "' + "x" * MAX_FILE_BYTES + '"}', "larger than"),
])
def test_parse_backup_status_rejects(doc: str, message: str) -> None:
    with pytest.raises(BadStatusFile, match=message):
        parse_backup_status(doc)


def test_parse_restore_test_rejects() -> None:
    with pytest.raises(BadStatusFile, match="ok must be"):
        parse_restore_test(json.dumps(RESULT | {"ok": "true"}))
    with pytest.raises(BadStatusFile, match="reasons must be"):
        parse_restore_test(json.dumps(RESULT | {"reasons": [1]}))
    long = parse_restore_test(json.dumps(RESULT | {"ok": False, "reasons": ["r" * 900] * 80}))
    assert len(long.reasons) == 50 and len(long.reasons[0]) == 500


def test_due_events_once_per_backup_name() -> None:
    status = parse_backup_status(json.dumps(STATUS | {"size_anomaly": {"anomaly": True, "reason": "3.00x"}}))
    failed = parse_restore_test(json.dumps(RESULT | {"ok": False, "reasons": ["checksum mismatch"]}))
    sent: set[tuple[str, str]] = set()
    due = due_events(status, failed, sent)
    name = "supervisor-1.db"
    assert [(t, k) for t, k, _ in due] == [(EVENT_ANOMALY, name), (EVENT_RESTORE_FAILED, name)]
    assert due[1][2]["reasons"] == ["checksum mismatch"]
    sent.update((t, k) for t, k, _ in due)
    assert due_events(status, failed, sent) == []
    newer = parse_backup_status(json.dumps(STATUS | {"backup": "supervisor-2.db",
                                                      "size_anomaly": {"anomaly": True, "reason": "x"}}))
    assert [k for _, k, _ in due_events(newer, failed, sent)] == ["supervisor-2.db"]
    ok = parse_restore_test(json.dumps(RESULT))
    assert due_events(parse_backup_status(json.dumps(STATUS)), ok, set()) == []


def test_settings_validate() -> None:
    with pytest.raises(ConfigError, match=r"backup\.dir"):
        BackupSettings("relative/dir")
    with pytest.raises(ConfigError, match=r"backup\.check_interval_sec"):
        BackupSettings("/var/backups", 0)
    assert BackupSettings().dir is None


def test_read_snapshot_bounded_and_no_symlinks(tmp_path: Path) -> None:
    (tmp_path / "backup-status.json").write_text(json.dumps(STATUS))
    os.symlink(tmp_path / "backup-status.json", tmp_path / "restore-test.json")
    snap = read_snapshot(str(tmp_path))
    assert snap.status is not None and snap.result is None
    assert snap.problems == [f"{tmp_path}/restore-test.json: is a symbolic link"]
    (tmp_path / "restore-test.json").unlink()
    (tmp_path / "restore-test.json").mkdir()
    assert read_snapshot(str(tmp_path)).problems == [f"{tmp_path}/restore-test.json: not a regular file"]
    assert read_snapshot(str(tmp_path / "missing")).problems == []


def test_watch_emits_once_and_collector_exports(tmp_path: Path) -> None:
    (tmp_path / "backup-status.json").write_text(json.dumps(STATUS | {"size_anomaly": {"anomaly": True,
                                                                                        "reason": "r"}}))
    (tmp_path / "restore-test.json").write_text(json.dumps(RESULT | {"ok": False, "reasons": ["bad"]}))
    emitted: list[tuple[str, dict[str, Any]]] = []
    watch = BackupWatch(BackupSettings(str(tmp_path), 1), lambda t, d: emitted.append((t, d)))

    async def twice() -> None:
        await watch.refresh()
        await watch.refresh()

    asyncio.run(twice())
    assert [t for t, _ in emitted] == [EVENT_ANOMALY, EVENT_RESTORE_FAILED]
    samples = {m.name: m.samples[0].value for m in BackupCollector(watch).collect()}
    assert samples == {"hal_backup_last_success_timestamp_seconds": 1_796_000_000.5, "hal_backup_size_bytes": 4096,
                       "hal_backup_size_anomaly": 1, "hal_restore_test_last_timestamp_seconds": 1_796_000_100.0,
                       "hal_restore_test_success": 0}
