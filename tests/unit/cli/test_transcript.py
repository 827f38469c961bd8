"""The transcript renderer, fed with real opencode captures (tests/fixtures/opencode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from halswarm.agent.opencode_events import parse_global_stream
from halswarm.cli.transcript import TranscriptRenderer, render

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "opencode"


def api_events(name: str) -> list[dict[str, Any]]:
    """A capture as the supervisor API returns it: type + properties as data."""
    raw = (FIXTURES / name).read_bytes()
    return [{"type": ev.type, "data": ev.properties, "session_id": ev.session_id} for ev in parse_global_stream(raw)]


def test_text_reply_printed_once_in_final_version() -> None:
    lines = render(api_events("sse2_global.raw"))
    assert lines[:3] == ["> hello opencode", "FAKE-REPLY: hello opencode ", "-- idle --"]
    assert sum("FAKE-REPLY" in line for line in lines) == 1  # 3 deltas + 2 part updates -> one line


def test_errors_and_idle_transitions() -> None:
    lines = render(api_events("sse2_global.raw"))
    assert "-- error: MessageAbortedError: Aborted --" in lines
    assert "-- error: APIError: Incorrect API key provided --" in lines
    assert lines.count("-- idle --") == 3  # repeated idle status/idle events collapse per turn


def test_tool_call_with_permission_and_output() -> None:
    lines = render(api_events("sse4_global.raw"))
    assert lines == [
        "> RUNTOOL now",
        "?? permission asked: bash echo hi-from-tool (id per_21c226e28001w0WDErRBZSdZ76)",
        "?? permission per_21c226e28001w0WDErRBZSdZ76 replied: once",
        "[tool bash completed] echo hi-from-tool",
        "    | hi-from-tool",
        "TOOL-RESULT-SEEN ",
        "-- idle --",
    ]


def test_incremental_tool_prints_only_when_finished() -> None:
    renderer = TranscriptRenderer()
    out: list[list[str]] = [renderer.feed(e) for e in api_events("sse4_global.raw")]
    tool_lines = [i for i, lines in enumerate(out) if any(line.startswith("[tool ") for line in lines)]
    assert len(tool_lines) == 1  # pending, running x3, completed -> one block, at completion
    assert renderer.flush() == []


def test_retry_and_multiline_error_are_one_line_each() -> None:
    lines = render(api_events("sse_global.raw"))
    assert any(line.startswith("-- retrying (attempt 1): Cannot connect to API") for line in lines)
    assert all("\n" not in line for line in lines)
    assert not any("SessionPrompt.getModel" in line for line in lines)


def test_running_tool_is_flushed_with_its_status_and_output_truncated() -> None:
    output = "\n".join(f"line {i}" for i in range(30))
    events = [
        {"type": "message.part.updated", "data": {"part": {
            "id": "prt_1", "messageID": "msg_1", "type": "tool", "tool": "read",
            "state": {"status": "running", "input": {"filePath": "/etc/hosts"}, "metadata": {"output": output}}}}},
    ]
    lines = render(events)
    assert lines[0] == "[tool read running] /etc/hosts"
    assert lines[1] == "    | line 0"
    assert lines[-1] == "    | ... (20 more lines)"


def test_control_characters_cannot_reach_the_terminal() -> None:
    events = [{"type": "message.part.updated", "data": {"part": {
        "id": "prt_x", "messageID": "msg_a", "type": "text", "text": "ok\x1b]0;pwned\x07\x1b[2J done",
        "time": {"start": 1, "end": 2}}}}]
    assert render(events) == ["ok]0;pwned[2J done"]


def test_unknown_and_malformed_events_are_ignored() -> None:
    assert render([{"type": "plugin.added"}, {"type": None}, {"data": "x"},
                   {"type": "message.part.updated", "data": {"part": "nope"}}]) == []
