"""`halctl nodes ...` and `halctl sessions ...` against the fake supervisor."""

from __future__ import annotations

import json

import httpx

from tests.fakes.supervisor_api import FakeSupervisor, err, ok

NODES = [
    {
        "id": "node-a", "hostname": "worker-a", "status": "online", "version": "0.1.0", "projects": ["api", "web"],
        "resources": {"cpu_percent": 12.5, "ram_used_mb": 2048, "ram_total_mb": 8192, "disk_used_gb": 40.2,
                      "disk_total_gb": 100},
        "last_heartbeat": "2025-01-02T03:04:05.123Z", "connected_at": 1735786800.0,
        "auth": {"claude_code": "authenticated", "codex": "unauthenticated"}, "credential_version": 3,
    },
    {"id": "node-b", "hostname": "worker-b", "status": "offline", "projects": [], "resources": {},
     "last_heartbeat": None, "connected_at": None},
]

SESSION = {
    "id": "ses-1", "node_id": "node-a", "project": "api", "status": "running", "model": "anthropic/claude-sonnet",
    "tokens": {"input": 1200, "output": 300, "total": 1500}, "compaction_count": 2,
    "current_task": "Fix flaky test", "cost_usd": 0.123456, "error": None, "title": "t",
    "started_at": "2025-01-02T03:00:00.000Z", "last_activity": 1735787045.0,
}


# -- nodes -----------------------------------------------------------------------------------------
def test_nodes_list_table(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/nodes", NODES)
    result = halctl("nodes", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "STATUS", "PROJECTS", "LAST_HEARTBEAT", "CONNECTED_AT"]
    assert lines[1].split() == ["node-a", "worker-a", "online", "api,web", "2025-01-02", "03:04:05",
                                "2025-01-02", "03:00:00"]
    assert lines[2].split() == ["node-b", "worker-b", "offline", "-", "-", "-"]
    assert len(lines) == 3
    assert "\x1b[" not in result.stdout  # no colour in a pipe
    assert all(line == line.rstrip() for line in lines)


def test_nodes_get_fields(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/nodes/node-a", lambda _r: ok(NODES[0]))
    result = halctl("nodes", "get", "node-a")
    assert result.exit_code == 0, result.stderr
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1].strip() for line in result.stdout.splitlines()[1:]}
    assert rows["HOSTNAME"] == "worker-a"
    assert rows["CPU"] == "12.5%"
    assert rows["RAM"] == "2048 / 8192 MB"
    assert rows["DISK"] == "40.2 / 100 GB"
    assert rows["AUTH.CLAUDE_CODE"] == "authenticated"
    assert rows["LAST_HEARTBEAT"] == "2025-01-02 03:04:05"


