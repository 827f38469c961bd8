"""Sans-I/O failover order of the agent's supervisor connection (issue 21).

``Rotation`` decides which supervisor the next connection attempt goes to; the asyncio wrapper
(``halswarm.agent.connection``) does the DNS look-ups and the connecting, and tells it what happened.

Order: the configured URLs in turn; a URL whose host is a DNS name is resolved when the rotation
arrives at it (every A/AAAA address, re-resolved on each arrival, so a changed record is seen) and each
address is one target. A failed attempt or a lost connection moves to the next target. A *round* is
complete when the rotation is back at the URL it last registered on (or at the first URL, before any
registration): only then does the caller wait out the growing backoff; within a round it hops after
the backoff's floor, so losing one supervisor costs one short hop, not a grown backoff, while a fleet
whose every supervisor is down still backs off (bounded) and never spins.

One configured URL with one address behaves exactly as before the rotation existed: every failure
completes a round.

``same_store``: the durable outbox trusts a ``resume_from_seq`` above its own ``last_acked_seq`` (it
deletes through it) only from the supervisor that acked its events (``holder``). Independent stores
number events independently, so after a move that number means other events and deleting through it
would lose ours; the agent renumbers instead (``halswarm.protocol.agent_link.plan_resume``). On a
shared store that costs at most a resend of the events whose acks the dead supervisor never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from halswarm.protocol.supervisor_urls import SupervisorUrl


@dataclass(frozen=True, slots=True)
class Target:
    """One place to connect to: a configured URL, and the resolved address to dial (None: the URL's host)."""

    url: SupervisorUrl
    address: str | None = None

    @property
    def label(self) -> str:
        """What logs say: the URL, plus the address when one name has several."""
        return self.url.url if self.address is None else f"{self.url.url} [{self.address}]"


class Rotation:
    """Which supervisor to try next. No I/O, no clock."""

    def __init__(self, urls: Sequence[SupervisorUrl], *, resolve: bool = True) -> None:
        if not urls:
            raise ValueError("need at least one supervisor URL")
        self.urls = tuple(urls)
        self.resolve = resolve  # False behind a proxy: the proxy resolves names
        self._i = 0  # URL index
        self._addresses: tuple[str | None, ...] = (None,)
        self._j = 0  # address index within the URL
        self._fresh = True  # just arrived at URL _i: resolve before dialling
        self._anchor = 0  # URL index of the last registration (round start)
        self.holder: Target | None = None  # the target whose acks the outbox holds
        self.last_registered: Target | None = None

    # ------------------------------------------------------------------ where we are

    @property
    def url(self) -> SupervisorUrl:
        return self.urls[self._i]

    @property
    def needs_resolve(self) -> bool:
        """The caller must look up the current URL's host and call ``resolved`` (or ``unresolvable``)."""
        return self._fresh and self.resolve and not self.url.host_is_ip

    def current(self) -> Target:
        if self.needs_resolve:
            raise RuntimeError("resolve the current URL's host first")
        return Target(self.url, self._addresses[self._j])

    @property
    def addresses(self) -> tuple[str | None, ...]:
        return self._addresses

    # ------------------------------------------------------------------ what happened

    def resolved(self, addresses: Sequence[str]) -> None:
        """The current URL's host resolved to ``addresses`` (duplicates dropped, order kept)."""
        unique = tuple(dict.fromkeys(a for a in addresses if a))
        if not unique:
            raise ValueError("no addresses: call unresolvable()")
        self._addresses = unique
        self._j = 0
        self._fresh = False

    def unresolvable(self) -> bool:
        """The current URL's host did not resolve: skip to the next URL. Returns ``round_done``."""
        return self._next_url()

    def failed(self) -> bool:
        """The attempt on ``current()`` failed or its connection was lost: move on.

        Returns ``round_done``: True when every URL was tried since the last registration (wait the
        growing backoff), False for a hop to the next target within the round.
        """
        if self._j + 1 < len(self._addresses):
            self._j += 1
            return False
        return self._next_url()

    def registered(self) -> bool:
        """Registration on ``current()`` succeeded. Returns True when it is another supervisor than the
        previous registration (a failover)."""
        target = self.current()
        moved = self.last_registered is not None and self.last_registered != target
        self.last_registered = target
        self._anchor = self._i
        return moved

    def same_store(self) -> bool:
        """Does ``current()`` hold the acks the outbox has? (True before the first registration.)"""
        return self.holder is None or self.holder == self.current()

    def resumed(self) -> None:
        """The outbox applied ``current()``'s ``resume_from_seq``: its acks are now this target's."""
        self.holder = self.current()

    # ------------------------------------------------------------------ internals

    def _next_url(self) -> bool:
        self._i = (self._i + 1) % len(self.urls)
        self._addresses = (None,)
        self._j = 0
        self._fresh = True
        return self._i == self._anchor
