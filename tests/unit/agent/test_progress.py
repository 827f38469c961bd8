"""PROGRESS.md status parsing and the watcher that turns status changes into `project.status` events."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.progress import ProgressWatcher, parse_status


@pytest.mark.parametrize(("text", "status"), [
    ("# Progress\n\nStatus: completed\n", "completed"),
    ("status:in progress", "in_progress"),
    ("- **Status:** Done.\n", "done"),
    ("* Status: completed (all tests green)\nStatus: in_progress\n", "completed"),  # the first one counts
    ("__STATUS__: Blocked-on-review", "blocked_on_review"),
    ("Status:\nStatus: in-progress", "in_progress"),  # an empty value is skipped
    ("# Progress\nThe status is fine.\n", None),
    ("Current status: completed", None),  # not a status line
    ("", None),
])
def test_parse_status(text: str, status: str | None) -> None:
    got = parse_status(text)
    assert (got[0] if got else None) == status


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def __call__(self, project: str, data: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("outbox closed")
        self.events.append((project, data))


def write(d: Path, text: str) -> None:
    p = d / ".context" / "PROGRESS.md"
    p.parent.mkdir(parents=True, exist_ok=True)
    old = p.stat().st_mtime_ns if p.exists() else 0
    p.write_text(text)
    os.utime(p, ns=(old + 10**9, old + 10**9))  # a distinct mtime even on coarse clocks


async def test_watcher_emits_changes_once_and_survives_a_restart(tmp_path: Path) -> None:
    core, api = tmp_path / "core", tmp_path / "api"
    core.mkdir()
    api.mkdir()
    projects = {"core": str(core), "api": str(api), "gone": str(tmp_path / "missing")}
    state = tmp_path / "data" / "progress_status.json"
    state.parent.mkdir()
    sink = Sink()
    w = ProgressWatcher(lambda: projects, sink, state)
    assert await w.scan() == []  # no files yet
    write(core, "# Progress\nStatus: in progress\n")
    write(api, "# Progress\nnothing yet\n")
    assert await w.scan() == [("core", "in_progress")]
    assert await w.scan() == []  # unchanged file: not re-read, not re-sent
    write(core, "# Progress\nStatus: in progress\n- more notes\n")
    assert await w.scan() == []  # edited, same status
    write(core, "# Progress\nStatus: completed\n")
    assert await w.scan() == [("core", "completed")]
    assert sink.events[-1] == ("core", {"status": "completed", "previous": "in_progress",
                                        "source": ".context/PROGRESS.md", "line": "Status: completed"})
    # an agent restart does not announce the same completion again
    again = ProgressWatcher(lambda: projects, sink, state)
    assert await again.scan() == []
    # a failed send is retried on the next pass
    sink.fail = True
    write(core, "Status: in_progress\n")
    assert await again.scan() == []
    sink.fail = False
    assert await again.scan() == [("core", "in_progress")]
    assert [e[1]["status"] for e in sink.events] == ["in_progress", "completed", "in_progress"]
