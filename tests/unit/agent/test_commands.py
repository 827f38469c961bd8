"""AgentCommands against a fake opencode that answers like the real HTTP API and reports what it did
as events on the bridge (a moment later, in order), like the real /global/event stream."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.bridge import EventBridge
from halswarm.agent.commands import AgentCommands
from halswarm.agent.opencode_client import OpencodeNotFound, OpencodeServerError
from halswarm.agent.opencode_events import OpencodeEvent
from halswarm.agent.session_state import SessionTracker
from halswarm.protocol import Command, CommandTarget


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event_id: str | None, etype: str, sid: str | None, project: str | None, data: Any) -> Any:
        ev = {"event_id": event_id, "type": etype, "session_id": sid, "project": project, "data": data}
        self.events.append(ev)
        return ev

    def states(self, sid: str) -> list[str]:
        return [e["data"]["status"] for e in self.events if e["type"] == "session.state" and e["session_id"] == sid]


class FakeOpencode:
    """The subset of OpencodeClient the commands use.

    ``turns``: ``"complete"`` (busy -> idle), ``"hang"`` (stays busy) or ``"error"`` (session.error then
    idle). ``events=False`` simulates a dead event stream. ``fail[method] = exc`` makes a call raise.
    """

    def __init__(self, bridge: EventBridge, *, turns: str = "complete", events: bool = True) -> None:
        self.bridge = bridge
        self.turns = turns
        self.events = events
        self.calls: list[tuple[Any, ...]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.busy: set[str] = set()
        self.fail: dict[str, Exception] = {}
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[OpencodeEvent] = asyncio.Queue()
        self._pump = asyncio.get_running_loop().create_task(self._deliver())

    async def _deliver(self) -> None:
        while True:
            ev = await self._queue.get()
            await asyncio.sleep(0.005)
            await self.bridge.handle(ev)

    def _emit(self, etype: str, sid: str, **props: Any) -> None:
        if self.events:
            directory = self.sessions.get(sid, {}).get("directory")
            self._queue.put_nowait(OpencodeEvent(etype, {"sessionID": sid, **props}, directory=directory))

    def _check(self, name: str) -> None:
        exc = self.fail.get(name)
        if exc is not None:
            raise exc

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    # -- API ------------------------------------------------------------------------------------
    async def create_session(self, directory: str, title: str | None = None, model: str | None = None
                             ) -> dict[str, Any]:
        self.calls.append(("create_session", directory, model))
        self._check("create_session")
        sid = f"ses_fake{next(self._ids)}"
        info: dict[str, Any] = {"id": sid, "directory": directory, "title": title or "New session",
                                "time": {"created": int(time.time() * 1000)}}
        if model:
            provider, _, model_id = model.partition("/")
            info["model"] = {"id": model_id, "providerID": provider}
        self.sessions[sid] = info
        self._emit("session.created", sid, info=dict(info))
        return dict(info)

    async def get_session(self, session_id: str, *, directory: str | None = None) -> dict[str, Any]:
        self.calls.append(("get_session", session_id))
        if session_id not in self.sessions:
            raise OpencodeNotFound(f"Session not found: {session_id}", status=404, name="NotFoundError")
        return dict(self.sessions[session_id])

    async def prompt_async(self, session_id: str, text: str, *, model: str | None = None,
                           directory: str | None = None, agent: str | None = None) -> None:
        self.calls.append(("prompt_async", session_id, text, model, directory))
        self._check("prompt_async")
        if session_id not in self.sessions:
            raise OpencodeNotFound(f"Session not found: {session_id}", status=404, name="NotFoundError")
        self.busy.add(session_id)
        self._emit("session.status", session_id, status={"type": "busy"})
        if self.turns == "error":
            self._emit("session.error", session_id, error={"name": "APIError", "data": {"message": "boom"}})
        if self.turns in ("complete", "error"):
            self._end_turn(session_id)

    def _end_turn(self, sid: str) -> None:
        self.busy.discard(sid)
        self._emit("session.status", sid, status={"type": "idle"})
        self._emit("session.idle", sid)

    async def abort(self, session_id: str, *, directory: str | None = None) -> bool:
        self.calls.append(("abort", session_id))
        self._check("abort")
        if session_id in self.busy:
            self._emit("session.error", session_id, error={"name": "MessageAbortedError", "data": {"message": "x"}})
        self._end_turn(session_id)
        return True

    async def delete_session(self, session_id: str, *, directory: str | None = None) -> bool:
        self.calls.append(("delete_session", session_id))
        self._check("delete_session")
        if session_id not in self.sessions:
            raise OpencodeNotFound(f"Session not found: {session_id}", status=404, name="NotFoundError")
        info = self.sessions.pop(session_id)
        self._emit("session.deleted", session_id, info=info)
        return True


class Rig:
    def __init__(self, tmp: Path, **fake_kw: Any) -> None:
        self.proj = tmp / "alpha"
        self.proj.mkdir()
        self.projects = {"alpha": str(self.proj), "ghost": str(tmp / "ghost")}
        self.sink = Sink()
        self.bridge = EventBridge(SessionTracker(self.projects), self.sink)
        self.fake = FakeOpencode(self.bridge, **fake_kw)
        self.up = True
        self.commands = AgentCommands(
            self.bridge,
            client=lambda: self.fake if self.up else None,
            unavailable_reason=lambda: "opencode serve is backoff (exited with code 1)",
            projects=lambda: self.projects,
            resume_message="please continue",
            start_wait=0.5,
            kill_wait=0.5,
            reassert_delay=0.05,
            poll=0.01,
        )
        self._ids = itertools.count(1)

    async def run(self, ctype: str, *, session_id: str | None = None, timeout_ms: int = 10_000, **args: Any
                  ) -> Any:
        cmd = Command(f"cmd-{next(self._ids)}", ctype, CommandTarget(session_id=session_id), args, timeout_ms)
        return await self.commands.handle(cmd)

    async def start(self, **args: Any) -> dict[str, Any]:
        res = await self.run("create_session", project="alpha", **args)
        assert res.status == "success", res.error
        return res.output

    async def settle(self) -> None:
        await asyncio.sleep(0.05)


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path)
    yield r
    await r.fake.close()
    await r.bridge.close()


async def test_create_session_with_prompt_and_model(rig: Rig) -> None:
    out = await rig.start(prompt="hello", model="fake/fake-model")
    sid = out["id"]
    assert rig.fake.calls == [
        ("create_session", str(rig.proj), "fake/fake-model"),
        ("prompt_async", sid, "hello", "fake/fake-model", str(rig.proj)),
    ]
    assert out["project"] == "alpha" and out["directory"] == str(rig.proj)
    assert out["model"] == "fake/fake-model"
    assert out["status"] in ("running", "idle")  # the turn is visible (or already over)
    await rig.settle()
    assert rig.bridge.get(sid)["status"] == "idle"
    assert rig.sink.states(sid)[0] == "idle" and "running" in rig.sink.states(sid)


async def test_create_session_without_prompt(rig: Rig) -> None:
    out = await rig.start()
    assert out["status"] == "idle" and rig.fake.names() == ["create_session"]


async def test_create_session_rejects_bad_input_before_calling_opencode(rig: Rig) -> None:
    cases = {
        "project nope is not configured on this node": {"project": "nope"},
        "does not exist": {"project": "ghost"},
        "model must look like 'provider/model'": {"project": "alpha", "model": "just-a-model"},
        "'project' is required": {},
    }
    for expected, args in cases.items():
        res = await rig.run("create_session", **args)
        assert res.status == "failure" and expected in res.error, (args, res.error)
    assert rig.fake.calls == []


async def test_no_opencode_is_a_failure_with_the_reason(rig: Rig) -> None:
    rig.up = False
    res = await rig.run("create_session", project="alpha")
    assert res.status == "failure"
    assert res.error == "opencode is not available on this node: opencode serve is backoff (exited with code 1)"


async def test_opencode_errors_become_one_line_failures(rig: Rig) -> None:
    rig.fake.fail["create_session"] = OpencodeServerError("Unexpected\nserver error", status=500, name="UnknownError")
    res = await rig.run("create_session", project="alpha")
    assert res.status == "failure"
    assert res.error == "opencode: HTTP 500: UnknownError: Unexpected server error"


async def test_prompt_failure_after_create_names_the_session(rig: Rig) -> None:
    rig.fake.fail["prompt_async"] = OpencodeServerError("down", status=500)
    res = await rig.run("create_session", project="alpha", prompt="hi")
    assert res.status == "failure" and "was created but its first prompt failed" in res.error
    assert "ses_fake1" in res.error


async def test_prompt_and_resume(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    res = await rig.run("prompt_session", session_id=sid, message="do X")
    assert res.status == "success" and res.output == {"session_id": sid, "accepted": True}
    res = await rig.run("resume", session_id=sid)
    assert res.output == {"session_id": sid, "accepted": True}
    res = await rig.run("resume", session_id=sid, message="go on with Y")
    prompts = [c[2] for c in rig.fake.calls if c[0] == "prompt_async"]
    assert prompts == ["do X", "please continue", "go on with Y"]
    assert all(c[4] == str(rig.proj) for c in rig.fake.calls if c[0] == "prompt_async")


async def test_session_id_from_target_or_args(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    by_target = await rig.run("session_status", session_id=sid)
    cmd = Command("c-args", "session_status", CommandTarget(), {"session_id": sid}, 5000)
    by_args = await rig.commands.handle(cmd)
    assert by_target.output["id"] == by_args.output["id"] == sid


async def test_unknown_session_and_missing_arguments(rig: Rig) -> None:
    res = await rig.run("prompt_session", session_id="ses_nope", message="x")
    assert res.status == "failure" and res.error == "session ses_nope not found on this node"
    res = await rig.run("prompt_session", message="x")
    assert res.status == "failure" and "session_id is required" in res.error
    sid = (await rig.start())["id"]
    res = await rig.run("prompt_session", session_id=sid)
    assert res.status == "failure" and "'message' is required" in res.error


async def test_kill_aborts_then_deletes_and_reports_killed(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    await rig.settle()
    res = await rig.run("kill_session", session_id=sid)
    assert res.status == "success" and res.output["status"] == "killed" and res.output["id"] == sid
    assert rig.fake.names()[-2:] == ["abort", "delete_session"]
    assert rig.sink.states(sid)[-1] == "killed"  # idle session deleted by us: killed, not completed
    res = await rig.run("session_status", session_id=sid)
    assert res.status == "failure" and res.error == f"session {sid} not found on this node"


async def test_kill_of_a_running_session(rig: Rig) -> None:
    rig.fake.turns = "hang"
    sid = (await rig.start(prompt="work"))["id"]
    await rig.settle()
    assert rig.bridge.get(sid)["status"] == "running"
    res = await rig.run("kill", session_id=sid)  # Go alias
    assert res.output["status"] == "killed"
    assert rig.sink.states(sid)[-1] == "killed"


async def test_kill_without_event_stream_reports_the_kill_itself(tmp_path: Path) -> None:
    r = Rig(tmp_path, events=False)
    try:
        sid = (await r.start())["id"]
        started = time.monotonic()
        res = await r.run("kill_session", session_id=sid)
        assert res.output["status"] == "killed"
        assert time.monotonic() - started < 2
        assert r.sink.states(sid)[-1] == "killed" and r.bridge.snapshot() == []
    finally:
        await r.fake.close()


async def test_kill_when_opencode_already_deleted_it(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    await rig.settle()
    rig.fake.sessions.pop(sid)  # gone in opencode, event not seen
    res = await rig.run("kill_session", session_id=sid)
    assert res.status == "success" and res.output["status"] == "killed"


async def test_session_seen_only_by_opencode_is_looked_up(tmp_path: Path) -> None:
    r = Rig(tmp_path, events=False)
    try:
        info = await r.fake.create_session(str(r.proj))  # created behind the agent's back
        res = await r.run("session_status", session_id=info["id"])
        assert res.status == "success" and res.output["project"] == "alpha"
        assert ("get_session", info["id"]) in r.fake.calls
    finally:
        await r.fake.close()


async def test_unsupported_commands_and_shutdown(rig: Rig) -> None:
    res = await rig.run("env_check")
    assert res.status == "failure" and res.error == "unsupported command env_check on this agent"
    rig.commands.accepting = False
    res = await rig.run("create_session", project="alpha")
    assert res.status == "failure" and res.error == "agent is shutting down"


async def test_commands_run_concurrently(rig: Rig) -> None:
    rig.fake.turns = "hang"
    sid = (await rig.start())["id"]
    handover = asyncio.ensure_future(rig.run("handover", session_id=sid, idle_timeout_sec=1.0))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    status = await rig.run("session_status", session_id=sid)
    assert status.status == "success" and time.monotonic() - started < 0.9
    assert not handover.done()
    assert rig.commands._inflight  # the handover is tracked for a graceful shutdown
    assert await rig.commands.drain(5.0) == 0
    assert (await handover).status == "success"


async def test_error_turn_is_reported(rig: Rig) -> None:
    rig.fake.turns = "error"
    out = await rig.start(prompt="FAIL")
    await rig.settle()
    assert rig.bridge.get(out["id"])["status"] == "error"
    assert rig.bridge.get(out["id"])["error"] == "boom"


async def test_later_issues_can_add_command_types(rig: Rig) -> None:
    from halswarm.protocol import CommandResult

    async def env_check(cmd: Command) -> CommandResult:
        return CommandResult(cmd.command_id, "success", output={"checked": cmd.args.get("project")})

    async def echo(cmd: Command) -> dict[str, Any]:
        return {"echo": cmd.args}

    rig.commands.add_handlers({"env_check": env_check, "echo": echo})
    res = await rig.run("env_check", project="alpha")
    assert res.status == "success" and res.output == {"checked": "alpha"}
    assert (await rig.run("echo", x=1)).output == {"echo": {"x": 1}}
    with pytest.raises(ValueError, match="already served"):
        rig.commands.add_handlers({"kill_session": echo})
