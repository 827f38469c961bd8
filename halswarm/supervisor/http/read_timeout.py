"""A request read deadline for the HTTP API: a client that trickles its headers or body is closed.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a request
takes to arrive: one header byte per second holds a connection (and its memory) forever. This
subclass of uvicorn's h11 protocol arms a timer when a connection opens and whenever bytes of a new
request arrive, and disarms it once the whole request (headers and body) has been read; if the timer
fires first, the connection is closed (HTTP 408 when nothing was answered yet).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT_SEC = 10.0
_DONE = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.SWITCHED_PROTOCOL, h11.ERROR)


class ReadTimeoutH11Protocol(H11Protocol):
    """h11 with a bound on the time from a request's first byte (or the connection) to its last byte."""

    read_timeout: float = DEFAULT_READ_TIMEOUT_SEC
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _DONE:
            self._disarm()  # request complete: from here the app (and keep-alive) own the connection
        elif self.conn.their_state is h11.SEND_BODY or self.conn.trailing_data[0]:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self.conn.their_state in _DONE:
            return
        log.info("HTTP client %s closed: request not received within %g s", _addr(self.client), self.read_timeout)
        if self.conn.our_state is h11.IDLE and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"connection: close\r\ncontent-length: 25\r\n\r\nrequest read timed out.\r\n")
        self.transport.close()


def read_timeout_protocol(seconds: float) -> type[ReadTimeoutH11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)` with this read timeout."""
    return type("ReadTimeoutH11Protocol", (ReadTimeoutH11Protocol,), {"read_timeout": float(seconds)})


def _addr(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
