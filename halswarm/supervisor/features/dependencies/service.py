"""Project dependencies (`dependencies`: project -> [projects it depends on], or {depends_on: [...]}).

The graph is validated at config load (cycles are rejected with their path, config/semantic.py).

A project is *completed* when its latest completion signal says so. Signals:
- one of its sessions reaches status `completed` (agents report it in `session.state`), or
- a `project.status` event with `data.status` = `completed` (for agents or hooks that track the
  project's `.context/PROGRESS.md`: `{"status": "completed"|"in_progress"|..., "source": "..."}`);
  the newest signal wins, so a later `project.status` `in_progress` reopens a project.
A project is *ready* when every project it depends on is completed, *blocked* otherwise.

With `dependencies_autostart: true`, when an upstream project completes (a completion signal not seen
before), each dependent that is now ready and has no live session is started with `create_session`
(actor `dependencies`, audited), and a routed `dependency.started` / `dependency.start_failed` event
is stored. Completions the supervisor already knew when autostart was first enabled start nothing;
a completion that arrives while the supervisor is down is acted on after the restart.

Several supervisors on one PostgreSQL (issue 21): autostart runs on the leader only and sees the whole
fleet. Completed sessions were always read from the store. `project.status` events ingested by other
supervisors are read from the store by id at each check, up to the safe horizon (core/event_horizon.py: ids
below it are committed or never will be, so a cursor that follows it skips none); the cursor starts at
the horizon probed before the start loads the stored events, so it misses nothing and re-reads at most
events the load already had (noting one twice changes nothing). A start happens once per completion
marker because the marks acted on are stored (`dependency_marks`): a new leader loads them and every
stored `project.status`, so a move neither repeats nor loses a start, and the cursor needs no storing.
Live sessions counted against a start are memory's for the nodes connected here and the store's for
nodes other supervisors hold. On SQLite nothing of this runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from halswarm.core.event_horizon import Horizon
from halswarm.core.timeutil import iso, parse_ts
from halswarm.protocol import CommandTarget
from halswarm.store.repos import dependencies as repo
from halswarm.store.repos.events import probe_horizon
from halswarm.store.repos.sessions import latest_completed
from halswarm.supervisor.features.dependencies.settings import DependencySettings
from halswarm.supervisor.runtime.dispatcher import CommandError
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)

STATUS_EVENT = "project.status"
DONE_WORDS = frozenset({"completed", "complete", "done"})
ACTIVE = frozenset({"running", "idle", "waiting_input", "unreachable"})
CHECK_INTERVAL_S = 2.0
RETRY_FAILED_S = 60.0
PROMPT = ("The upstream project(s) {upstream} of this project are complete. Read .context/ (CURRENT_TASK.md, "
          "PROGRESS.md) and continue the work of this project.")


# --------------------------------------------------------------------------- pure parts


class Graph:
    def __init__(self, edges: Mapping[str, Iterable[str]]) -> None:
        self.edges = {p: sorted(set(d)) for p, d in edges.items()}
        self.projects = sorted(set(self.edges) | {d for deps in self.edges.values() for d in deps})
        self._dependents: dict[str, list[str]] = {p: [] for p in self.projects}
        for p, deps in self.edges.items():
            for d in deps:
                self._dependents[d].append(p)
        for v in self._dependents.values():
            v.sort()

    def deps(self, project: str) -> list[str]:
        return self.edges.get(project, [])

    def dependents(self, project: str) -> list[str]:
        return self._dependents.get(project, [])


@dataclass(frozen=True)
class Signal:
    """The newest completion-relevant fact about a project."""

    completed: bool
    marker: str  # identifies this completion ("session:<id>" / "event:<event_id>")
    at: float


def latest_signal(project: str, sessions: Iterable[Any], status_event: Signal | None) -> Signal | None:
    best: Signal | None = None
    for s in sessions:
        if s.project == project and s.status == "completed":
            at = s.last_activity or s.started_at or 0.0
            if best is None or at > best.at:
                best = Signal(True, f"session:{s.id}", at)
    if status_event is not None and (best is None or status_event.at >= best.at):
        return status_event
    return best


def completion_marker(sig: Signal | None) -> str | None:
    return sig.marker if sig is not None and sig.completed else None


def project_states(graph: Graph, done: Mapping[str, bool], active: Mapping[str, int]) -> list[dict[str, Any]]:
    out = []
    for p in graph.projects:
        blocked_by = [d for d in graph.deps(p) if not done.get(d)]
        if done.get(p):
            state = "completed"
        elif active.get(p):
            state = "running"
        else:
            state = "blocked" if blocked_by else "ready"
        out.append({"project": p, "depends_on": graph.deps(p), "dependents": graph.dependents(p),
                    "state": state, "completed": bool(done.get(p)), "ready": not blocked_by,
                    "blocked_by": blocked_by, "active_sessions": int(active.get(p, 0))})
    return out


def to_start(graph: Graph, markers: Mapping[str, str | None], handled: Mapping[str, str],
             active: Mapping[str, int]) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """(dependents to start as (project, upstream, marker), upstream marks to record).

    An upstream whose completion marker differs from the one already handled is acted on: each of
    its dependents that is ready (all its dependencies completed) and has no live session starts.
    """
    starts: list[tuple[str, str, str]] = []
    marks: dict[str, str] = {}
    for upstream in graph.projects:
        marker = markers.get(upstream)
        current = marker or ""
        if handled.get(upstream, "") == current:
            continue
        marks[upstream] = current
        if marker is None:
            continue  # reopened or never completed: nothing to start
        for dep in graph.dependents(upstream):
            ready = all(markers.get(d) for d in graph.deps(dep))
            if ready and not active.get(dep) and dep not in {s[0] for s in starts}:
                starts.append((dep, upstream, marker))
    return starts, marks


# --------------------------------------------------------------------------- the manager


class DependencyManager(PeriodicEngine):
    def __init__(self, settings: DependencySettings, tracker: Any, dispatcher: Any, ingestor: Any, writer: Any,
                 reader: Any, *, apply_output: Callable[[Any], Awaitable[Any]] | None = None,
                 here: Callable[[str], bool] | None = None,
                 active_elsewhere: Callable[[list[str], frozenset[str]], Awaitable[dict[str, int]]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`here` and `active_elsewhere` on a shared store (both None on SQLite): is a node connected to
        this supervisor; per project, the stored sessions with one of the statuses on nodes held elsewhere."""
        super().__init__()
        self.here = here
        self.active_elsewhere = active_elsewhere
        self.horizon = Horizon()
        self.cursor: int | None = None  # shared store: every stored project.status up to here was noted
        self.graph = Graph(settings.edges)
        self.autostart = settings.autostart
        self.tracker = tracker
        self.dispatcher = dispatcher
        self.ingestor = ingestor
        self.writer = writer
        self.reader = reader
        self.apply_output = apply_output
        self.clock = clock
        self.status_events: dict[str, Signal] = {}
        self.handled: dict[str, str] = {}
        self.recent: list[dict[str, Any]] = []
        self._retry_at: dict[str, float] = {}

    @property
    def wants_events(self) -> bool:
        """Live `project.status` events are needed only for autostart; the API reads them from the store."""
        return self.autostart and bool(self.graph.projects)

    async def _load_status_events(self) -> None:
        projects = self.graph.projects
        events = await self.reader.run(lambda c: repo.project_status_events(c, STATUS_EVENT, projects))
        for project, event_id, data, ts in events:
            with contextlib.suppress(ValueError, TypeError):
                self._note_status(project, event_id, json.loads(data) if data else None, float(ts))

    @property
    def shared(self) -> bool:
        return self.here is not None

    async def _probe(self) -> int | None:
        assigned, holders = await self.reader.run(probe_horizon)
        return self.horizon.probe(assigned, holders)

    async def _read_remote_status(self) -> int:
        """Shared store: note the `project.status` events stored since the cursor, up to the safe horizon
        (any supervisor's ingest); returns how many were read."""
        safe = await self._probe()
        if safe is None or (self.cursor is not None and safe <= self.cursor):
            return 0
        after, projects = self.cursor or 0, self.graph.projects
        rows = await self.reader.run(lambda c: repo.project_status_between(c, STATUS_EVENT, projects, after, safe))
        for project, event_id, data, ts in rows:
            with contextlib.suppress(ValueError, TypeError):
                self._note_status(project, event_id, json.loads(data) if data else None, float(ts))
        self.cursor = safe
        return len(rows)

    async def start(self) -> None:
        if not self.graph.projects:
            return
        projects = self.graph.projects
        if self.shared and self.autostart:  # before the load: what it may miss, the cursor reads
            self.horizon = Horizon()
            self.cursor = await self._probe()  # None (a writer in flight): the first settled read reads all

        def load(c: Any) -> tuple[dict[str, str], list[Any]]:
            return repo.load_marks(c), repo.recent_starts(c)

        marks, starts = await self.reader.run(load)
        await self._load_status_events()
        self.handled = marks
        self.recent = [{"project": r[0], "upstream": r[1], "marker": r[2], "session_id": r[3], "command_id": r[4],
                        "result": r[5], "error": r[6], "started_at": iso(r[7])} for r in starts]
        if self.autostart:
            # Completions known before autostart was enabled start nothing: record them as handled.
            seed = {p: m or "" for p, m in (await self._markers(p for p in projects if p not in self.handled)).items()}
            if seed:
                now = time.time()
                await self.writer.run(lambda c: repo.save_marks(c, seed, now))
                self.handled.update(seed)
            self._start_loop(CHECK_INTERVAL_S, "dependencies", log)
            log.info("dependencies: autostart on for %d projects", len(projects))

    async def stop(self) -> None:
        await self._stop_loop(grace=0)

    # ----- signals -----

    def _note_status(self, project: str | None, event_id: str | None, data: Any, ts: float) -> None:
        if not project or not isinstance(data, dict) or not isinstance(data.get("status"), str):
            return
        done = data["status"].strip().lower() in DONE_WORDS
        sig = Signal(done, f"event:{event_id}", ts)
        old = self.status_events.get(project)
        if old is None or ts >= old.at:
            self.status_events[project] = sig

    def on_event(self, ev: dict[str, Any]) -> None:
        """Feed consumer: remembers `project.status` events (PROGRESS.md status changes)."""
        if ev.get("type") == STATUS_EVENT:
            self._note_status(ev.get("project"), ev.get("event_id"), ev.get("data"),
                              parse_ts(ev.get("timestamp")) or self.clock())

    async def _markers(self, projects: Iterable[str]) -> dict[str, str | None]:
        """Each project's completion marker: its latest completed session (ended sessions leave memory,
        so from the store, plus memory for what is not committed yet) or `project.status` event."""
        projects = list(projects)
        stored = await self.reader.run(lambda c: latest_completed(c, projects))
        known = [*stored, *self.tracker.list()]
        return {p: completion_marker(latest_signal(p, known, self.status_events.get(p))) for p in projects}

    async def _active(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        here = self.here
        for s in self.tracker.live():  # on a shared store, memory's copies of others' sessions are stale
            if s.status in ACTIVE and (here is None or here(s.node_id)):
                counts[s.project] = counts.get(s.project, 0) + 1
        if self.active_elsewhere is not None:
            for p, n in (await self.active_elsewhere(self.graph.projects, ACTIVE)).items():
                counts[p] = counts.get(p, 0) + n
        return counts

    # ----- autostart -----

    async def check(self) -> list[tuple[str, str, str]]:
        if self.shared:
            await self._read_remote_status()
        markers = await self._markers(self.graph.projects)
        now = self.clock()
        handled = {p: m for p, m in self.handled.items() if self._retry_at.get(p, 0) <= now}
        handled.update({p: markers.get(p) or "" for p, t in self._retry_at.items() if t > now})
        starts, marks = to_start(self.graph, markers, handled, await self._active())
        failed_upstreams = set()
        for project, upstream, marker in starts:
            if not await self._start(project, upstream, marker):
                failed_upstreams.add(upstream)
        for up in failed_upstreams:
            marks.pop(up, None)
            self._retry_at[up] = now + RETRY_FAILED_S
        for up in marks:
            self._retry_at.pop(up, None)
        if marks:
            await self.writer.run(lambda c: repo.save_marks(c, marks, time.time()))
            self.handled.update(marks)
        return starts

    async def _start(self, project: str, upstream: str, marker: str) -> bool:
        deps = self.graph.deps(project)
        args = {"project": project, "prompt": PROMPT.format(upstream=", ".join(deps))}
        session_id = command_id = error = node_id = None
        result = "failure"
        try:
            res = await self.dispatcher.dispatch("create_session", CommandTarget(project=project), args,
                                                 actor="dependencies")
            command_id, result, error, node_id = res.command_id, res.status, res.error, res.node_id
            if res.status == "success":
                # A session on a node held elsewhere is its holder's to store (a copy here would go stale).
                held_here = self.here is None or (node_id is not None and self.here(node_id))
                if self.apply_output is not None and held_here:
                    s = await self.apply_output(res)
                    session_id = getattr(s, "id", None)
                if session_id is None and isinstance(res.output, dict):
                    inner = res.output.get("session")
                    out: dict[str, Any] = inner if isinstance(inner, dict) else res.output
                    session_id = out.get("id") if isinstance(out.get("id"), str) else None
        except CommandError as exc:
            error = exc.message
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        now = time.time()
        row = {"project": project, "upstream": upstream, "marker": marker, "session_id": session_id,
               "command_id": command_id, "result": result, "error": error, "started_at": iso(now)}
        self.recent = [row, *self.recent][:repo.RECENT_STARTS]
        await self.writer.run(lambda c: repo.insert_start(c, project, upstream, marker, session_id, command_id, result,
                                                          error, now))
        ok = result == "success"
        etype = "dependency.started" if ok else "dependency.start_failed"
        data = {"project": project, "upstream": upstream, "depends_on": deps, "session_id": session_id,
                "command_id": command_id, "result": result}
        if error:
            data["error"] = error
        s = self.tracker.get(session_id) if session_id and node_id is None else None
        self.ingestor.emit(node_id or (s.node_id if s else None), etype, data, session_id=session_id, project=project)
        (log.info if ok else log.warning)("dependencies: %s completed -> start %s: %s%s", upstream, project, result,
                                          f" ({error})" if error else "")
        return ok

    # ----- API -----

    async def snapshot(self) -> dict[str, Any]:
        # Not fed live (autostart off, or a shared store's follower, where autostart does not run): as stored.
        if self.graph.projects and (not self.wants_events or (self.shared and self._task is None)):
            await self._load_status_events()
        done = {p: m is not None for p, m in (await self._markers(self.graph.projects)).items()}
        return {"autostart": self.autostart, "projects": project_states(self.graph, done, await self._active()),
                "recent_starts": list(self.recent)}
