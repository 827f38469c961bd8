"""Fixtures for end-to-end tests against the REAL opencode (installed by scripts/install-test-clis.sh).

opencode is found at ``$HAL_TEST_OPENCODE`` or ``<repo>/.tools/npm/node_modules/.bin/opencode``; when it
is missing the tests are skipped with that reason (CI installs it, so there they run).  Each module gets
its own HOME (and XDG dirs) in a temp directory and a clean environment, so nothing touches ``~`` and no
ambient credentials leak in.  The LLM is the loopback fake from ``tests/fakes/fake_llm.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from halswarm.agent.opencode_client import OpencodeClient
from halswarm.agent.opencode_events import GlobalEventStream, OpencodeEvent
from halswarm.agent.opencode_process import OpencodeProcess
from halswarm.agent.session_state import Change, SessionReducer
from tests.fakes.fake_llm import FakeLLM, opencode_config_content
from tests.support.waiting import on_loop

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_OPENCODE = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "opencode"


def opencode_binary() -> str | None:
    path = os.environ.get("HAL_TEST_OPENCODE") or str(DEFAULT_OPENCODE)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


@pytest.fixture(scope="module")
def opencode_bin() -> str:
    path = opencode_binary()
    if path is None:
        where = os.environ.get("HAL_TEST_OPENCODE") or str(DEFAULT_OPENCODE)
        reason = f"opencode binary not found at {where}; run scripts/install-test-clis.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI installs it, so this is a broken install step)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM(slow_seconds=30).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def oc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ochome")


def opencode_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for opencode (used with ``inherit_env=False``)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        # opencode npm-installs @opencode-ai/plugin (~70 registry requests) into a fresh config dir,
        # even with --pure.  Offline mode makes that fail fast: loopback-only tests, and no SIGTERM
        # that hangs because an install is in flight.  Nothing the tests use needs the package.
        "npm_config_offline": "true",
    }
    env.update(extra)
    return env


def make_process(binary: str, home: Path, fake: FakeLLM | None, **kw: Any) -> OpencodeProcess:
    cwd = home / "server-cwd"
    cwd.mkdir(exist_ok=True)
    extra = {}
    if fake is not None:
        extra["OPENCODE_CONFIG_CONTENT"] = opencode_config_content(
            fake.base_url, permission_ask_bash=kw.pop("permission_ask_bash", False)
        )
    kw.setdefault("startup_timeout", 30.0)
    kw.setdefault("stop_grace", 5.0)
    return OpencodeProcess(binary, cwd=str(cwd), env=opencode_env(home, **extra), inherit_env=False, port=0, **kw)


@dataclass
class Recorder:
    """Runs a GlobalEventStream in a task, keeps every event and feeds a SessionReducer."""

    stream: GlobalEventStream
    tracker: SessionReducer
    events: list[OpencodeEvent] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Recorder:
        self.task = asyncio.create_task(self._run(), name="e2e-event-recorder")
        return self

    async def _run(self) -> None:
        async with contextlib.aclosing(self.stream.events()) as events:
            async for ev in events:
                self.events.append(ev)
                self.changes.extend(self.tracker.apply(ev))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def statuses(self, session_id: str) -> list[str]:
        """The session's status trail, as the tracker reported it."""
        return [c.fields["status"][1] for c in self.changes if c.session_id == session_id and c.status_changed]

    def session_events(self, session_id: str) -> list[OpencodeEvent]:
        return [e for e in self.events if e.session_id == session_id]

    async def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        """Poll ``predicate`` until truthy; on timeout fail with the recent event types."""
        def check() -> Any:
            if self.task is not None and self.task.done():
                self.task.result()  # surface a crashed consumer
            return predicate()

        try:
            return await on_loop(check, what, timeout, interval=0.05, retry=())
        except AssertionError as exc:
            raise AssertionError(f"{exc}; recent events: {[e.type for e in self.events[-25:]]}") from None


@dataclass
class Harness:
    process: OpencodeProcess
    client: OpencodeClient
    recorder: Recorder
    tracker: SessionReducer
    workdir: Path
    fake: FakeLLM

    def project_dir(self, name: str) -> str:
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        return str(d)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(opencode_bin: str, fake_llm: FakeLLM, oc_home: Path) -> AsyncIterator[Harness]:
    """One real opencode (bash permission: ask) + client + event recorder, shared by a module."""
    workdir = oc_home / "work"
    workdir.mkdir()
    proc = make_process(opencode_bin, oc_home, fake_llm, permission_ask_bash=True)
    recorder: Recorder | None = None
    client: OpencodeClient | None = None
    try:
        await proc.start()
        async with asyncio.timeout(45):
            url = await proc.wait_running()
        tracker = SessionReducer({"e2e": str(workdir)})
        recorder = Recorder(GlobalEventStream(lambda: proc.base_url, backoff_initial=0.1), tracker).start()
        async with asyncio.timeout(15):
            await recorder.stream.connected.wait()
        client = OpencodeClient(url, timeout=15.0)
        yield Harness(proc, client, recorder, tracker, workdir, fake_llm)
    finally:
        if recorder is not None:
            await recorder.stop()
        if client is not None:
            await client.aclose()
        await proc.stop()


# Factories as fixtures, so test modules never import this conftest by name.
@pytest.fixture(scope="module")
def opencode_factory(opencode_bin: str) -> Callable[..., OpencodeProcess]:
    """``opencode_factory(home, fake_or_None, **OpencodeProcess kwargs)`` -> a not yet started process."""

    def factory(home: Path, fake: FakeLLM | None, **kw: Any) -> OpencodeProcess:
        return make_process(opencode_bin, home, fake, **kw)

    return factory


@pytest.fixture(scope="module")
def recorder_factory() -> Callable[..., Recorder]:
    """``recorder_factory(stream, tracker)`` -> a started :class:`Recorder` (call inside the test's loop)."""

    def factory(stream: GlobalEventStream, tracker: SessionReducer) -> Recorder:
        return Recorder(stream, tracker).start()

    return factory
