"""A migrated store with a running writer and a reader, for unit tests of the parts that write through
it (no supervisor process): a SQLite file, or a `StoreDb` of either engine (tests/support/store_engines,
whose `connect()` then opens the test's own connections); and an event sink that records what a part emits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.reader import Reader
from halswarm.store.writer import Writer


@asynccontextmanager
async def running_store(path: Any) -> AsyncIterator[tuple[Writer, Reader, Any]]:
    """(writer, reader, path) on a freshly migrated database at `path` (a SQLite path, or a StoreDb); all
    closed on exit."""
    if isinstance(path, Path):
        conn = connect(path)
        reader = Reader(path)
    else:
        conn = path.connect()
        reader = path.reader()
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    try:
        yield writer, reader, path
    finally:
        await writer.stop()
        reader.close()
        conn.close()


class Emitted:
    """Stands in for the ingestor's `emit`: the (node, type, data) of every event a part made."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, Any]] = []

    def emit(self, node_id: str | None, ev_type: str, data: Any = None, **_: Any) -> None:
        self.events.append((node_id, ev_type, data))

    def types(self) -> list[str]:
        return [e[1] for e in self.events]
