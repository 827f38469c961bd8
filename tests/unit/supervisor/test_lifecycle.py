"""The supervisor's lifecycle: start in order, stop in reverse, a failed start stops what started, a
failing or hanging stop never keeps the rest running, illegal transitions raise."""

from __future__ import annotations

import asyncio

import pytest

from halswarm.supervisor.lifecycle import Lifecycle, LifecycleError, State


def _recorder(log: list[str], name: str, *, fail: bool = False, hang: bool = False):
    async def stop() -> None:
        log.append(f"stop {name}")
        if hang:
            await asyncio.sleep(3600)
        if fail:
            raise RuntimeError(f"{name} broke")

    def start() -> str:
        log.append(f"start {name}")
        return name

    return start, stop


async def test_stops_in_reverse_of_start() -> None:
    log: list[str] = []
    lc = Lifecycle()
    for name in ("writer", "hub", "policies"):
        assert await lc.start(name, *_recorder(log, name)) == name
    lc.running()
    assert lc.names == ["writer", "hub", "policies"]
    assert await lc.stop() == []
    assert log == ["start writer", "start hub", "start policies", "stop policies", "stop hub", "stop writer"]
    assert lc.state is State.STOPPED and lc.names == []


async def test_a_failed_start_leaves_only_what_started_to_stop() -> None:
    log: list[str] = []
    lc = Lifecycle()
    await lc.start("writer", *_recorder(log, "writer"))

    def broken() -> None:
        raise OSError("port in use")

    with pytest.raises(OSError):
        await lc.start("hub", broken, _recorder(log, "hub")[1])
    await lc.stop()
    assert log == ["start writer", "stop writer"]


async def test_failing_and_hanging_stops_do_not_keep_the_rest_running() -> None:
    log: list[str] = []
    lc = Lifecycle()
    await lc.start("writer", *_recorder(log, "writer"))
    start, stop = _recorder(log, "feed", hang=True)
    await lc.start("feed", start, stop, timeout=0.05)
    await lc.start("router", *_recorder(log, "router", fail=True))
    lc.running()
    assert await lc.stop() == ["router", "feed"]
    assert log[-1] == "stop writer"


async def test_illegal_transitions_raise() -> None:
    lc = Lifecycle()
    with pytest.raises(LifecycleError):
        lc.running()  # nothing is starting
    await lc.start("a", lambda: None, lambda: None)
    lc.running()
    with pytest.raises(LifecycleError):
        await lc.start("late", lambda: None, lambda: None)
    await lc.stop()
    assert await lc.stop() == []  # stopping twice is a no-op
    with pytest.raises(LifecycleError):
        lc.running()
