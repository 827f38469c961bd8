"""A migrated SQLite file with a running writer and a reader, for unit tests of the parts that write
through the store (no supervisor process), and an event sink that records what a part emits."""

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
async def running_store(path: Path) -> AsyncIterator[tuple[Writer, Reader, Path]]:
    """(writer, reader, path) on a freshly migrated database at `path`; all closed on exit."""
    conn = connect(path)
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    reader = Reader(path)
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
