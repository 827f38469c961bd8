"""Who may run a chat command: chat user and role ids mapped to the API's roles, and the replay window."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from halswarm.core.roles import Role


def chat_role(user_id: str | None, role_ids: Iterable[str], users: Mapping[str, Role],
              roles: Mapping[str, Role]) -> Role | None:
    """The highest role granted to the user directly or through one of their chat roles; None: no access."""
    found = [users[user_id]] if user_id and user_id in users else []
    found += [roles[r] for r in role_ids if r in roles]
    return max(found, default=None)


class ReplayGuard:
    """Refuses a stale request (timestamp outside `max_skew` seconds of now) or one seen before (its
    signature in a bounded cache of the requests admitted within the window). Call only after the signature
    verified, so forged requests never fill the cache."""

    def __init__(self, max_skew: float, capacity: int = 10_000) -> None:
        self.max_skew = max_skew
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> its timestamp, oldest first

    def refuse(self, timestamp: str, signature: str, now: float) -> str | None:
        """Why the request is refused, or None (and it is remembered)."""
        try:
            ts = float(timestamp)
        except ValueError:
            return "timestamp is not a number"
        if abs(now - ts) > self.max_skew:
            return f"stale request (timestamp {now - ts:+.0f} s from now, allowed {self.max_skew:g} s)"
        while self._seen and (len(self._seen) >= self.capacity
                              or now - next(iter(self._seen.values())) > 2 * self.max_skew):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return "replayed request"
        self._seen[signature] = ts
        return None
