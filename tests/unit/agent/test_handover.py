"""Handover (SPEC 7.2) and restart: order of calls, the idle wait and its timeout, failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.commands import HANDOVER_RESERVE, AgentCommands
from halswarm.agent.handover import (
    GONE,
    HANDOVER_PROMPT,
    IDLE,
    INIT_PROMPT,
    TIMEOUT,
    model_of,
    replace_session,
    wait_turn_end,
)
from halswarm.agent.opencode_client import OpencodeServerError
from halswarm.protocol import Command, CommandTarget
from tests.support.commands_rig import Rig


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path)
    yield r
    await r.fake.close()
    await r.bridge.close()


def test_prompts_name_the_context_files() -> None:
    for text in (HANDOVER_PROMPT, INIT_PROMPT):
        assert ".context/PROGRESS.md" in text and ".context/CURRENT_TASK.md" in text


async def test_handover_order_of_calls(rig: Rig) -> None:
    old = await rig.start(model="fake/fake-model")
    sid = old["id"]
    await rig.settle()
    rig.fake.calls.clear()
    res = await rig.run("handover", session_id=sid)
    assert res.status == "success", res.error
    out = res.output
    new_sid = out["session"]["id"]
    assert new_sid != sid
    assert rig.fake.calls == [
        ("prompt_async", sid, HANDOVER_PROMPT, None, str(rig.proj)),
        ("abort", sid),
        ("delete_session", sid),
        ("create_session", str(rig.proj), "fake/fake-model"),
        ("prompt_async", new_sid, INIT_PROMPT, "fake/fake-model", str(rig.proj)),
    ]
    assert out["idle_wait"] == IDLE
    assert out["old_session"]["id"] == sid and out["old_session"]["status"] == "killed"
    assert out["session"]["project"] == "alpha" and out["session"]["directory"] == str(rig.proj)
    assert out["session"]["status"] in ("running", "idle")
    assert (rig.proj / ".context").is_dir()  # ready for the files the session is asked to write
    await rig.settle()
    assert rig.sink.states(sid)[-1] == "killed"


async def test_kill_waits_for_the_end_of_the_handover_turn(rig: Rig) -> None:
    """The kill must come after the session went idle, not right after the prompt."""
    sid = (await rig.start())["id"]
    await rig.settle()
    order: list[str] = []
    real_abort = rig.fake.abort

    async def abort(session_id: str, *, directory: str | None = None) -> bool:
        order.append(f"abort after {rig.bridge.turn_ends(session_id)} ended turn(s)")
        return await real_abort(session_id, directory=directory)

    rig.fake.abort = abort  # type: ignore[method-assign]
    res = await rig.run("handover", session_id=sid)
    assert res.status == "success"
    assert order == ["abort after 1 ended turn(s)"]


async def test_idle_wait_timeout_still_hands_over(rig: Rig) -> None:
    rig.fake.turns = "hang"  # the session never finishes the handover turn
    sid = (await rig.start())["id"]
    started = time.monotonic()
    res = await rig.run("handover", session_id=sid, idle_timeout_sec=0.3)
    elapsed = time.monotonic() - started
    assert res.status == "success", res.error
    assert res.output["idle_wait"] == TIMEOUT
    assert 0.3 <= elapsed < 2.0
    assert res.output["old_session"]["status"] == "killed"
    assert rig.fake.names()[-4:] == ["abort", "delete_session", "create_session", "prompt_async"]


async def test_restart_skips_the_handover_prompt_and_the_wait(rig: Rig) -> None:
    rig.fake.turns = "hang"
    sid = (await rig.start(prompt="long work"))["id"]
    rig.fake.calls.clear()
    started = time.monotonic()
    res = await rig.run("restart_session", session_id=sid)
    assert res.status == "success" and time.monotonic() - started < 2.0
    assert res.output["idle_wait"] == "skipped"
    assert rig.fake.names() == ["abort", "delete_session", "create_session", "prompt_async"]
    assert rig.fake.calls[-1][2] == INIT_PROMPT
    assert res.output["old_session"]["status"] == "killed"


async def test_handover_prompt_failure_keeps_the_session(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    rig.fake.fail["prompt_async"] = OpencodeServerError("busy", status=500)
    res = await rig.run("handover", session_id=sid)
    assert res.status == "failure" and res.error == "opencode: HTTP 500: busy"
    assert "abort" not in rig.fake.names() and rig.bridge.get(sid) is not None


async def test_create_failure_after_kill_is_a_failure(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    await rig.settle()
    rig.fake.fail["create_session"] = OpencodeServerError("disk full", status=500)
    res = await rig.run("restart_session", session_id=sid)
    assert res.status == "failure" and "disk full" in res.error
    assert rig.bridge.get(sid) is None  # the old one is gone; the error says the new one failed


async def test_handover_of_unknown_session(rig: Rig) -> None:
    res = await rig.run("handover", session_id="ses_missing")
    assert res.status == "failure" and res.error == "session ses_missing not found on this node"
    assert rig.fake.names() == ["get_session"]  # asked opencode once, changed nothing


def test_idle_timeout_stays_inside_the_command_timeout(tmp_path: Path) -> None:
    cmds = AgentCommands(None, client=lambda: None, unavailable_reason=str, projects=dict,  # type: ignore[arg-type]
                         handover_idle_timeout=60.0)

    def timeout(timeout_ms: int, **args: Any) -> float:
        return cmds._idle_timeout(Command("c", "handover", CommandTarget(session_id="s"), args, timeout_ms))

    assert timeout(120_000) == 60.0  # the supervisor's default handover timeout leaves room for 60 s
    assert timeout(30_000) == 30.0 - HANDOVER_RESERVE
    assert timeout(120_000, idle_timeout_sec=5) == 5.0
    assert timeout(120_000, idle_timeout_sec="x") == 60.0
    assert timeout(1_000) == 0.5


class _Turns:
    def __init__(self) -> None:
        self.ends = 0
        self.alive = True
        self.status = "idle"

    def turn_ends(self, session_id: str) -> int:
        return self.ends

    def get(self, session_id: str) -> dict[str, Any] | None:
        return {"id": session_id, "status": self.status} if self.alive else None


async def test_wait_turn_end_outcomes() -> None:
    turns = _Turns()
    assert await wait_turn_end(turns, "s", 0, 0.05, poll=0.01) == TIMEOUT
    turns.ends = 1
    assert await wait_turn_end(turns, "s", 0, 1.0, poll=0.01) == IDLE
    turns.alive = False
    assert await wait_turn_end(turns, "s", 1, 1.0, poll=0.01) == GONE


async def test_replace_session_with_stub_ops() -> None:
    calls: list[tuple[str, Any]] = []
    turns = _Turns()

    class Ops:
        bridge = turns

        async def send_prompt(self, session: dict[str, Any], text: str) -> None:
            calls.append(("prompt", text[:9]))
            turns.ends += 1

        async def kill(self, session: dict[str, Any]) -> dict[str, Any]:
            calls.append(("kill", session["id"]))
            return {**session, "status": "killed"}

        async def create(self, project: str, directory: str, *, model: str | None, prompt: str | None
                         ) -> dict[str, Any]:
            calls.append(("create", (project, directory, model, prompt == INIT_PROMPT)))
            return {"id": "new", "project": project, "status": "running"}

    session = {"id": "old", "project": "p", "directory": "/d", "model": "prov/m"}
    out = await replace_session(Ops(), session, handover=True, idle_timeout=1.0, poll=0.01)
    assert calls == [("prompt", "HANDOVER:"), ("kill", "old"), ("create", ("p", "/d", "prov/m", True))]
    assert out == {"old_session": {**session, "status": "killed"}, "session": {"id": "new", "project": "p",
                                                                              "status": "running"},
                   "idle_wait": IDLE}


async def test_handover_of_a_busy_session_waits_for_the_notes_turn() -> None:
    """A turn running at the handover ends first (opencode queues the prompt behind it): the kill must wait
    for the next end, the prompt's own turn, or the notes are never written."""
    calls: list[str] = []
    turns = _Turns()
    turns.status = "running"

    class Ops:
        bridge = turns

        async def send_prompt(self, session: dict[str, Any], text: str) -> None:
            calls.append("prompt")

            async def turns_end() -> None:
                for _ in range(2):  # the running turn, then the one answering the prompt
                    await asyncio.sleep(0.02)
                    turns.ends += 1
                    calls.append(f"turn end {turns.ends}")

            ops_tasks.append(asyncio.create_task(turns_end()))

        async def kill(self, session: dict[str, Any]) -> dict[str, Any]:
            calls.append("kill")
            return {**session, "status": "killed"}

        async def create(self, project: str, directory: str, *, model: str | None, prompt: str | None
                         ) -> dict[str, Any]:
            return {"id": "new", "project": project, "status": "running"}

    ops_tasks: list[asyncio.Task[None]] = []
    out = await replace_session(Ops(), {"id": "old", "project": "p", "directory": "/d"}, handover=True,
                                idle_timeout=5.0, poll=0.005)
    await asyncio.gather(*ops_tasks)
    assert out["idle_wait"] == IDLE
    assert calls == ["prompt", "turn end 1", "turn end 2", "kill"], calls


def test_model_reuse() -> None:
    assert model_of({"model": "fake/fake-model"}) == "fake/fake-model"
    assert model_of({"model": "fake-model"}) is None
    assert model_of({"model": None}) is None
