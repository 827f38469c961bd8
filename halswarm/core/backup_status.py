"""Strict parsing of the two files the backup timers write in the backup directory (`backup-status.json`
by the backup, `restore-test.json` by the monthly restore test), and which routed events they call for.

Pure: the supervisor's backups feature reads the files (bounded) and hands the text here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

STATUS_FILE = "backup-status.json"
RESULT_FILE = "restore-test.json"
MAX_FILE_BYTES = 256 * 1024  # both files are a few hundred bytes; counts of ~30 tables at most
EVENT_ANOMALY = "backup.anomaly"
EVENT_RESTORE_FAILED = "backup.restore_test_failed"
_MAX_NAME = 255
_MAX_REASON = 500
_MAX_REASONS = 50


class BadStatusFile(ValueError):
    """A status file that is not what the timers write (one line)."""


@dataclass(frozen=True)
class BackupStatus:
    backup: str
    timestamp: float
    size: int
    anomaly: bool
    reason: str | None


@dataclass(frozen=True)
class RestoreTest:
    backup: str | None
    timestamp: float
    ok: bool
    reasons: tuple[str, ...]
    anomaly: bool


def _doc(text: str | bytes, what: str) -> dict[str, Any]:
    if len(text) > MAX_FILE_BYTES:
        raise BadStatusFile(f"{what}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadStatusFile(f"{what}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadStatusFile(f"{what}: not a JSON object")
    if doc.get("version") != 1:
        raise BadStatusFile(f"{what}: unknown version {doc.get('version')!r}")
    return doc


def _time(doc: dict[str, Any], what: str) -> float:
    value = doc.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadStatusFile(f"{what}: timestamp must be a number >= 0 (got {value!r})")
    return float(value)


def _name(value: Any, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or "/" in value or "\n" in value:
        raise BadStatusFile(f"{what}: backup must be a file name (got {str(value)[:60]!r})")
    return value


def _anomaly(doc: dict[str, Any], what: str) -> tuple[bool, str | None]:
    block = doc.get("size_anomaly")
    if block is None:
        return False, None
    if not isinstance(block, dict) or not isinstance(block.get("anomaly"), bool):
        raise BadStatusFile(f"{what}: size_anomaly must be an object with a boolean anomaly")
    reason = block.get("reason")
    return block["anomaly"], reason[:_MAX_REASON] if isinstance(reason, str) else None


def parse_backup_status(text: str | bytes) -> BackupStatus:
    what = STATUS_FILE
    doc = _doc(text, what)
    size = doc.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadStatusFile(f"{what}: size must be an integer >= 0 (got {size!r})")
    anomaly, reason = _anomaly(doc, what)
    name = _name(doc.get("backup"), what)
    assert name is not None
    return BackupStatus(name, _time(doc, what), size, anomaly, reason)


def parse_restore_test(text: str | bytes) -> RestoreTest:
    what = RESULT_FILE
    doc = _doc(text, what)
    ok = doc.get("ok")
    if not isinstance(ok, bool):
        raise BadStatusFile(f"{what}: ok must be true or false")
    reasons = doc.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise BadStatusFile(f"{what}: reasons must be a list of strings")
    anomaly, _ = _anomaly(doc, what)
    return RestoreTest(_name(doc.get("backup"), what, optional=True), _time(doc, what), ok,
                       tuple(r[:_MAX_REASON] for r in reasons[:_MAX_REASONS]), anomaly)


def due_events(status: BackupStatus | None, result: RestoreTest | None,
               sent: set[tuple[str, str]]) -> list[tuple[str, str, dict[str, Any]]]:
    """The routed events the two files call for that were not sent yet, as (type, key, data); one per
    backup name and type. The caller adds each key pair to `sent` once emitted."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if status is not None and status.anomaly and (EVENT_ANOMALY, status.backup) not in sent:
        out.append((EVENT_ANOMALY, status.backup, {"backup": status.backup, "size_bytes": status.size,
                                                   "reason": status.reason, "source": STATUS_FILE}))
    if result is not None and not result.ok:
        key = result.backup or f"@{result.timestamp:.0f}"  # no backup at all: once per test run
        if (EVENT_RESTORE_FAILED, key) not in sent:
            out.append((EVENT_RESTORE_FAILED, key, {"backup": result.backup, "reasons": list(result.reasons),
                                                    "tested_at": result.timestamp}))
    return out
