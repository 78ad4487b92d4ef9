"""Token buckets for rate limiting, one per key (session, client address, socket).

A bucket holds up to ``capacity`` tokens and refills continuously at ``rate`` tokens per
second; a message costs one token. Idle buckets (full again) carry no information and are
pruned, so the per-key tables stay as small as the set of recently active clients.

Buckets a client could spread over several workers (per session, per address, per search
address) go through a :class:`RateLimiter`: :class:`LocalRateLimiter` in one process, a
Redis one when the app is given ``BOTKIT_REDIS_URL``. Buckets of one socket (its frames, its
strikes) stay plain :class:`TokenBucket` objects: a socket lives on one worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiohttp import web


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


# -- the seam: buckets that several workers can share ---------------------------------------------

@dataclass(frozen=True)
class Limit:
    """A family of buckets: ``capacity`` messages per ``per_seconds``, one bucket per key.

    ``name`` tells the families apart where they share one table (a Redis key names it):
    ``webchat-session``, ``webchat-ip``, ``help-search``.
    """

    name: str
    capacity: float
    per_seconds: float

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.per_seconds <= 0:
            raise ValueError(f"limit {self.name!r}: capacity and per_seconds must be positive "
                             f"(got {self.capacity} per {self.per_seconds} s)")

    @property
    def rate(self) -> float:
        return self.capacity / self.per_seconds


@runtime_checkable
class RateLimiter(Protocol):
    """Keyed token buckets. :class:`LocalRateLimiter` keeps them in this process; with
    ``BOTKIT_REDIS_URL`` set the app passes a limiter whose buckets live in Redis
    (``botkit.backends.redis_limits``), so N workers share one budget per key and a client
    gets the configured rate, not N times it, wherever the load balancer sends it."""

    async def take(self, buckets: Sequence[tuple[Limit, str]], *, cost: float = 1.0, peek: bool = False) -> float:
        """Take ``cost`` tokens from every bucket (``(limit, key)``), or from none: 0.0 when
        taken, else the seconds until all of them hold ``cost`` (the longest wait).
        ``peek``: only say how long, take nothing."""
        ...

    async def start(self) -> None:
        """Connect (a no-op for the in-process one)."""
        ...

    async def close(self) -> None:
        ...


class LocalRateLimiter:
    """:class:`RateLimiter` on :class:`KeyedBuckets` in this process (the default; the fallback
    of the Redis one while Redis is away)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._families: dict[Limit, KeyedBuckets] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self._families.values())

    def buckets(self, limit: Limit) -> KeyedBuckets:
        family = self._families.get(limit)
        if family is None:
            family = self._families[limit] = KeyedBuckets(limit.capacity, limit.per_seconds, self.clock)
        return family

    def take_now(self, buckets: Sequence[tuple[Limit, str]], *, cost: float = 1.0, peek: bool = False) -> float:
        """:meth:`take` without the coroutine (it never waits)."""
        now = self.clock()
        found = [self.buckets(limit).get(key) for limit, key in buckets]
        wait = max((b.wait(now, cost) for b in found), default=0.0)
        if wait == 0.0 and not peek:
            for b in found:
                b.take(now, cost)
        return wait

    async def take(self, buckets: Sequence[tuple[Limit, str]], *, cost: float = 1.0, peek: bool = False) -> float:
        return self.take_now(buckets, cost=cost, peek=peek)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


#: Where the app puts the limiter that connectors and pages share (started and closed by the
#: app); not set: each takes a :class:`LocalRateLimiter` of its own.
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
