"""The pure parts of the collection's ansible-rulebook event source (`halswarm.ops.event_stream`): the SSE
parser and its bounds, the type filter, the backoff, the state file and the argument checks."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

PLUGIN = (Path(__file__).resolve().parents[2] /
          "collections/ansible_collections/halswarm/ops/extensions/eda/plugins/event_source/event_stream.py")


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("halswarm_eda_event_stream_unit", PLUGIN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


es = load_plugin()


def test_parser_yields_id_and_data_across_arbitrary_chunk_boundaries() -> None:
    stream = b": connected\n\nid: 7\ndata: {\"a\": 1}\n\n: keepalive\n\nid: 8\r\ndata: x\r\ndata: y\r\n\r\n"
    for size in (1, 2, 5, len(stream)):
        parser = es.SseParser(1024)
        got = []
        for i in range(0, len(stream), size):
            got += parser.feed(stream[i:i + size])
        assert got == [("7", '{"a": 1}'), ("8", "x\ny")], size


def test_parser_bounds_a_line_without_end_and_an_oversized_event() -> None:
    with pytest.raises(es.StreamError, match="line is longer than 64 bytes"):
        es.SseParser(64).feed(b"data: " + b"x" * 100)
    parser = es.SseParser(64)
    with pytest.raises(es.StreamError, match="event is larger than 64 bytes"):
        for _ in range(10):
            parser.feed(b"data: " + b"x" * 20 + b"\n")


@pytest.mark.parametrize(("event_type", "patterns", "expected"), [
    ("node.offline", ["node.offline"], True),
    ("node.offline", ["node.*"], True),
    ("node.offline", ["node.off"], False),
    ("session.idle", ["node.*", "session.idle"], True),
    ("nodes.x", ["node.*"], False),
])
def test_type_filter_matches_the_supervisor_semantics(event_type: str, patterns: list[str], expected: bool) -> None:
    assert es.type_matches(event_type, patterns) is expected


def test_backoff_grows_exponentially_within_bounds() -> None:
    assert es.backoff_delay(0, 1, 30, rand=lambda: 0.0) == 1
    assert es.backoff_delay(3, 1, 30, rand=lambda: 1.0) == 8
    assert es.backoff_delay(3, 1, 30, rand=lambda: 0.0) == 4
    assert es.backoff_delay(100, 1, 30, rand=lambda: 1.0) == 30
    assert all(1 <= es.backoff_delay(n, 1, 30) <= 30 for n in range(50))


def test_query_string_sends_one_type_to_the_server_and_filters_several_here() -> None:
    assert es.query_string(["node.*"], "n1", None) == "node_id=n1&type=node.%2A"
    assert es.query_string(["a", "b"], None, "p") == "project=p"


def test_state_file_is_replaced_atomically_and_read_back(tmp_path: Path) -> None:
    state = tmp_path / "last-id"
    assert es.read_state(str(state)) is None
    es.write_state(str(state), 41)
    es.write_state(str(state), 42)
    assert es.read_state(str(state)) == 42
    assert sorted(os.listdir(tmp_path)) == ["last-id"]
    state.write_text("garbage")
    with pytest.raises(es.StreamError, match="not an event id"):
        es.read_state(str(state))


@pytest.mark.parametrize(("args", "message"), [
    ({"token": "t"}, "url: an http:// or https:// URL"),
    ({"url": "ftp://x", "token": "t"}, "url: an http:// or https:// URL"),
    ({"url": "http://x"}, "exactly one of token and token_file"),
    ({"url": "http://x", "token": "t", "token_file": "/f"}, "exactly one of token and token_file"),
    ({"url": "http://x", "token": "t", "reconnect_min": 5, "reconnect_max": 1}, "reconnect_min"),
    ({"url": "http://x", "token": "t", "reconnect_min": "soon"}, "reconnect_min: a number is required"),
    ({"url": "http://x", "token": "t", "idle_timeout": 0}, "idle_timeout: must be > 0"),
    ({"url": "http://x", "token": "t", "last_event_id": "-3"}, "last_event_id: not an event id"),
    ({"url": "http://x", "token": "t", "state_file": "/nonexistent-dir/last-id"}, "directory is missing"),
    ({"url": "https://x", "token": "t", "ca_file": "/nonexistent-ca.pem"}, "ca_file /nonexistent-ca.pem: cannot load"),
])
def test_bad_arguments_are_one_line_errors(args: dict[str, object], message: str) -> None:
    with pytest.raises(es.StreamError, match=message):
        es.Settings(args)


def test_settings_prefer_the_state_file_and_build_the_stream_url(tmp_path: Path) -> None:
    state = tmp_path / "s"
    base = {"url": "http://127.0.0.1:8421/", "token": "t", "state_file": str(state), "last_event_id": 5,
            "types": "node.offline"}
    assert es.Settings(base).last_id == 5
    es.write_state(str(state), 9)
    cfg = es.Settings(base)
    assert cfg.last_id == 9
    assert cfg.full_url == "http://127.0.0.1:8421/api/v1/events/stream?type=node.offline"


def test_token_file_is_read_at_each_connection_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    cfg = es.Settings({"url": "http://x", "token_file": str(token)})
    assert cfg.bearer() == "first"
    token.write_text("rotated\n")
    assert cfg.bearer() == "rotated"
    token.write_text("")
    with pytest.raises(es.StreamError, match="token_file: it is empty"):
        cfg.bearer()


def test_an_event_that_is_not_a_json_object_stops_the_source() -> None:
    cfg = es.Settings({"url": "http://x", "token": "t"})
    queue: asyncio.Queue[object] = asyncio.Queue()
    for data in ("not json", "[1, 2]"):
        with pytest.raises(es.StreamError, match="event 5 is not a JSON object"):
            asyncio.run(es._hand_over(cfg, queue, "5", data, None))
    assert queue.empty() and cfg.last_id is None


def test_an_unwritable_state_file_stops_the_source_instead_of_repeating_events(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "last-id"
    state.parent.mkdir()
    cfg = es.Settings({"url": "http://x", "token": "t", "state_file": str(state)})
    state.parent.rmdir()  # gone after the start
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def scenario() -> None:
        writer = es.StateWriter(str(state))
        await es._hand_over(cfg, queue, "7", '{"type": "node.offline"}', writer)
        with pytest.raises(es.StreamError, match="cannot write it"):
            await writer.close()  # the stop reports the failed write
        with pytest.raises(es.StreamError, match="cannot write it"):  # and no later event is handed over
            await es._hand_over(cfg, queue, "8", '{"type": "node.offline"}', writer)

    asyncio.run(scenario())
    assert queue.get_nowait() == {"type": "node.offline", "id": 7}
    assert queue.empty()


def test_state_writes_do_not_hold_the_hand_over_and_the_stop_writes_the_last_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy disk one fsync can take a second: events are handed over while a write runs, the ids
    that came meanwhile are folded into one next write, and a stop waits until the newest id is written."""
    import threading

    state = tmp_path / "last-id"
    cfg = es.Settings({"url": "http://x", "token": "t", "state_file": str(state)})
    queue: asyncio.Queue[object] = asyncio.Queue()
    release = threading.Event()
    real_write = es.write_state

    def slow_write(path: str, last_id: int) -> None:
        release.wait(30)  # the first write is held until every event was handed over
        real_write(path, last_id)

    async def scenario() -> es.StateWriter:
        writer = es.StateWriter(str(state))
        for i in range(1, 51):
            await es._hand_over(cfg, queue, str(i), '{"type": "node.offline"}', writer)
        assert queue.qsize() == 50, "the hand-over waited for a state write"
        assert writer.writes == 0
        release.set()
        await writer.close()
        return writer

    monkeypatch.setattr(es, "write_state", slow_write)
    writer = asyncio.run(scenario())
    assert state.read_text().strip() == "50"
    assert writer.writes <= 2, f"{writer.writes} writes: the ids handed over during a write were not folded"


