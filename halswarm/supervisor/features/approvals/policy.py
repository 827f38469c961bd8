"""The unanswered-request policy (`approvals.timeout_minutes`, `approvals.on_timeout`): a request pending
that long is rejected through its agent (actor `approvals-policy`, audited and announced like an
operator's answer; while its node is offline, at the first check after it is back) or escalated once
(`approval.escalated`, routed like other events). Off by default."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from halswarm.core.approvals import approve_command, deny_command
from halswarm.store.repos.approvals import mark_escalated
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.approvals.service import ApprovalsService
from halswarm.supervisor.features.approvals.settings import REJECT, ApprovalSettings
from halswarm.supervisor.runtime.dispatcher import CommandError
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.periodic import PeriodicEngine

log = logging.getLogger(__name__)
POLICY_ACTOR = "approvals-policy"
ESCALATED_EVENT = "approval.escalated"


class ApprovalTimeoutPolicy(PeriodicEngine):
    def __init__(self, settings: ApprovalSettings, approvals: ApprovalsService, writer: Writer,
                 ingestor: Ingestor, node_online: Callable[[str], bool]) -> None:
        super().__init__()
        self.node_online = node_online
        self.settings = settings
        self.approvals = approvals
        self.writer = writer
        self.ingestor = ingestor
        self._failing: set[str] = set()  # ids whose rejection failed (logged once)

    async def start(self) -> None:
        if self.settings.enabled:
            self._start_loop(self.settings.check_interval_sec, "approvals-timeout", log)

    async def stop(self) -> None:
        await self._stop_loop(5.0)

    def _message(self) -> str:
        return f"no answer within {self.settings.timeout_minutes:g} minutes (approvals.timeout_minutes)"

    async def check(self) -> None:
        cutoff = time.time() - self.settings.timeout_sec
        if self.settings.on_timeout == REJECT:
            for row in await self.approvals.overdue(cutoff, unescalated=False):
                if self.node_online(row["node_id"]):  # else at a later check: no failed command every time
                    await self._reject(row["id"])
            return
        rows = await self.approvals.overdue(cutoff, unescalated=True)
        if not rows:
            return
        now = time.time()
        await self.writer.run(lambda c: mark_escalated(c, [r["id"] for r in rows], now))
        for r in rows:
            self.ingestor.emit(r["node_id"], ESCALATED_EVENT, {
                "id": r["id"], "permission": r["permission"], "patterns": r["patterns"], "command": r["command"],
                "age_sec": round(now - float(r["asked_at"]), 1), "timeout_minutes": self.settings.timeout_minutes,
                "message": f"{r['permission']} request {r['id']} unanswered for "
                           f"{self.settings.timeout_minutes:g} minutes: {approve_command(r['id'])}",
                "approve_command": approve_command(r["id"]), "deny_command": deny_command(r["id"]),
            }, session_id=r["session_id"], project=r["project"])
            log.warning("approval %s escalated after %g minutes", r["id"], self.settings.timeout_minutes)

    async def _reject(self, approval_id: str) -> None:
        try:
            await self.approvals.reply(approval_id, "reject", self._message(), actor=POLICY_ACTOR)
            self._failing.discard(approval_id)
            log.info("approval %s rejected after %g minutes unanswered", approval_id, self.settings.timeout_minutes)
        except (ApiError, CommandError) as exc:
            if approval_id not in self._failing:  # retried every check; logged once
                self._failing.add(approval_id)
                log.warning("approval %s: timeout rejection failed (retrying): %s", approval_id, exc)
