"""Backup metrics and events through a real supervisor (issue 18 point 6): with `backup.dir` set it reads
the backup timer's backup-status.json and the restore test's restore-test.json (written by the real
scripts against its own live database), exports hal_backup_* / hal_restore_test_* on /metrics, and routes
`backup.anomaly` and `backup.restore_test_failed` once per backup name to a loopback webhook. Without
`backup.dir` there are no backup metrics; a malformed or symlinked file exports nothing and breaks nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receivers import Receiver, receivers
from tests.support.backup import COLLECTIONS, populate
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

UTILS = COLLECTIONS / "ansible_collections/halswarm/ops/plugins/module_utils"


def _metrics(sup: SupervisorProc) -> dict[str, float]:
    text = httpx.get(sup.api + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith(("hal_backup_", "hal_restore_test_")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _metrics_async(sup: SupervisorProc) -> dict[str, float]:
    return await asyncio.to_thread(_metrics, sup)


def _events(hook: Receiver, ev_type: str) -> list[dict[str, Any]]:
    return [b["event"] for b in hook.bodies() if b["event"]["type"] == ev_type]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["/usr/bin/python3", str(UTILS / script), *args], capture_output=True, text=True,
                         timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def _backup(sup: SupervisorProc, dest: Path) -> dict:
    res = _run("hal_sqlite_backup.py", "backup", "--db", str(sup.db_path), "--dest-dir", str(dest),
               "--prefix", "supervisor")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.timeout(240)
async def test_metrics_and_routed_events_from_the_backup_directory(make_supervisor: Any, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    with receivers("ok") as (hook,):
        sup = make_supervisor(backup={"dir": str(dest), "check_interval_sec": 1},
                              routes=[{"match": "backup.*", "target": f"webhook:{hook.url}/b"}],
                              routing={"backoff_base_ms": 50, "timeout_seconds": 2})
        sup.start()
        await asyncio.to_thread(populate, sup, "node-b", 1, 30)
        assert await _metrics_async(sup) == {}  # nothing written yet: no series
        made = [await asyncio.to_thread(_backup, sup, dest) for _ in range(4)]
        await until(lambda: _metrics(sup).get("hal_backup_size_bytes") == made[-1]["size"], "backup size", 20,
                    interval=0.2)
        m = await _metrics_async(sup)
        assert m["hal_backup_size_anomaly"] == 0
        status = json.loads((dest / "backup-status.json").read_text())
        assert m["hal_backup_last_success_timestamp_seconds"] == pytest.approx(status["timestamp"])

        res = await asyncio.to_thread(_run, "hal_sqlite_restore_test.py", "run", "--db", str(sup.db_path),
                                      "--backup-dir", str(dest), "--scratch-dir", str(tmp_path))
        assert res.returncode == 0, res.stderr
        await until(lambda: _metrics(sup).get("hal_restore_test_success") == 1, "restore test ok", 20, interval=0.2)

        # The database grows far beyond 2x: the next backup is flagged, the event routed once.
        await asyncio.to_thread(populate, sup, "node-b", 31, 1500, size=400)
        big = await asyncio.to_thread(_backup, sup, dest)
        assert big["size_anomaly"]["anomaly"] is True
        await until(lambda: _metrics(sup).get("hal_backup_size_anomaly") == 1, "anomaly metric", 20, interval=0.2)
        await until(lambda: _events(hook, "backup.anomaly"), "backup.anomaly routed", 20, interval=0.2)

        # The newest backup damaged: the restore test fails, one routed event naming it.
        await asyncio.to_thread(Path(big["path"]).write_bytes, b"\0" * 4096)
        res = await asyncio.to_thread(_run, "hal_sqlite_restore_test.py", "run", "--db", str(sup.db_path),
                                      "--backup-dir", str(dest), "--scratch-dir", str(tmp_path))
        assert res.returncode == 1
        await until(lambda: _metrics(sup).get("hal_restore_test_success") == 0, "restore test failed", 20,
                    interval=0.2)
        await until(lambda: _events(hook, "backup.restore_test_failed"), "restore_test_failed routed", 20,
                    interval=0.2)
        # The anomaly was read again at every 1 s check since: still one event of each kind.
        (failed,) = _events(hook, "backup.restore_test_failed")
        assert failed["data"]["backup"] == big["name"] and failed["data"]["reasons"]
        (anomaly,) = _events(hook, "backup.anomaly")
        assert anomaly["data"]["backup"] == big["name"] and "median" in anomaly["data"]["reason"]
        sup.stop()


@pytest.mark.timeout(120)
async def test_no_backup_dir_no_metrics_and_bad_files_export_nothing(make_supervisor: Any, tmp_path: Path) -> None:
    plain = make_supervisor("plain").start()
    text = (await asyncio.to_thread(httpx.get, plain.api + "/metrics", timeout=10)).text
    assert "hal_backup_" not in text and "hal_restore_test_" not in text
    plain.stop()

    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    (dest / "backup-status.json").write_text('{"version": 1, "backup": "../x.db", "timestamp": 1, "size": 5}')
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"version": 1, "ok": True, "reasons": [], "timestamp": 5, "backup": "a.db"}))
    os.symlink(secret, dest / "restore-test.json")
    sup = make_supervisor("bad", backup={"dir": str(dest), "check_interval_sec": 1}).start()
    await until(lambda: "restore-test.json: is a symbolic link" in sup.log_tail(), "symlink refused", 20,
                interval=0.2)
    assert "backup-status.json: backup must be a file name" in sup.log_tail()
    assert await _metrics_async(sup) == {}
    assert (await asyncio.to_thread(httpx.get, sup.api + "/readyz", timeout=10)).status_code == 200
