"""Rate-limit buckets shared by every worker, on Redis: a :class:`~connectors.webchat.limits.RateLimiter`.

Each bucket is a hash ``{prefix}rate:{limit name}:{key}`` holding its tokens and the time they
were counted. One Lua script refills, checks and takes from all the buckets of a message at
once (the session's and the address's: from every one or from none), on Redis's own clock
(``TIME``), so workers whose clocks differ still share one refill rate. A bucket expires when
it would be full again: a full bucket carries no information, and the keys stay as few as
the recently active clients.

**Redis away mid-request: fail open, to this process's buckets.** A rate limit keeps abuse
down; it is not what a customer's message depends on. Refusing every message while Redis is
away (fail closed) would turn a Redis outage into a chat outage; letting everything through
would drop the limit. So the limiter falls back to a :class:`LocalRateLimiter` of its own:
each worker still limits each client to the configured rate (a client can get at most N
times it across N workers, for as long as the outage lasts). The switch is logged as an
error once per outage, and its end once; while it lasts Redis is tried again every
``retry_s`` seconds, not on every message, so a dead Redis adds no delay to each message
(its timeouts are short, too: ``timeout_s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from botkit.backends.redis_common import CONNECTION_ERRORS, RedisError, check_url, ping, shown
from connectors.webchat.limits import Limit, LocalRateLimiter

log = logging.getLogger(__name__)

_FAILURES: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, RedisError)

# KEYS: the buckets; ARGV[1] cost, ARGV[2] 1 = peek, then capacity and rate (tokens/s) per key.
# Returns the wait in seconds as a string (a Lua number would come back truncated to an integer).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local wait = 0
local tokens = {}
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[1 + 2 * i])
  local rate = tonumber(ARGV[2 + 2 * i])
  local held = redis.call('HMGET', key, 'tokens', 'at')
  local n = cap
  if held[1] then
    n = math.min(cap, tonumber(held[1]) + math.max(0, now - tonumber(held[2])) * rate)
  end
  tokens[i] = n
  if n < cost then wait = math.max(wait, (cost - n) / rate) end
end
if wait > 0 or ARGV[2] == '1' then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local cap = tonumber(ARGV[1 + 2 * i])
  local rate = tonumber(ARGV[2 + 2 * i])
  local left = tokens[i] - cost
  redis.call('HSET', key, 'tokens', tostring(left), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((cap - left) / rate * 1000) + 1000)
end
return '0'
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every worker on the same Redis and prefix."""

    def __init__(self, url: str, *, prefix: str = "botkit:", timeout_s: float = 0.5, retry_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_url(url)
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.clock = clock
        self.fallback = LocalRateLimiter(clock)
        self._client: Redis | None = None
        self._script: Any = None
        self._down_since: float | None = None  # the outage: when it began (None: Redis answers)
        self._retry_at = 0.0

    def __repr__(self) -> str:
        return f"RedisRateLimiter({shown(self.url)!r}, prefix={self.prefix!r})"

    @property
    def degraded(self) -> bool:
        """True while Redis is away and this process limits on its own buckets."""
        return self._down_since is not None

    def key(self, limit: Limit, key: str) -> str:
        return f"{self.prefix}rate:{limit.name}:{key}"

    async def start(self) -> None:
        """Connect; Redis not there at start: a :class:`~botkit.errors.StorageError` (a
        configuration to fix, unlike an outage later, which falls back: see the module)."""
        if self._client is not None:
            return
        # Not redis_common.connect: its retries and 5 s timeouts suit a lock, not a check made
        # on every message. One try, short timeouts; the fallback covers the rest.
        client = Redis.from_url(self.url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s,
                                client_name="botkit-limits")
        await ping(client, self.url)
        self._client = client
        self._script = client.register_script(_TAKE)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def take(self, buckets: Sequence[tuple[Limit, str]], *, cost: float = 1.0, peek: bool = False) -> float:
        if self._client is None:
            raise RuntimeError("RedisRateLimiter used before start() (or after close())")
        if not buckets:
            return 0.0
        if self._down_since is not None and self.clock() < self._retry_at:
            return self.fallback.take_now(buckets, cost=cost, peek=peek)
        args: list[Any] = [cost, 1 if peek else 0]
        for limit, _ in buckets:
            args += [limit.capacity, limit.rate]
        try:
            wait = float(await self._script(keys=[self.key(limit, key) for limit, key in buckets], args=args))
        except _FAILURES as exc:
            self._went_away(exc)
            return self.fallback.take_now(buckets, cost=cost, peek=peek)
        if self._down_since is not None:
            log.warning("rate limits: Redis at %s answers again after %.0f s; the buckets are shared by the "
                        "workers again", shown(self.url), self.clock() - self._down_since)
            self._down_since = None
        return wait

    def _went_away(self, exc: BaseException) -> None:
        now = self.clock()
        self._retry_at = now + self.retry_s
        if self._down_since is None:
            self._down_since = now
            log.error("rate limits: Redis at %s is not answering (%s); each worker now limits clients on its own "
                      "buckets (a client may get up to N times the rate across N workers) until it answers; "
                      "retrying every %g s", shown(self.url), exc or type(exc).__name__, self.retry_s)


__all__ = ["RedisRateLimiter"]
