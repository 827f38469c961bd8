"""opencode's ``GET /global/event`` stream: a pure parser plus a reconnecting consumer.

Wire format (reference/peers.md section 2): ``data: <json>\\n\\n`` records with no ``event:``/``id:``
lines. On ``/global/event`` each record is ``{"directory", "project", "payload": {"id", "type",
"properties"}}``; server-level records (``server.connected``, ``server.heartbeat``) carry no directory.
The stream also repeats state changes as ``payload.type == "sync"`` records (``syncEvent``), which are
duplicates of the plain events and are dropped here.

The parser (:class:`SSEParser`, :func:`parse_global_record`, :func:`parse_global_stream`) does no I/O.
:class:`GlobalEventStream` does the HTTP part and reconnects, with backoff, when the stream ends, the
server goes away or restarts on another port (the base URL is re-read on every attempt).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

SKIPPED_TYPES = frozenset({"sync", "server.heartbeat"})
HEARTBEAT_INTERVAL = 10.0  # opencode sends server.heartbeat every 10 s


@dataclass(frozen=True)
class OpencodeEvent:
    """One event of the global stream: where it happened plus the payload.

    ``directory``/``project`` are None for server-level events.  ``project`` is opencode's project id
    (``"global"`` for non-git directories), not our project name.
    """

    type: str
    properties: dict[str, Any] = field(default_factory=dict)
    directory: str | None = None
    project: str | None = None
    id: str | None = None

    @property
    def session_id(self) -> str | None:
        """The session the event is about, when there is one (``sessionID`` or ``info.id`` of a session)."""
        props = self.properties
        sid = props.get("sessionID")
        if isinstance(sid, str):
            return sid
        info = props.get("info")
        if isinstance(info, dict):
            if isinstance(info.get("sessionID"), str):
                return info["sessionID"]
            if self.type.startswith("session.") and isinstance(info.get("id"), str):
                return info["id"]
        part = props.get("part")
        if isinstance(part, dict) and isinstance(part.get("sessionID"), str):
            return part["sessionID"]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "project": self.project,
            "payload": {"id": self.id, "type": self.type, "properties": self.properties},
        }


class SSEParser:
    """Incremental Server-Sent-Events parser: feed bytes or text, get the ``data`` of complete events.

    Follows the SSE rules that matter here: lines end in LF, CRLF or CR; a blank line dispatches the
    event; several ``data:`` lines are joined with ``\\n``; ``:`` comment lines and other fields
    (``event``, ``id``, ``retry``) are ignored.  Handles chunks split anywhere, including inside a
    UTF-8 sequence or between CR and LF.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._data: list[str] = []
        self._pending_cr = False
        self._decoder = _utf8_decoder()

    def feed(self, chunk: bytes | str) -> list[str]:
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        self._buf += text
        lines = self._buf.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buf = lines.pop()  # incomplete tail
        out: list[str] = []
        for line in lines:
            data = self._line(line)
            if data is not None:
                out.append(data)
        return out

    def feed_line(self, line: str) -> str | None:
        """Feed one already split line (no terminator); returns event data when it completes one."""
        return self._line(line.rstrip("\r\n"))

    def close(self) -> list[str]:
        """End of stream: a last event without its blank line is discarded, as the SSE spec says."""
        self._buf = ""
        self._data = []
        return []

    def _line(self, line: str) -> str | None:
        if line == "":
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return None


def _utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def parse_global_record(obj: Any, *, include_heartbeats: bool = False) -> OpencodeEvent | None:
    """Turn one decoded ``/global/event`` record into an :class:`OpencodeEvent`.

    Returns None for ``sync`` duplicates, heartbeats (unless asked for) and malformed records.
    A bare ``/event`` record (``{"id","type","properties"}`` without envelope) is accepted too.
    """
    if not isinstance(obj, dict):
        return None
    payload = obj.get("payload") if "payload" in obj else obj
    if not isinstance(payload, dict):
        return None
    etype = payload.get("type")
    if not isinstance(etype, str):
        return None
    if etype == "sync" or (etype == "server.heartbeat" and not include_heartbeats):
        return None
    props = payload.get("properties")
    directory = obj.get("directory") if "payload" in obj else None
    project = obj.get("project") if "payload" in obj else None
    return OpencodeEvent(
        type=etype,
        properties=props if isinstance(props, dict) else {},
        directory=directory if isinstance(directory, str) else None,
        project=project if isinstance(project, str) else None,
        id=payload.get("id") if isinstance(payload.get("id"), str) else None,
    )


