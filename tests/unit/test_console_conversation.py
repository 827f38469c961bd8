"""The console's conversation builder (pure): opencode's part updates and deltas become one message per
part in first-seen order, with the latest text; tools carry input and output; permission requests carry
their id and answer; user parts are told apart from assistant parts; text stays data."""

from __future__ import annotations

from typing import Any

from halswarm.supervisor.features.console.conversation import OUTPUT_CHARS, build


def ev(etype: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": etype, "data": data, "timestamp": "2026-12-07T08:00:00Z"}


def part(pid: str, mid: str, ptype: str, **kw: Any) -> dict[str, Any]:
    return ev("message.part.updated", {"part": {"id": pid, "messageID": mid, "type": ptype, **kw}})


def test_prompt_reply_tool_and_permission_in_order():
    msgs = build([
        ev("message.updated", {"info": {"id": "msg_u", "role": "user"}}),
        part("prt_u", "msg_u", "text", text="fix the build"),
        ev("message.updated", {"info": {"id": "msg_a", "role": "assistant"}}),
        part("prt_s", "msg_a", "step-start"),
        ev("message.part.delta", {"partID": "prt_a", "messageID": "msg_a", "field": "text", "delta": "Look"}),
        ev("message.part.delta", {"partID": "prt_a", "messageID": "msg_a", "field": "text", "delta": "ing."}),
        part("prt_t", "msg_a", "tool", tool="bash", state={"status": "running", "input": {"command": "make"}}),
        ev("permission.asked", {"id": "per_1", "permission": "bash", "patterns": ["make"],
                                "metadata": {"command": "make"}}),
        ev("permission.replied", {"requestID": "per_1", "reply": "once"}),
        part("prt_t", "msg_a", "tool", tool="bash",
             state={"status": "completed", "input": {"command": "make"}, "output": "ok\n"}),
        part("prt_a", "msg_a", "text", text="Looking. Done."),
        ev("session.error", {"error": {"name": "APIError", "data": {"message": "rate limited"}}}),
    ])
    assert [(m.role, m.text) for m in msgs] == [
        ("user", "fix the build"), ("assistant", "Looking. Done."), ("tool", "make"), ("permission", "make"),
        ("system", "error: rate limited")]
    tool, perm = msgs[2], msgs[3]
    assert (tool.tool, tool.status, tool.output) == ("bash", "completed", "ok\n")
    assert (perm.approval_id, perm.tool, perm.reply, perm.patterns) == ("per_1", "bash", "once", ["make"])


def test_role_learned_after_the_part_and_hostile_text_kept_as_data():
    msgs = build([part("prt_1", "msg_1", "text", text="<script>x</script>"),
                  ev("message.updated", {"info": {"id": "msg_1", "role": "user"}})])
    assert [(m.role, m.text) for m in msgs] == [("user", "<script>x</script>")]  # escaped by the template


def test_tool_error_long_output_and_junk_events():
    long = "x" * (OUTPUT_CHARS + 50)
    msgs = build([
        part("prt_e", "msg_a", "tool", tool="edit", state={"status": "error", "input": {"filePath": "a.py"},
                                                          "error": "no such file"}),
        part("prt_l", "msg_a", "tool", tool="read", state={"status": "completed", "input": {}, "output": long}),
        ev("message.part.updated", {"part": "not a mapping"}),
        ev("message.part.delta", {"partID": 5, "delta": None}),
        ev("permission.asked", {"permission": "bash"}),  # no id: nothing to answer
        {"type": None, "data": []},
        part("prt_syn", "msg_a", "text", text="hidden", synthetic=True),
    ])
    assert [(m.tool, m.status) for m in msgs] == [("edit", "error"), ("read", "completed")]
    assert msgs[0].output == "no such file" and msgs[0].text == "a.py"
    assert msgs[1].output.startswith("x" * 100) and "50 more characters" in msgs[1].output
