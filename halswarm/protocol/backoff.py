"""Reconnect backoff: exponential growth with FULL jitter (SPEC 4: 0.1 s .. 60 s).

Full jitter (delay drawn uniformly from [0, ceiling]) spreads a fleet of agents that lost the
same supervisor over the whole window, so a restarting supervisor is not hit by all of them at
once. The Go agent used +-25 % jitter, which keeps reconnects clustered. A small floor keeps a
zero draw from turning into a busy reconnect loop.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay generator: ``delay = max(floor, uniform(0, min(cap, base * 2**attempt)))``."""

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 60.0,
        *,
        floor: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap (base={base}, cap={cap})")
        self.base = float(base)
        self.cap = float(cap)
        self.floor = float(base if floor is None else floor)
        if not 0 <= self.floor <= self.cap:
            raise ValueError(f"floor must be within [0, cap] (floor={self.floor})")
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Number of delays handed out since the last reset."""
        return self._attempt

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        # Once base * 2**n passes cap the exponent no longer matters; clamp it so the float
        # never overflows however long the supervisor stays away.
        return min(self.cap, self.base * 2.0 ** min(self._attempt, 64))

    def next_delay(self) -> float:
        delay = max(self.floor, self._rng.uniform(0.0, self.ceiling()))
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0
