"""One audit row per chat command or button press, the same shape for Discord and Slack."""

from __future__ import annotations

import logging
import time
from typing import Any

from halswarm.store.repos.audit import insert_audit
from halswarm.store.writer import Writer

log = logging.getLogger(__name__)


async def audit_chat(writer: Writer, client: str, actor: str, action: str, target: str, args: dict[str, Any],
                     result: str, error: str | None, seconds: float) -> None:
    """Store the row (string arguments cut to 200 characters); a failed write is logged, never raised: a full
    disk must not hide the answer, and the writer reports its own fault."""
    row = {"timestamp": time.time(), "actor": actor, "action": action, "target": target,
           "args": {k: v[:200] if isinstance(v, str) else v for k, v in args.items()},
           "result": result, "error": error, "duration_ms": int(seconds * 1000), "client_actor": client}
    try:
        await writer.run(lambda c: insert_audit(c, row))
    except Exception as exc:
        log.warning("could not audit %s %s: %s", client, target, exc)
