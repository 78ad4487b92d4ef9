"""Token buckets for rate limiting, one per key (session, client address, socket).

A bucket holds up to ``capacity`` tokens and refills continuously at ``rate`` tokens per
second; a message costs one token. Idle buckets (full again) carry no information and are
pruned, so the per-key tables stay as small as the set of recently active clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float, now: float):
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.tokens = float(capacity)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 when they are now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if there are enough and return 0, else return the seconds to wait."""
        wait = self.wait(now, cost)
        if wait == 0.0:
            self.tokens -= cost
        return wait

    def idle(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class KeyedBuckets:
    """One :class:`TokenBucket` per key, created full on first use and pruned when idle."""

    def __init__(self, capacity: float, per_seconds: float, clock: Callable[[], float] = time.monotonic,
                 prune_every: float = 60.0):
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._prune_every = prune_every
        self._pruned = clock()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, key: str) -> TokenBucket:
        now = self.clock()
        if now - self._pruned > self._prune_every:
            self._pruned = now
            for k in [k for k, b in self._buckets.items() if b.idle(now)]:
                del self._buckets[k]
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.capacity, self.rate, now)
        return bucket


def take_all(buckets: list[TokenBucket], now: float) -> float:
    """Take one token from every bucket, or from none: returns 0, or the longest wait."""
    wait = max(b.wait(now) for b in buckets)
    if wait == 0.0:
        for b in buckets:
            b.take(now)
    return wait