def parse_data(data: str, *, include_heartbeats: bool = False) -> OpencodeEvent | None:
    """Decode one SSE ``data`` string; bad JSON gives None (logged) instead of an exception."""
    try:
        obj = json.loads(data)
    except ValueError:
        log.warning("opencode event stream: undecodable data %.200r", data)
        return None
    return parse_global_record(obj, include_heartbeats=include_heartbeats)


def parse_global_stream(
    chunks: Iterable[bytes | str] | bytes | str, *, include_heartbeats: bool = False
) -> Iterator[OpencodeEvent]:
    """Pure: raw stream bytes/text (whole or in chunks) -> events, in order."""
    if isinstance(chunks, bytes | str):
        chunks = [chunks]
    parser = SSEParser()
    for chunk in chunks:
        for data in parser.feed(chunk):
            ev = parse_data(data, include_heartbeats=include_heartbeats)
            if ev is not None:
                yield ev


BaseURL = str | Callable[[], str | None]


class GlobalEventStream:
    """Consume ``/global/event`` forever, reconnecting; iterate with ``async for ev in stream``.

    ``base_url`` may be a callable, so that after a managed opencode restarts on a new port
    (``--port 0``) the next attempt goes to the new server; while it returns None (no server) the
    stream waits.  The read timeout must exceed the 10 s heartbeat, so a silent dead connection is
    noticed within ``read_timeout``.  Each (re)connection starts with a ``server.connected`` event,
    which callers can use to resynchronise (e.g. ``GET /session/status``).
    """

    def __init__(
        self,
        base_url: BaseURL,
        *,
        password: str | None = None,
        username: str = "opencode",
        read_timeout: float = 3 * HEARTBEAT_INTERVAL,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        include_heartbeats: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if read_timeout <= HEARTBEAT_INTERVAL:
            raise ValueError("read_timeout must exceed opencode's 10 s heartbeat interval")
        self._base_url = base_url
        self._auth = httpx.BasicAuth(username, password) if password else None
        self._timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._include_heartbeats = include_heartbeats
        self._transport = transport
        self.connected = asyncio.Event()
        self.connections = 0  # successful connects, for tests and metrics
        self.last_error: str | None = None
        self.current_url: str | None = None

    def _url(self) -> str | None:
        return self._base_url() if callable(self._base_url) else self._base_url

    def __aiter__(self) -> AsyncIterator[OpencodeEvent]:
        return self.events()

    async def events(self) -> AsyncGenerator[OpencodeEvent, None]:
        delay = self._backoff_initial
        async with httpx.AsyncClient(timeout=self._timeout, auth=self._auth, transport=self._transport) as client:
            while True:
                url = self._url()
                if not url:  # no server right now (restarting): asking again is free, so poll briskly
                    await asyncio.sleep(min(0.25, self._backoff_max))
                    continue
                got_any = False
                try:
                    async for ev in self._one_connection(client, url.rstrip("/")):
                        got_any = True
                        yield ev
                    self.last_error = "stream ended"
                except (httpx.HTTPError, OSError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                finally:
                    self.connected.clear()
                if got_any:
                    delay = self._backoff_initial
                log.info("opencode event stream lost (%s); reconnecting in %.1fs", self.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(self._backoff_max, delay * 2)

    async def _one_connection(self, client: httpx.AsyncClient, url: str) -> AsyncIterator[OpencodeEvent]:
        async with client.stream("GET", url + "/global/event", headers={"Accept": "text/event-stream"}) as resp:
            if resp.status_code != 200:
                await resp.aread()
                raise httpx.HTTPStatusError(
                    f"GET /global/event -> {resp.status_code}", request=resp.request, response=resp
                )
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                # Unknown routes answer 200 text/html (SPA fallback): not an opencode event stream.
                raise httpx.HTTPStatusError(
                    f"GET /global/event: unexpected content-type {ctype!r}", request=resp.request, response=resp
                )
            self.connections += 1
            self.current_url = url
            self.connected.set()
            parser = SSEParser()
            async for chunk in resp.aiter_bytes():
                for data in parser.feed(chunk):
                    ev = parse_data(data, include_heartbeats=self._include_heartbeats)
                    if ev is not None:
                        yield ev