def test_documentation_lists_exactly_the_arguments_the_source_reads() -> None:
    import re

    import yaml

    doc = yaml.safe_load(es.DOCUMENTATION)
    assert doc["name"] == "event_stream"
    source = PLUGIN.read_text()
    read = set(re.findall(r'args\.get\("(\w+)"', source)) | set(re.findall(r'_number\(args, "(\w+)"', source))
    read |= set(re.findall(r'args\["(\w+)"\]', source))
    assert set(doc["options"]) == read
    example = yaml.safe_load(es.EXAMPLES)
    assert set(example[0]["sources"][0]["halswarm.ops.event_stream"]) <= read


def test_a_cancelled_source_still_writes_its_last_id_before_it_ends(tmp_path: Path) -> None:
    """ansible-rulebook cancels the source at any await. A write still queued behind a busy worker when
    the cancellation arrives must not be dropped: the file would name an event before the last one handed
    over, and the next start would hand that event over again."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    state = tmp_path / "last-id"
    release = threading.Event()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        busy = loop.run_in_executor(None, release.wait, 30)  # the only worker is taken: the write queues
        writer = es.StateWriter(str(state))
        try:
            writer.note(42)
            task = asyncio.create_task(writer.close())
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.sleep(0.05)
            assert not task.done(), "the cancelled source ended before its state write"
        finally:
            release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        await busy

    asyncio.run(scenario())
    assert state.read_text().strip() == "42"
