"""Project status from ``<project dir>/.context/PROGRESS.md``: the agent-side producer of the
``project.status`` events the supervisor's dependency manager consumes (a project whose status
becomes ``completed`` starts its ready dependents when ``dependencies_autostart`` is on).

Format: the first line of PROGRESS.md of the form ``Status: <word>`` (case-insensitive; a list marker
and markdown emphasis are allowed: ``- **Status:** completed``). The value is lower-cased, its first
words kept and joined with ``_`` (``In progress`` -> ``in_progress``, ``completed (tests green)`` ->
``completed``). ``completed`` / ``complete`` / ``done`` mark the project completed; any other value
(``in_progress``, ``blocked``...) reopens it. A file without a status line says nothing.

Every ``interval`` seconds each configured project's file is stat'ed; when its mtime or size changed it
is re-read, and a status different from the last one sent is emitted as ``project.status`` with data
``{"status", "previous", "source": ".context/PROGRESS.md", "line"}``. The last status sent per project
is kept in ``data_dir/progress_status.json``, so an agent restart does not re-announce (and so re-trigger)
a completion the supervisor already has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENT_TYPE = "project.status"
PROGRESS_FILE = Path(".context") / "PROGRESS.md"
STATE_FILE = "progress_status.json"
MAX_READ = 256 * 1024
DEFAULT_INTERVAL_S = 3.0

_LINE = re.compile(r"^[ \t]*(?:[-*+][ \t]+)?[*_]*status[*_]*[ \t]*:[ \t]*[*_]*[ \t]*(?P<value>[^\n]*)$",
                   re.IGNORECASE | re.MULTILINE)
_WORDS = re.compile(r"[a-z][a-z0-9]*(?:[ _-]+[a-z][a-z0-9]*)*")


def parse_status(text: str) -> tuple[str, str] | None:
    """(normalized status, the line) from PROGRESS.md text; None when no status line has a value."""
    for m in _LINE.finditer(text):
        words = _WORDS.match(m.group("value").strip().strip("*_ \t").lower())
        if words:
            return re.sub(r"[ _-]+", "_", words.group(0)), m.group(0).strip()
    return None


def _read(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(MAX_READ).decode("utf-8", "replace")


class ProgressWatcher:
    def __init__(self, projects: Callable[[], Mapping[str, str]],
                 emit: Callable[[str, dict[str, Any]], Awaitable[Any]], state_path: Path,
                 interval: float = DEFAULT_INTERVAL_S) -> None:
        self.projects = projects
        self.emit = emit
        self.state_path = state_path
        self.interval = interval
        self._seen: dict[str, tuple[int, int]] = {}  # project -> (mtime_ns, size) last read
        self.sent: dict[str, str] = self._load()  # project -> last status emitted

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(data, dict) else {}

    def _save(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.sent, sort_keys=True))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("cannot save %s: %s", self.state_path, exc)

    def _changed(self) -> list[tuple[str, str, str]]:
        """(project, status, line) for files whose status differs from the last one sent (blocking I/O)."""
        out = []
        for name, directory in sorted(self.projects().items()):
            path = Path(directory) / PROGRESS_FILE
            try:
                st = path.stat()
                key = (st.st_mtime_ns, st.st_size)
                if self._seen.get(name) == key:
                    continue
                text = _read(path)
            except OSError:
                self._seen.pop(name, None)
                continue
            self._seen[name] = key
            parsed = parse_status(text)
            if parsed is not None and parsed[0] != self.sent.get(name):
                out.append((name, *parsed))
        return out

    async def scan(self) -> list[tuple[str, str]]:
        """One pass; returns the (project, status) pairs emitted."""
        emitted = []
        for name, status, line in await asyncio.to_thread(self._changed):
            data = {"status": status, "previous": self.sent.get(name), "source": str(PROGRESS_FILE), "line": line}
            try:
                await self.emit(name, data)
            except Exception as exc:  # not sent: read the file again next pass
                log.warning("project.status for %s not sent: %s", name, exc)
                self._seen.pop(name, None)
                continue
            log.info("project %s: PROGRESS.md status %s -> %s", name, self.sent.get(name), status)
            self.sent[name] = status
            emitted.append((name, status))
        if emitted:
            await asyncio.to_thread(self._save)
        return emitted

    async def run(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception:
                log.exception("PROGRESS.md watcher failed")
            await asyncio.sleep(self.interval)
