"""The audit log, read side (rows are written by the features that act)."""

from __future__ import annotations

from typing import Any

from halswarm.core.paging import Page, PageRequest
from halswarm.store.reader import Reader
from halswarm.store.repos.audit import page_audit

AUDIT_CURSOR = "fi"  # (timestamp, id)


class AuditService:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    async def page(self, actor: str | None, action: str | None, since: float | None,
                   req: PageRequest) -> tuple[Page[dict[str, Any]], int, bool]:
        """A page newest first, with (total, total_is_estimate)."""
        f = {"actor": actor, "action": action, "since": since}
        return await self.reader.run(lambda c: page_audit(c, f, req))
