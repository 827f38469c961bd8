"""The agent's `permission_reply` command: answers only a request asked for that very session of ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from halswarm.protocol import PERMISSION_REPLY
from tests.support.commands_rig import Rig
from tests.support.waiting import on_loop


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path)
    yield r
    await r.fake.close()
    await r.bridge.close()


async def _waiting(rig: Rig, rid: str = "per_abc123") -> str:
    sid = (await rig.start())["id"]
    rig.fake.ask(sid, rid)
    await on_loop(lambda: (rig.bridge.get(sid) or {}).get("status") == "waiting_input", "waiting_input", 5)
    return sid


async def test_reply_reaches_opencode_and_the_session_runs_again(rig: Rig) -> None:
    sid = await _waiting(rig)
    res = await rig.run(PERMISSION_REPLY, session_id=sid, permission_id="per_abc123", reply="once")
    assert res.status == "success", res.error
    assert res.output == {"session_id": sid, "permission_id": "per_abc123", "reply": "once", "accepted": True}
    assert ("reply_permission", "per_abc123", "once", None, str(rig.proj)) in rig.fake.calls
    await on_loop(lambda: rig.bridge.get(sid)["status"] != "waiting_input", "status leaves waiting_input", 5)


async def test_reject_carries_the_message(rig: Rig) -> None:
    sid = await _waiting(rig)
    res = await rig.run(PERMISSION_REPLY, session_id=sid, permission_id="per_abc123", reply="reject",
                        message="not on prod")
    assert res.status == "success", res.error
    assert ("reply_permission", "per_abc123", "reject", "not on prod", str(rig.proj)) in rig.fake.calls


async def test_an_id_not_asked_for_this_session_is_refused_before_opencode(rig: Rig) -> None:
    sid = await _waiting(rig)
    other = (await rig.start())["id"]
    rig.fake.ask(other, "per_other1")
    for target, rid in ((sid, "per_unknown9"), (sid, "per_other1")):
        res = await rig.run(PERMISSION_REPLY, session_id=target, permission_id=rid, reply="once")
        assert res.status == "failure" and res.error.startswith("permission request is not pending"), res.error
    assert not [c for c in rig.fake.calls if c[0] == "reply_permission"]


async def test_a_second_reply_is_refused(rig: Rig) -> None:
    sid = await _waiting(rig)
    first = await rig.run(PERMISSION_REPLY, session_id=sid, permission_id="per_abc123", reply="once")
    assert first.status == "success"
    await on_loop(lambda: "per_abc123" not in rig.bridge.tracker.get(sid).pending_permissions, "replied seen", 5)
    second = await rig.run(PERMISSION_REPLY, session_id=sid, permission_id="per_abc123", reply="always")
    assert second.status == "failure" and "not pending" in second.error
    assert len([c for c in rig.fake.calls if c[0] == "reply_permission"]) == 1


async def test_a_request_asked_before_the_agent_started_is_found_through_opencode(rig: Rig) -> None:
    sid = (await rig.start())["id"]
    rig.fake.ask(sid, "per_before1", emit=False)  # listed by GET /permission, never seen on the stream
    res = await rig.run(PERMISSION_REPLY, session_id=sid, permission_id="per_before1", reply="once")
    assert res.status == "success", res.error


@pytest.mark.parametrize(("args", "expected"), [
    ({"permission_id": "per_../../session", "reply": "once"}, "'permission_id' must look like per_"),
    ({"permission_id": "abc", "reply": "once"}, "'permission_id' must look like per_"),
    ({"reply": "once"}, "'permission_id' must look like per_"),
    ({"permission_id": "per_abc123", "reply": "yes"}, "'reply' must be one of once|always|reject"),
    ({"permission_id": "per_abc123", "reply": "once", "message": "x" * 2001}, "longer than 2000"),
    ({"permission_id": "per_abc123", "reply": "once", "extra": 1}, "unknown argument(s) extra"),
])
async def test_bad_arguments_are_refused_with_one_line(rig: Rig, args: dict, expected: str) -> None:
    sid = await _waiting(rig)
    res = await rig.run(PERMISSION_REPLY, session_id=sid, **args)
    assert res.status == "failure" and expected in res.error, res.error
    assert not [c for c in rig.fake.calls if c[0] in ("reply_permission", "list_permissions")]


async def test_unknown_session_is_refused(rig: Rig) -> None:
    res = await rig.run(PERMISSION_REPLY, session_id="ses_nope", permission_id="per_abc123", reply="once")
    assert res.status == "failure" and "session ses_nope not found" in res.error


async def test_a_request_opencode_no_longer_has_is_not_pending(rig: Rig) -> None:
    sid = await _waiting(rig)
    rig.fake.permissions.clear()  # answered in opencode's own UI, its permission.replied not here yet
    res = await rig.run(PERMISSION_REPLY, session_id=sid, permission_id="per_abc123", reply="once")
    assert res.status == "failure" and res.error.startswith("permission request is not pending"), res.error
    assert "opencode no longer has it" in res.error
