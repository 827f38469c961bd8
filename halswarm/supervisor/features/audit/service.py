"""The audit log, read side (rows are written by the features that act)."""

from __future__ import annotations

from typing import Any

from halswarm.store.reader import Reader
from halswarm.store.repos.audit import query_audit


class AuditService:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    async def page(self, actor: str | None, action: str | None, since: float | None, limit: int,
                   offset: int) -> tuple[list[dict[str, Any]], int]:
        f = {"actor": actor, "action": action, "since": since}
        return await self.reader.run(lambda c: query_audit(c, f, limit, offset))
