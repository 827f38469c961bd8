"""The supervisor's one LISTEN connection (halswarm.store.pg_listen.PgListener) over scripted connections,
no database: payloads go to the subscribers of their channel only (and, for those that ask, not the
supervisor's own), a failing subscriber does not stop the others, every subscriber is woken with an
empty payload on each (re)connection, a lost connection is re-opened with a doubling backoff and said
once per outage, a channel subscribed while connected is LISTENed on the live connection; and the
readiness component it gives (`ok`, `degraded` while down, which /readyz still counts as ready)."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from halswarm.store import pg_listen
from halswarm.store.pg_listen import PgListener
from halswarm.supervisor.features.health.api import readyz
from halswarm.supervisor.features.health.service import listen_component
from tests.support.waiting import on_loop

pytestmark = pytest.mark.timeout(30)

OWN_PID, OTHER_PID = 100, 200


class FakeConn:
    """An autocommit AsyncConnection as the listener uses it: execute (LISTEN), notifies, close."""

    def __init__(self, pid: int = OWN_PID, *, fail_listen: bool = False) -> None:
        self.info = SimpleNamespace(backend_pid=pid)
        self.fail_listen = fail_listen
        self.listened: list[str] = []
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    async def execute(self, sql: str) -> None:
        if self.fail_listen:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        self.listened.append(sql)

    async def notifies(self, timeout: float | None = None) -> Any:
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def send(self, channel: str, payload: str, pid: int = OTHER_PID) -> None:
        self.queue.put_nowait(SimpleNamespace(channel=channel, payload=payload, pid=pid))

    def drop(self) -> None:
        self.queue.put_nowait(psycopg.OperationalError("terminating connection due to administrator command"))

    async def close(self) -> None:
        self.closed = True


class Script:
    """Connections handed out in order; an exception in the list is a failed connect."""

    def __init__(self, *items: Any) -> None:
        self.items = list(items)
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        item = self.items.pop(0) if self.items else OSError("connection refused")
        if isinstance(item, BaseException):
            raise item
        return item


def make(script: Script, **kw: Any) -> PgListener:
    return PgListener(connect=script, backoff=kw.pop("backoff", (0.001, 0.004)), apply_sec=kw.pop("apply_sec", 0.01),
                      **kw)


async def test_payloads_go_to_their_channels_subscribers_and_own_ones_only_where_wanted() -> None:
    conn = FakeConn()
    lis = make(Script(conn))
    got: dict[str, list[str]] = {"fwd": [], "tail": [], "fwd2": []}
    lis.subscribe("hal_command_forwards", got["fwd"].append)
    lis.subscribe("hal_command_forwards", got["fwd2"].append)
    lis.subscribe("hal_events", got["tail"].append, own=False)
    await lis.start()
    try:
        await on_loop(lambda: lis.connected, "connected")
        assert sorted(conn.listened) == ['LISTEN "hal_command_forwards"', 'LISTEN "hal_events"']
        # Connected: every subscriber is woken once with an empty payload (catch up on what was missed).
        await on_loop(lambda: all(v == [""] for v in got.values()), "the wake-up on connection")
        conn.send("hal_events", "41")
        conn.send("hal_events", "42", pid=OWN_PID)  # this supervisor's own: not for the tail
        conn.send("hal_command_forwards", "", pid=OWN_PID)  # own forwards wake forwarding (it may hold the node)
        conn.send("other_channel", "x")
        await on_loop(lambda: len(got["fwd2"]) == 2, "the forwards notification")
        await on_loop(lambda: lis.received == 3, "three handed over")
        assert got == {"fwd": ["", ""], "fwd2": ["", ""], "tail": ["", "41"]}
        assert lis.connects == 1 and lis.channels == ["hal_command_forwards", "hal_events"]
    finally:
        await lis.stop()
    assert conn.closed


async def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    conn = FakeConn()
    lis = make(Script(conn))
    got: list[str] = []

    def broken(_payload: str) -> None:
        raise RuntimeError("boom")

    lis.subscribe("hal_events", broken)
    lis.subscribe("hal_events", got.append)
    await lis.start()
    try:
        await on_loop(lambda: got == [""], "woken")
        conn.send("hal_events", "7")
        await on_loop(lambda: got == ["", "7"], "the second subscriber served")
        assert lis.connected and lis.connects == 1  # the connection stays
        assert any("a subscriber of hal_events failed" in r.getMessage() for r in caplog.records)
    finally:
        await lis.stop()


async def test_a_lost_connection_comes_back_with_a_backoff_said_once_and_wakes_everyone(
        caplog: pytest.LogCaptureFixture) -> None:
    first, second = FakeConn(), FakeConn(pid=101)
    failure = OSError("connection refused")
    script = Script(first, failure, psycopg.OperationalError("the database system is starting up"),
                    FakeConn(fail_listen=True), second)
    waits: list[float] = []

    async def sleep(delay: float) -> None:  # records the backoff; does not wait it
        waits.append(delay)
        await asyncio.sleep(0)

    lis = make(script, sleep=sleep)
    changes: list[bool] = []
    lis.on_change = changes.append
    got: list[str] = []
    lis.subscribe("hal_command_forwards", got.append)
    caplog.set_level(logging.INFO, logger=pg_listen.__name__)
    await lis.start()
    try:
        await on_loop(lambda: lis.connected and got == [""], "first connection")
        assert lis.down_since is None
        first.drop()
        await on_loop(lambda: lis.connects == 2 and lis.connected, "connected again", interval=0.001)
        # Three failed attempts (refused, starting up, LISTEN failing) between: waits doubling up to the cap.
        assert waits == [0.001, 0.002, 0.004, 0.004]
        assert script.calls == 5 and first.closed
        assert changes == [True, False, True]
        assert got == ["", ""]  # woken again once back: what was sent meanwhile is read now
        lost = [r.getMessage() for r in caplog.records if "LISTEN connection lost" in r.getMessage()]
        assert lost == ["LISTEN connection lost (terminating connection due to administrator command); "
                        "polling until it is back"]
        up = [r.getMessage() for r in caplog.records if "LISTEN connection: listening on" in r.getMessage()]
        assert len(up) == 2 and "hal_command_forwards" in up[0]
        second.send("hal_command_forwards", "")
        await on_loop(lambda: got == ["", "", ""], "served on the new connection")
    finally:
        await lis.stop()


async def test_down_from_the_start_is_degraded_with_the_reason() -> None:
    lis = make(Script(OSError("connection refused")), backoff=(30.0, 30.0))
    lis.subscribe("hal_events", lambda _p: None)
    await lis.start()
    try:
        await on_loop(lambda: lis.last_error == "connection refused", "the failure recorded")
        comp = listen_component(lis)
        assert comp["status"] == "degraded" and comp["channels"] == ["hal_events"] and comp["connects"] == 0
        assert "connection refused" in comp["detail"] and "polling" in comp["detail"]
        assert lis.down_since is not None and not lis.connected
    finally:
        await lis.stop()


async def test_a_channel_subscribed_while_connected_is_listened_on_the_live_connection() -> None:
    conn = FakeConn()
    lis = make(Script(conn))
    early: list[str] = []
    late: list[str] = []
    lis.subscribe("hal_events", early.append)
    await lis.start()
    try:
        await on_loop(lambda: lis.connected and early == [""], "connected")
        lis.subscribe("hal_command_forwards", late.append)
        await on_loop(lambda: 'LISTEN "hal_command_forwards"' in conn.listened, "the new channel LISTENed")
        await on_loop(lambda: late == [""], "the new subscriber woken")
        conn.send("hal_command_forwards", "")
        await on_loop(lambda: late == ["", ""], "its notification")
        assert early == [""] and lis.connects == 1  # the others were not woken again, no reconnection
        lis.unsubscribe("hal_command_forwards", late.append)
        assert lis.channels == ["hal_events"]
    finally:
        await lis.stop()


def test_channel_names_are_checked() -> None:
    lis = PgListener("")
    for bad in ("", 'x"; DROP TABLE events; --', "a b"):
        with pytest.raises(ValueError):
            lis.subscribe(bad, lambda _p: None)


class FakeHealth:
    def __init__(self, components: dict[str, dict[str, Any]]) -> None:
        self.components = components

    async def readiness(self) -> dict[str, dict[str, Any]]:
        return self.components


async def test_readyz_counts_degraded_as_ready_and_error_as_not() -> None:
    ok = {"database": {"status": "ok"}, "listen": {"status": "degraded", "detail": "down"}}
    response = await readyz(FakeHealth(ok))  # type: ignore[arg-type]
    assert response.status_code == 200 and json.loads(bytes(response.body))["status"] == "ok"
    bad = ok | {"database": {"status": "error", "error": "gone"}}
    response = await readyz(FakeHealth(bad))  # type: ignore[arg-type]
    body = json.loads(bytes(response.body))
    assert response.status_code == 503 and body["error"] == "not ready: database"


def test_the_component_when_up() -> None:
    lis = SimpleNamespace(connected=True, channels=["hal_command_forwards", "hal_events"], connects=3,
                          down_since=None, last_error=None)
    assert listen_component(lis) == {"status": "ok", "channels": ["hal_command_forwards", "hal_events"],
                                     "connects": 3}
