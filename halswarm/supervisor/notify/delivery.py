"""Delivery of routed notifications: one bounded queue and one worker task per target.

`submit` never blocks and never fails: when a target's queue is full the oldest waiting message is
dropped (metric `hal_o_swarm_route_deliveries_total{status="dropped"}`), so a slow or dead target
costs the ingest path nothing. A worker sends its messages in order; network errors, timeouts, 429
and 5xx are retried with exponential backoff (honouring Retry-After / Discord's `retry_after`), other
answers fail at once. Failed deliveries are logged with the target and the event, never the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from halswarm.core.retry_after import retry_after
from halswarm.supervisor.notify.channels import Channel
from halswarm.supervisor.notify.formats import Notification, discord_decided

log = logging.getLogger(__name__)
MAX_WAIT_S = 60.0
MAX_TRACKED = 1000  # posted permission requests remembered per bot channel (for the edit once answered)
REPLIED = "approval.replied"
ASKING = ("permission.asked", "approval.escalated")  # bot messages with Approve/Deny, edited once answered


@dataclass(frozen=True)
class DeliverySettings:
    queue_size: int = 1000
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0


class _Outbox:
    def __init__(self, channel: Channel, size: int, metrics: Any) -> None:
        self.channel = channel
        self.label = channel.label
        self.items: deque[Notification] = deque()
        self.size = size
        self.ready = asyncio.Event()
        # Plain counters (submit() runs for every routed event); exported at scrape time.
        self.counts = dict.fromkeys(STATUSES, 0)
        self.busy = False
        self.last_drop_log = 0.0
        self.m_duration = metrics.duration.labels(self.label)
        # Requests this bot channel was asked to post: (approval id, event type) -> (message id, body posted),
        # (None, None) until posted. Their message is edited when the request is answered. Bounded.
        self.asked: OrderedDict[tuple[str, str], tuple[str | None, dict[str, Any] | None]] = OrderedDict()


STATUSES = ("sent", "failed", "dropped", "retried")


def _request_id(ev: dict[str, Any]) -> str | None:
    """The approval id a permission.asked / approval.escalated / approval.replied event is about."""
    data = ev.get("data")
    rid = data.get("id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) else None


class DeliveryMetrics:
    """`hal_o_swarm_route_deliveries_total{target,status}` and `hal_o_swarm_route_queue_depth{target}` are
    read from the outboxes when scraped; the duration histogram is updated per delivery."""

    def __init__(self, registry: CollectorRegistry | None, boxes: dict[str, _Outbox]) -> None:
        r = registry or CollectorRegistry()
        self._boxes = boxes
        r.register(self)
        self.duration = Histogram("hal_o_swarm_route_delivery_duration_seconds",
                                  "Time to deliver one notification, retries included", ["target"], registry=r)

    def describe(self) -> list[Any]:
        return [CounterMetricFamily("hal_o_swarm_route_deliveries", "", labels=["target", "status"]),
                GaugeMetricFamily("hal_o_swarm_route_queue_depth", "", labels=["target"])]

    def collect(self) -> Iterator[Any]:
        counts: dict[tuple[str, str], int] = {}
        depth: dict[str, int] = {}
        for box in list(self._boxes.values()):
            for status, n in box.counts.items():
                counts[(box.label, status)] = counts.get((box.label, status), 0) + n
            depth[box.label] = depth.get(box.label, 0) + len(box.items)
        c = CounterMetricFamily("hal_o_swarm_route_deliveries",
                                "Routed notifications by target and outcome (sent, failed, dropped, retried)",
                                labels=["target", "status"])
        for (label, status), n in sorted(counts.items()):
            c.add_metric([label, status], n)
        g = GaugeMetricFamily("hal_o_swarm_route_queue_depth", "Notifications waiting per route target",
                              labels=["target"])
        for label, n in sorted(depth.items()):
            g.add_metric([label], n)
        yield c
        yield g


class DeliveryService:
    def __init__(self, settings: DeliverySettings, registry: CollectorRegistry | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._boxes: dict[str, _Outbox] = {}
        self.metrics = DeliveryMetrics(registry, self._boxes)
        self._client = client
        self._own_client = client is None
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0
        self.failed = 0

    def add_channel(self, channel: Channel) -> None:
        if channel.target not in self._boxes:
            self._boxes[channel.target] = _Outbox(channel, self.settings.queue_size, self.metrics)

    def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False,
                                             headers={"User-Agent": "hal-o-swarm"})
        for box in self._boxes.values():
            self._tasks.append(asyncio.create_task(self._worker(box), name=f"route:{box.channel.label}"))

    async def stop(self, flush_s: float = 2.0) -> None:
        deadline = time.monotonic() + flush_s
        while time.monotonic() < deadline and any(b.items or b.busy for b in self._boxes.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # a short grace to flush what is queued; no event would say "all sent"
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def submit(self, target: str, n: Notification) -> None:
        box = self._boxes.get(target)
        if box is None:
            return
        if box.channel.kind == "discord_bot" and n.type in ASKING:
            self._track(box, n)
        self._enqueue(box, n)

    def _enqueue(self, box: _Outbox, n: Notification) -> None:
        if len(box.items) >= box.size:
            box.items.popleft()
            dropped = box.counts["dropped"] = box.counts["dropped"] + 1
            now = time.monotonic()
            if now - box.last_drop_log > 60:
                box.last_drop_log = now
                log.warning("route target %s is not keeping up: queue full (%d), dropping the oldest "
                            "notifications (%d dropped so far)", box.label, box.size, dropped)
        box.items.append(n)
        if not box.busy:
            box.ready.set()

    @staticmethod
    def _track(box: _Outbox, n: Notification) -> None:
        rid = _request_id(n.event)
        if rid is not None:
            box.asked[(rid, n.type)] = (None, None)
            while len(box.asked) > MAX_TRACKED:
                box.asked.popitem(last=False)

    def on_replied(self, ev: dict[str, Any]) -> None:
        """An `approval.replied` event: each bot channel that posted the request (or its escalation) edits
        that message (queued behind the post, in order). Never blocks."""
        rid = _request_id(ev)
        if rid is None:
            return
        for box in self._boxes.values():
            for kind in ASKING:
                if (rid, kind) in box.asked:  # route: which of the request's messages to edit
                    self._enqueue(box, Notification(ev, kind, edit=True))

    def depth(self) -> dict[str, int]:
        return {b.label: len(b.items) for b in self._boxes.values()}

    async def _worker(self, box: _Outbox) -> None:
        while True:
            if not box.items:
                box.ready.clear()
                await box.ready.wait()
                continue
            n = box.items.popleft()
            box.busy = True
            started = time.monotonic()
            try:
                error = await self._deliver(box, n)
            except Exception as exc:  # a bug in formatting must not kill the worker
                error = f"{type(exc).__name__}: {exc}"
            finally:
                box.busy = False
            box.m_duration.observe(time.monotonic() - started)
            if error is None:
                self.sent += 1
                box.counts["sent"] += 1
            else:
                self.failed += 1
                box.counts["failed"] += 1
                ev = n.event
                log.warning("route delivery to %s failed: %s (event %s id=%s node=%s session=%s, route %r)",
                            box.label, error, ev.get("type"), ev.get("id"), ev.get("node_id"), ev.get("session_id"),
                            n.route)

    @staticmethod
    def _posted(box: _Outbox, n: Notification, resp: httpx.Response, body: dict[str, Any]) -> None:
        """Remember the message id Discord gave a posted permission request (for its later edit)."""
        rid = _request_id(n.event)
        try:
            message_id = resp.json().get("id")
        except (ValueError, AttributeError):
            return
        key = (rid or "", n.type)
        if key in box.asked and isinstance(message_id, str) and message_id.isdigit():
            box.asked[key] = (message_id, body)

    async def _deliver(self, box: _Outbox, n: Notification) -> str | None:
        """None when delivered, else why not (after the retries)."""
        assert self._client is not None
        ch = box.channel
        method, url = "POST", ch.url
        if n.edit:  # the edit of a posted request (see on_replied)
            message_id, posted = box.asked.pop((_request_id(n.event) or "", n.route), (None, None))
            if message_id is None or posted is None:
                return "the request's message was never posted: nothing to edit"
            method, url, body = "PATCH", f"{ch.url}/{message_id}", discord_decided(posted, n)
        else:
            body = ch.payload(n)
        s = self.settings
        error = "not attempted"
        for attempt in range(s.max_retries + 1):
            wait: float | None = None
            try:
                resp = await self._client.request(method, url, json=body, headers=ch.headers, timeout=s.timeout_s)
            except httpx.TimeoutException:
                error = f"no answer within {s.timeout_s:g} s"
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= resp.status_code < 300:
                    refusal = ch.refusal(resp.status_code, resp.json)
                    if refusal is None and method == "POST" and ch.kind == "discord_bot" and n.type in ASKING:
                        self._posted(box, n, resp, body)
                    return refusal
                error = f"HTTP {resp.status_code}"
                if resp.status_code != 429 and resp.status_code < 500:
                    return error
                wait = retry_after(resp.headers.get("retry-after"))
                if wait is None and resp.status_code == 429:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        wait = float(resp.json().get("retry_after"))  # Discord puts it in the body
            if attempt == s.max_retries:
                break
            box.counts["retried"] += 1
            base = min(s.backoff_max_s, s.backoff_base_s * (2 ** attempt))
            delay = min(MAX_WAIT_S, wait) if wait is not None else base + random.uniform(0, base / 4)
            await asyncio.sleep(delay)
        return f"{error} (after {s.max_retries + 1} attempts)"
