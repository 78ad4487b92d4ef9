"""Sign-in failure counts in Redis, so that N workers throttle one attacker together.

Without Redis every worker keeps its own counts (:class:`~botkit.signin_throttle.LocalFailureCounts`),
so an attacker whose tries a load balancer spreads over N workers gets N times the budget. With
``BOTKIT_REDIS_URL`` set (botkit/app/storage_switch.py), :class:`RedisFailureCounts` keeps each
key's recent failure times in a sorted set (score: the time) under ``storage.redis_prefix``::

    <prefix>signin:pair:<address>:<account>   failures of one account from one address
    <prefix>signin:address:<address>          failures from one address, any account

Checking the delay and counting the attempt is one Lua script, so two workers racing with the
same guess cannot both slip under the limit. Each set keeps its latest 1,000 times and expires
``throttle.forget_s`` after its latest failure, so Redis holds nothing for an address that
stopped.

**Redis down: degraded, neither open nor closed.** Failing closed would make sign-in impossible
exactly when operators may need the console (Redis is down); failing open would silently drop the
throttle. Instead every worker also keeps a copy of the attempts it saw (always, so it is there
when Redis goes); while Redis does not answer, each worker throttles with its copy alone (an
attacker then gets at most N times the budget, as without Redis), and an ERROR is logged when
that starts and every minute it lasts, a WARNING when Redis is back; from then on Redis's counts
rule again (a Redis restarted without persistence has forgotten them, as a restarted worker
would). After a failure Redis is tried again ``retry_s`` later, so a dead Redis does not add its
connect timeout to every sign-in.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from botkit.backends.redis_common import check_url, shown
from botkit.signin_throttle import KEEP, Key, LocalFailureCounts, Throttle, keys

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_S = 5.0  # after Redis failed, count in this process only for this long before trying it again
LOG_EVERY_S = 60.0  # while Redis stays down, the ERROR is repeated this often

# KEYS: the pair key, the address key. ARGV: now, forget_s, pair_free, pair_cap_s, address_free,
# address_cap_s, member, keep, ttl_ms, count (1: count the attempt when it may go ahead).
# Returns the wait in seconds as a string (Lua numbers would be truncated to integers).
_BEGIN = """
local now, forget = tonumber(ARGV[1]), tonumber(ARGV[2])
local free = {tonumber(ARGV[3]), tonumber(ARGV[5])}
local cap = {tonumber(ARGV[4]), tonumber(ARGV[6])}
local wait = 0
for i = 1, 2 do
  if ARGV[10] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - forget) end
  local count = redis.call('ZCOUNT', KEYS[i], '(' .. (now - forget), '+inf')
  if count >= free[i] then
    local last = tonumber(redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')[2])
    local delay = math.min(cap[i], 2 ^ math.min(count - free[i], 32))
    wait = math.max(wait, last + delay - now)
  end
end
if wait > 0 or ARGV[10] ~= '1' then return tostring(wait) end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[7])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(tonumber(ARGV[8]) + 1))
  redis.call('PEXPIRE', KEYS[i], ARGV[9])
