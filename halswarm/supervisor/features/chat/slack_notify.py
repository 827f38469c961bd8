"""Slack messages with buttons: `permission.asked`, `approval.escalated`, `alert.firing` and
`remediation.escalated` posted to `chatops.slack.channel` (chat.postMessage), and a request's message
updated (chat.update) when it is answered anywhere but on its own buttons
(API, halctl, Discord, the approvals timeout policy).

Fed by the event feed through a bounded queue and one worker: the consumer never waits, so a slow or
unreachable Slack never holds ingest; a full queue drops (counted, logged)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any

from halswarm.protocol import is_permission_id
from halswarm.supervisor.features.chat import slack_blocks as blocks
from halswarm.supervisor.features.chat.slack_settings import SlackSettings
from halswarm.supervisor.features.chat.slack_web import SlackWeb

log = logging.getLogger(__name__)

POST_QUEUE = 200  # events waiting for Slack; more are dropped (logged)
MAX_MESSAGES = 1000  # posted approval messages remembered for chat.update
NOTIFIED = ("permission.asked", "approval.escalated", "alert.firing", "remediation.escalated")
REPLIED_EVENT = "approval.replied"


class SlackNotifier:
    def __init__(self, settings: SlackSettings, web: SlackWeb) -> None:
        self.settings = settings
        self.web = web
        self.messages: OrderedDict[str, tuple[str, str, list[dict[str, Any]]]] = OrderedDict()  # id -> ch, ts, blocks
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(POST_QUEUE)
        self._worker: asyncio.Task[None] | None = None

    def on_event(self, ev: dict[str, Any]) -> None:
        """Event feed consumer (synchronous, never waits): queue what gets a message or an update."""
        kind = ev.get("type")
        if kind not in NOTIFIED and kind != REPLIED_EVENT:
            return
        if kind == REPLIED_EVENT and not is_permission_id(blocks.as_dict(ev.get("data")).get("id")):
            return  # else queued behind its request's post (FIFO), which may still be in flight
        try:
            self._queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10) or self.dropped % 100 == 0:
                log.warning("slack: %d notifications dropped (Slack is slow or down)", self.dropped)

    def forget(self, approval_id: str) -> None:
        """A press on the message answers it: its own update replaces the message, not chat.update."""
        self.messages.pop(approval_id, None)

    async def _loop(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                if ev.get("type") == REPLIED_EVENT:
                    await self._update_replied(ev)
                else:
                    await self._post(ev)
            except Exception:
                log.exception("slack: notification of %s failed", ev.get("type"))

    async def _post(self, ev: dict[str, Any]) -> None:
        assert self.settings.channel is not None
        body = blocks.notification(ev, self.settings.channel)
        if body is None:
            return
        sent = await self.web.call("chat.postMessage", body)
        data = blocks.as_dict(ev.get("data"))
        if sent and is_permission_id(data.get("id")) and isinstance(sent.get("ts"), str):
            self.messages[data["id"]] = (str(sent.get("channel") or self.settings.channel), sent["ts"],
                                         body["blocks"])
            while len(self.messages) > MAX_MESSAGES:
                self.messages.popitem(last=False)

    async def _update_replied(self, ev: dict[str, Any]) -> None:
        data = blocks.as_dict(ev.get("data"))
        found = self.messages.pop(data["id"], None)
        if found is None:
            return
        channel, ts, posted = found
        reply = str(data.get("reply"))
        outcome = f"{':no_entry:' if reply == 'reject' else ':white_check_mark:'} " \
                  f"{blocks.DONE_REPLY.get(reply, reply)} by {blocks.escape(str(data.get('actor') or 'its node'))}"
        await self.web.call("chat.update", {"channel": channel, "ts": ts, "text": outcome,
                                            "blocks": blocks.decided(posted, outcome, keep_buttons=False)})

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._loop(), name="slack-notify")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(BaseException):
                await self._worker
            self._worker = None
