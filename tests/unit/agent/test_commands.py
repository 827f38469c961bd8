"""AgentCommands against a fake opencode that answers like the real HTTP API and reports what it did
as events on the bridge (a moment later, in order), like the real /global/event stream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.opencode_client import OpencodeServerError
from halswarm.protocol import Command, CommandTarget
from tests.support.commands_rig import Rig


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