end
return '0'
"""


class RedisFailureCounts:
    """:class:`~botkit.signin_throttle.FailureCounts` shared through Redis at ``url`` (see the
    module docstring); ``prefix``: storage.redis_prefix."""

    def __init__(self, url: str, *, prefix: str = "botkit:", throttle: Throttle | None = None,
                 retry_s: float = RETRY_S, client: redis.Redis | None = None):
        check_url(url)
        self.url = url
        self.prefix = prefix
        self.retry_s = retry_s
        self.local = LocalFailureCounts(throttle or Throttle())
        # Short timeouts: a sign-in waits for this. One quick retry covers a dropped connection
        # (a Redis restart); past that the worker counts on its own (see the module docstring).
        self._client = client or redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError], client_name="botkit-signin")
        self._script = self._client.register_script(_BEGIN)
        self._state = threading.Lock()
        self._down_since: float | None = None  # monotonic time Redis stopped answering
        self._retry_at = 0.0
        self._logged_at = 0.0

    def __repr__(self) -> str:
        return f"RedisFailureCounts({shown(self.url)}, prefix={self.prefix!r})"

    @property
    def throttle(self) -> Throttle:
        return self.local.throttle

    @throttle.setter
    def throttle(self, value: Throttle) -> None:
        self.local.throttle = value

    @property
    def degraded(self) -> bool:
        """Whether Redis was found unreachable and the counts are this process's alone for now."""
        return self._down_since is not None

    def key(self, key: Key) -> str:
        # An address or account name cannot break out of its part: ':' in it is escaped.
        return self.prefix + "signin:" + ":".join(part.replace("%", "%25").replace(":", "%3A") for part in key)

    # -- Redis, or this process alone when it does not answer --------------------------------------
    def _redis(self, fn: Callable[[], T], doing: str) -> T | None:
        """fn's result, or None when Redis is down (logged: see the module docstring)."""
        now = time.monotonic()
        with self._state:
            if self._down_since is not None and now < self._retry_at:
                self._log_still_down(now)
                return None
        try:
            result = fn()
        except (redis.RedisError, OSError) as exc:
            with self._state:
                first = self._down_since is None
                if first:
                    self._down_since = now
                self._retry_at = now + self.retry_s
                if first or now - self._logged_at >= LOG_EVERY_S:
                    self._logged_at = now
                    log.error("sign-in throttle: Redis at %s does not answer (%s: %s) %s; until it is back each worker "
                              "counts failed sign-ins on its own, so an attacker spread over N workers gets N times "
                              "the tries. Start Redis or fix %s", shown(self.url), type(exc).__name__,
                              str(exc).rstrip(". "), doing, "BOTKIT_REDIS_URL")
            return None
        with self._state:
            if self._down_since is not None:
                log.warning("sign-in throttle: Redis at %s answers again after %.0f s; failure counts are shared "
                            "again", shown(self.url), now - self._down_since)
                self._down_since = None
        return result

    def _log_still_down(self, now: float) -> None:
        if now - self._logged_at >= LOG_EVERY_S and self._down_since is not None:
            self._logged_at = now
            log.error("sign-in throttle: Redis at %s still not answering after %.0f s; failed sign-ins are counted "
                      "per worker", shown(self.url), now - self._down_since)

    def _call(self, ip: str, name: str, now: float, count: bool) -> float:
        pair, address = keys(ip, name)
        t = self.throttle
        member = f"{now!r}:{uuid.uuid4().hex[:12]}"  # two workers' attempts at the same instant are two
        ttl_ms = int(t.forget_s * 1000) + 1000
        result = self._script(keys=[self.key(pair), self.key(address)],
                              args=[repr(now), repr(t.forget_s), t.pair_free, repr(t.pair_cap_s), t.address_free,
                                    repr(t.address_cap_s), member, KEEP, ttl_ms, "1" if count else "0"])
        return max(0.0, float(result))

    # -- FailureCounts -----------------------------------------------------------------------------
    def begin(self, ip: str, name: str, now: float) -> float:
        shared = self._redis(lambda: self._call(ip, name, now, count=True), "while checking a sign-in")
        if shared is None:
            return self.local.begin(ip, name, now)
        if shared == 0:
            self.local.record(ip, name, now)  # counted in Redis; kept here too, for when Redis goes
        return shared

    def retry_after(self, ip: str, name: str, now: float) -> float:
        shared = self._redis(lambda: self._call(ip, name, now, count=False), "while checking a sign-in")
        return self.local.retry_after(ip, name, now) if shared is None else shared

    def succeeded(self, ip: str, name: str) -> None:
        self.local.succeeded(ip, name)
        pair, address = keys(ip, name)

        def clear() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self.key(pair))
            pipe.zpopmax(self.key(address))
            pipe.execute()

        self._redis(clear, "while clearing a successful sign-in's failures")

    def close(self) -> None:
        self._client.close()


__all__ = ["RedisFailureCounts"]
