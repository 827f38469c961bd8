"""LISTEN on a PostgreSQL channel from the event loop (issue 21: other supervisors' commits wake streams).

One asyncio psycopg connection of its own (`application_name` `hal-supervisor-events`), autocommit,
with the same keepalives as the leader lock's, so a vanished server is noticed in about 10 s. A lost
connection is re-opened with a backoff; notifications are only a wake-up (the listeners also poll), so
nothing is lost while it is down but latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_SEC = 5
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


class PgListener:
    def __init__(self, conninfo: str, channel: str, *, password: str | None = None) -> None:
        self._conninfo = conninfo
        self._password = password
        self.channel = channel
        self.connected = False
        self.received = 0  # notifications from other sessions handed over

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        kw: dict[str, Any] = {"autocommit": True, "application_name": "hal-supervisor-events", "keepalives": 1,
                              "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                              "tcp_user_timeout": 10000}
        if "connect_timeout" not in self._conninfo:
            kw["connect_timeout"] = CONNECT_TIMEOUT_SEC
        if self._password:
            kw["password"] = self._password
        return await psycopg.AsyncConnection.connect(self._conninfo, **kw)

    async def run(self, on_notify: Callable[[str], None]) -> None:
        """Forever (until cancelled): hand the payload of every notification another session sends on
        the channel to `on_notify` (on the event loop), re-connecting after a failure."""
        backoff = BACKOFF_MIN
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self._connect()
                await conn.execute(f'LISTEN "{self.channel}"')
                own = conn.info.backend_pid
                if not self.connected:
                    log.info("event stream: listening for other supervisors' commits on %s", self.channel)
                self.connected, backoff = True, BACKOFF_MIN
                on_notify("")  # (re)connected: whatever was sent meanwhile is read by the next probe
                async for n in conn.notifies():
                    if n.pid != own:
                        self.received += 1
                        on_notify(n.payload)
            except (psycopg.Error, OSError) as exc:
                if self.connected:
                    log.warning("event stream: LISTEN connection lost (%s); polling until it is back",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                self.connected = False
            finally:
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:  # already broken: nothing to close cleanly
                        pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
