"""A token bucket: ``rate_per_s`` tokens a second, at most ``capacity`` saved up (the burst).

Pure arithmetic over the times it is given, so it reads and tests without a clock: the bucket starts full,
refills continuously, and a take of ``n`` either succeeds whole or tells how long until ``n`` are there.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, rate_per_s: float, capacity: float, now: float):
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError(f"a token bucket needs a positive rate ({rate_per_s}) and capacity ({capacity})")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._at = now

    def tokens(self, now: float) -> float:
        """Tokens there at ``now`` (times before the last one count as the last one: clocks only go forward)."""
        return min(self.capacity, self._tokens + max(0.0, now - self._at) * self.rate_per_s)

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens at ``now``: 0 when taken, else the seconds until ``n`` would be there (nothing taken).
        More than ``capacity`` is never there: ``inf``."""
        tokens = self.tokens(now)
        self._tokens, self._at = tokens, max(now, self._at)
        if n > self.capacity:
            return math.inf
        if tokens >= n:
            self._tokens = tokens - n
            return 0.0
        return (n - tokens) / self.rate_per_s


def retry_after_s(wait_s: float) -> int:
    """``Retry-After`` for a wait: whole seconds, rounded up, at least 1 (the header takes integers)."""
    return max(1, math.ceil(wait_s))