def test_nodes_get_json_is_data(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/nodes/node-a", lambda _r: ok(NODES[0]))
    assert halctl("-o", "json", "nodes", "get", "node-a").json() == NODES[0]


# -- sessions list/get -------------------------------------------------------------------------------
def test_sessions_list_filters_and_columns(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/sessions", lambda _r: ok([SESSION], meta={"total": 7, "limit": 1, "offset": 0}))
    result = halctl("sessions", "list", "--project", "api", "--node-id", "node-a", "--status", "RUNNING",
                    "--limit", "1")
    assert result.exit_code == 0, result.stderr
    params = dict(fake.last("/api/v1/sessions").url.params)
    assert params == {"project": "api", "node_id": "node-a", "status": "running", "limit": "1"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NODE_ID", "PROJECT", "STATUS", "TOKENS", "COST", "STARTED_AT"]
    assert lines[1].split() == ["ses-1", "node-a", "api", "running", "1500", "0.1235", "2025-01-02", "03:00:00"]
    assert "showing 1 of 7" in result.stderr


def test_sessions_list_no_filters_sends_no_params(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.reply("GET", "/api/v1/sessions", [])
    result = halctl("sessions", "list")
    assert result.exit_code == 0
    assert dict(fake.last("/api/v1/sessions").url.params) == {}
    assert result.stdout.split() == ["ID", "NODE_ID", "PROJECT", "STATUS", "TOKENS", "COST", "STARTED_AT"]


def test_sessions_get_fields(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/sessions/ses-1", lambda _r: ok(SESSION))
    result = halctl("sessions", "get", "ses-1")
    assert result.exit_code == 0, result.stderr
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1].strip() for line in result.stdout.splitlines()[1:]}
    assert rows["TOKENS_INPUT"] == "1200"
    assert rows["TOKENS_OUTPUT"] == "300"
    assert rows["TOKENS_TOTAL"] == "1500"
    assert rows["MODEL"] == "anthropic/claude-sonnet"
    assert rows["COMPACTION_COUNT"] == "2"
    assert rows["CURRENT_TASK"] == "Fix flaky test"
    assert rows["COST_USD"] == "0.1235"
    assert rows["LAST_ACTIVITY"] == "2025-01-02 03:04:05"


def test_sessions_get_unknown(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/sessions/nope", lambda _r: err(404, "NOT_FOUND", "session not found"))
    result = halctl("sessions", "get", "nope")
    assert (result.exit_code, result.stderr) == (1, "error: not found: session nope\n")


# -- sessions actions -----------------------------------------------------------------------------
def test_sessions_start_json_prints_object_with_id(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    created = {**SESSION, "id": "ses-new", "status": "running"}
    fake.route("POST", "/api/v1/sessions", lambda _r: ok(created, status=201))
    result = halctl("--output", "json", "sessions", "start", "api", "--prompt", "do it", "--model", "m1")
    assert result.exit_code == 0, result.stderr
    assert result.json()["id"] == "ses-new"
    assert fake.body(fake.last("/api/v1/sessions")) == {"project": "api", "prompt": "do it", "model": "m1"}


def test_sessions_start_table_prints_id(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/sessions", lambda _r: ok({"id": "ses-new", "node_id": "node-a"}, status=201))
    result = halctl("sessions", "start", "api")
    assert (result.exit_code, result.stdout) == (0, "ses-new\n")
    assert fake.body(fake.last("/api/v1/sessions")) == {"project": "api"}


def test_sessions_start_failure(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/sessions",
               lambda _r: err(409, "CONFLICT", "no online node found for project api"))
    result = halctl("sessions", "start", "api")
    assert result.exit_code == 1
    assert result.stderr == "error: no online node found for project api (CONFLICT, HTTP 409)\n"


def _result(status: str = "success", output: object = "", error: str | None = None) -> httpx.Response:
    return ok({"command_id": "cmd-1", "status": status, "output": output, "error": error})


def test_sessions_prompt_sends_message(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/sessions/ses-1/prompt", lambda _r: _result())
    result = halctl("sessions", "prompt", "ses-1", "please", "continue")
    assert result.exit_code == 0, result.stderr
    assert fake.body(fake.last()) == {"message": "please continue"}
    assert result.stdout == "prompt session ses-1: ok\n"


def test_sessions_prompt_from_stdin(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/sessions/ses-1/prompt", lambda _r: _result())
    result = halctl("sessions", "prompt", "ses-1", "-", input="line one\nline two\n")
    assert result.exit_code == 0, result.stderr
    assert fake.body(fake.last()) == {"message": "line one\nline two\n"}


def test_sessions_actions_hit_their_routes(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    for verb in ("resume", "restart", "handover"):
        fake.route("POST", f"/api/v1/sessions/ses-1/{verb}", lambda _r: _result(output={"new_session_id": "s2"}))
        result = halctl("sessions", verb, "ses-1")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith(f"{verb} session ses-1: ok\n")
        assert fake.last().method == "POST"
    fake.route("DELETE", "/api/v1/sessions/ses-1", lambda _r: _result())
    result = halctl("sessions", "kill", "ses-1")
    assert (result.exit_code, result.stdout) == (0, "kill session ses-1: ok\n")
    assert fake.last().method == "DELETE"


def test_command_failure_exits_1_with_error(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("DELETE", "/api/v1/sessions/ses-1", lambda _r: _result("failure", error="target node offline"))
    result = halctl("sessions", "kill", "ses-1")
    assert result.exit_code == 1
    assert result.stderr == "error: kill session ses-1 failed: target node offline [command cmd-1]\n"
    fake.route("POST", "/api/v1/sessions/ses-1/restart", lambda _r: _result("timeout", error="timed out after 30s"))
    result = halctl("-o", "json", "sessions", "restart", "ses-1")
    assert result.exit_code == 1
    assert result.json()["status"] == "timeout"
    assert "failed (timeout): timed out after 30s" in result.stderr


def test_accepted_command_is_not_a_failure(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/sessions/ses-1/handover",
               lambda _r: ok({"command_id": "cmd-9", "status": "pending", "output": None, "error": None}, 202))
    result = halctl("sessions", "handover", "ses-1")
    assert result.exit_code == 0
    assert "accepted, still running (command cmd-9)" in result.stdout


def test_ids_are_quoted_in_paths(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    halctl("sessions", "get", "a/b")
    assert fake.last().url.raw_path == b"/api/v1/sessions/a%2Fb"


# -- logs ----------------------------------------------------------------------------------------------
def _event(seq: int, ts: float, kind: str = "message.updated", **data: object) -> dict[str, object]:
    return {"node_id": "node-a", "seq": seq, "event_id": f"ev-{seq}", "session_id": "ses-1", "project": "api",
            "type": kind, "data": data or {"n": seq}, "timestamp": ts}


def test_logs_oldest_first(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    events = [_event(3, 1735787003.0), _event(1, 1735787001.0), _event(2, 1735787002.0)]
    fake.route("GET", "/api/v1/events", lambda _r: ok(events))
    result = halctl("sessions", "logs", "ses-1", "--limit", "3", "--raw")
    assert result.exit_code == 0, result.stderr
    assert dict(fake.last("/api/v1/events").url.params) == {"session_id": "ses-1", "limit": "3", "order": "desc"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIMESTAMP", "TYPE", "NODE_ID", "SEQ", "DATA"]
    assert [line.split()[4] for line in lines[1:]] == ["1", "2", "3"]
    as_json = halctl("-o", "json", "sessions", "logs", "ses-1")
    assert [e["seq"] for e in as_json.json()] == [1, 2, 3]


def test_logs_asks_for_the_newest_page_without_offset(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    # meta.total may be a capped estimate (issue 22): the newest page is asked for directly, never by offset
    all_events = [_event(i, 1735787000.0 + i) for i in range(1, 11)]

    def page(request: httpx.Request) -> httpx.Response:
        assert "offset" not in request.url.params
        limit = int(request.url.params["limit"])
        newest = list(reversed(all_events))[:limit] if request.url.params["order"] == "desc" else all_events[:limit]
        return ok(newest, meta={"total": 10, "total_is_estimate": True, "limit": limit, "offset": 0})

    fake.route("GET", "/api/v1/events", page)
    result = halctl("-o", "json", "sessions", "logs", "ses-1", "--limit", "3")
    assert [e["seq"] for e in result.json()] == [8, 9, 10]


def test_logs_follow_streams_reconnects_and_stops_on_ctrl_c(halctl, fake: FakeSupervisor, sse_stream) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/events", lambda _r: ok([_event(1, 1735787001.0)]))
    calls: list[dict[str, str]] = []
    streams = [
        # a finite stream: keepalive, a replay of what we already printed, two new events, then EOF
        lambda: sse_stream(": keepalive\n\n", _event(1, 1735787001.0), _event(2, 1735787002.0),
                           "event: message\n", _event(3, 1735787003.0)),
        # the next one breaks mid-way
        lambda: sse_stream(_event(4, 1735787004.5), fail_after=True),
    ]

    def stream(request: httpx.Request) -> httpx.Response:
        calls.append(dict(request.url.params))
        if streams:
            return streams.pop(0)()
        raise KeyboardInterrupt  # the operator presses Ctrl-C while we reconnect

    fake.route("GET", "/api/v1/events/stream", stream)
    result = halctl("sessions", "logs", "ses-1", "--follow", "--raw")
    assert result.exit_code == 0, result.stderr
    lines = [line.split(None, 3) for line in result.stdout.splitlines()]
    assert [f"{date} {time}" for date, time, *_ in lines] == [
        "2025-01-02 03:03:21", "2025-01-02 03:03:22", "2025-01-02 03:03:23", "2025-01-02 03:03:24"]
    assert lines[0][2] == "message.updated"
    assert json.loads(lines[0][3]) == {"n": 1}
    assert calls[0] == {"session_id": "ses-1", "since": "1735787001.0"}
    assert calls[1] == {"session_id": "ses-1", "since": "1735787003.0"}
    assert calls[2] == {"session_id": "ses-1", "since": "1735787004.5"}
    assert "reconnecting" in result.stderr
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    assert fake.last("/api/v1/events/stream").headers["accept"] == "text/event-stream"


def test_logs_follow_json_lines(halctl, fake: FakeSupervisor, sse_stream) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/events", lambda _r: ok([]))
    streams = [lambda: sse_stream(_event(5, 1735787005.0))]

    def stream(_request: httpx.Request) -> httpx.Response:
        if streams:
            return streams.pop(0)()
        raise KeyboardInterrupt

    fake.route("GET", "/api/v1/events/stream", stream)
    result = halctl("-o", "json", "sessions", "logs", "ses-1", "-f")
    assert result.exit_code == 0
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [5]
    first_stream = next(r for r in fake.requests if r.url.path == "/api/v1/events/stream")
    assert dict(first_stream.url.params) == {"session_id": "ses-1"}  # nothing seen yet: no `since`


def _part(seq: int, ts: float, part: dict[str, object]) -> dict[str, object]:
    return _event(seq, ts, "message.part.updated", part={"messageID": "msg-a", **part})


TOOL_RUNNING = {"id": "prt-t", "type": "tool", "tool": "bash",
                "state": {"status": "running", "input": {"command": "make test"}}}
TOOL_DONE = {**TOOL_RUNNING, "state": {"status": "completed", "input": {"command": "make test"}, "output": "ok\n"}}


def test_logs_default_is_the_transcript(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    events = [
        _event(1, 1735787001.0, info={"id": "msg-u", "role": "user"}),
        _event(2, 1735787002.0, "message.part.updated", part={"id": "prt-u", "messageID": "msg-u", "type": "text",
                                                              "text": "run the tests"}),
        _part(3, 1735787003.0, {"id": "prt-a", "type": "text", "text": "Run"}),
        _part(4, 1735787004.0, {"id": "prt-a", "type": "text", "text": "Running them.", "time": {"end": 1}}),
        _part(5, 1735787005.0, TOOL_RUNNING),
        _part(6, 1735787006.0, TOOL_DONE),
        _event(7, 1735787007.0, "session.idle", sessionID="ses-1"),
    ]
    fake.route("GET", "/api/v1/events", lambda _r: ok(events))
    result = halctl("sessions", "logs", "ses-1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "> run the tests", "Running them.", "[tool bash completed] make test", "    | ok", "-- idle --"]
    as_json = halctl("-o", "json", "sessions", "logs", "ses-1")  # scripts keep getting the events
    assert [e["seq"] for e in as_json.json()] == [1, 2, 3, 4, 5, 6, 7]


def test_logs_follow_renders_each_part_once(halctl, fake: FakeSupervisor, sse_stream) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/events", lambda _r: ok([_part(1, 1735787001.0, TOOL_RUNNING)]))
    streams = [lambda: sse_stream(_part(1, 1735787001.0, TOOL_RUNNING), _part(2, 1735787002.0, TOOL_RUNNING),
                                  _part(3, 1735787003.0, TOOL_DONE), _part(4, 1735787004.0, TOOL_DONE),
                                  _part(5, 1735787005.0, {"id": "prt-b", "type": "text", "text": "half"}))]

    def stream(_request: httpx.Request) -> httpx.Response:
        if streams:
            return streams.pop(0)()
        raise KeyboardInterrupt

    fake.route("GET", "/api/v1/events/stream", stream)
    result = halctl("sessions", "logs", "ses-1", "--follow")
    assert result.exit_code == 0, result.stderr
    # the tool prints once, when completed; the unfinished text part is flushed on Ctrl-C
    assert result.stdout.splitlines() == ["[tool bash completed] make test", "    | ok", "half"]


def test_logs_follow_auth_failure_exits_4(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/events", lambda _r: ok([]))
    fake.route("GET", "/api/v1/events/stream", lambda _r: err(401, "AUTH_REQUIRED", "token revoked"))
    result = halctl("sessions", "logs", "ses-1", "--follow")
    assert result.exit_code == 4


def test_output_option_after_the_subcommand(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("POST", "/api/v1/sessions", lambda _r: ok({**SESSION, "id": "ses-new"}, status=201))
    result = halctl("sessions", "start", "api", "--output", "json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["id"] == "ses-new"
    fake.reply("GET", "/api/v1/nodes", NODES)
    assert halctl("nodes", "list", "-o", "yaml").stdout.startswith("- id: node-a")


def test_websocket_port_gets_a_hint(halctl, fake: FakeSupervisor) -> None:  # type: ignore[no-untyped-def]
    fake.route("GET", "/api/v1/nodes", lambda _r: httpx.Response(426, text="Upgrade Required"))
    result = halctl("nodes", "list")
    assert result.exit_code == 1
    assert "WebSocket port" in result.stderr and "8421" in result.stderr
