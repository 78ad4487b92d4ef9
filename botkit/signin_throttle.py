"""The sign-in throttle's rule (:class:`Throttle`) and where its failure counts are kept
(:class:`FailureCounts`): in this process (:class:`LocalFailureCounts`, the default) or in Redis
(``botkit.backends.redis_counters.RedisFailureCounts``, when ``BOTKIT_REDIS_URL`` is set), so that
several workers slow one attacker down together instead of each granting it its own budget.

Counts are kept per key: ``("pair", address, account)`` and ``("address", address)``. The
times are Auth's clock (seconds); two workers' clocks must agree to within a second or so (NTP).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Key = tuple[str, ...]
KEEP = 1000  # failure times kept per key: the delays need only the recent ones


@dataclass(frozen=True)
class Throttle:
    """How failed sign-ins are slowed down (never an account locked for everyone).

    * Per (account, client address): ``pair_free`` failures are free; after that each failure
      doubles the wait before that address may try that account again (1 s, 2 s, 4 s, ...,
      at most ``pair_cap_s``). The same account from another address is not affected, so an
      attacker cannot lock the real user out; a success from that address clears it.
    * Per client address, over all accounts (a password spray: few guesses on many names):
      ``address_free`` failures are free, then the address waits a doubling delay of at most
      ``address_cap_s`` before each try, whatever the account. The threshold is far above what
      people sharing an address mistype, and the cap keeps the right password from that
      address a short wait away, never a lock-out. A success does not clear it (one valid
      account must not reset a spray).

    Failures are forgotten ``forget_s`` after they happened. An attempt counts as a failure
    from the moment it starts until it succeeds, so parallel guesses are throttled too.
    """

    pair_free: int = 3
    pair_cap_s: float = 300.0
    address_free: int = 100
    address_cap_s: float = 60.0
    forget_s: float = 3600.0
    max_keys: int = 50_000  # bounded memory under a spray of names or addresses (in-process counts)

    @staticmethod
    def delay(count: int, free: int, cap: float) -> float:
        """The wait after the last of ``count`` failures (0 while they are free)."""
        return 0.0 if count < free else min(cap, 2.0 ** min(count - free, 32))

    def wait_for(self, pair: tuple[int, float], address: tuple[int, float], now: float) -> float:
        """Seconds until the next try (0: now), given (count, time of the latest) of both keys."""
        wait = 0.0
        for (count, last), free, cap in ((pair, self.pair_free, self.pair_cap_s),
                                         (address, self.address_free, self.address_cap_s)):
            if count:
                wait = max(wait, last + self.delay(count, free, cap) - now)
        return wait

    def wait(self, pair: list[float], address: list[float], now: float) -> float:
        """:meth:`wait_for` given the recent failure times of both keys."""
        return self.wait_for((len(pair), pair[-1] if pair else 0.0), (len(address), address[-1] if address else 0.0),
                             now)


def keys(ip: str, name: str) -> tuple[Key, Key]:
    """The (account, address) key and the address key of an attempt."""
    return ("pair", ip, name.lower()), ("address", ip)


@runtime_checkable
class FailureCounts(Protocol):
    """Recent sign-in failures per key; check-and-count is one atomic step."""

    throttle: Throttle  # the rule the counts are judged by

    def begin(self, ip: str, name: str, now: float) -> float:
        """0 when the attempt may go ahead (it is counted as a failure until :meth:`succeeded`),
        else the seconds to wait (nothing is counted)."""
        ...

    def retry_after(self, ip: str, name: str, now: float) -> float:
        """Seconds until this address may try this account (0: now); changes nothing."""
        ...

    def succeeded(self, ip: str, name: str) -> None:
        """Clear the (account, address) failures; the address keeps its others, less this attempt."""
        ...

    def close(self) -> None: ...


class LocalFailureCounts:
    """The counts in this process's memory, under a lock (bounded by ``throttle.max_keys``)."""

    def __init__(self, throttle: Throttle, lock: threading.Lock | threading.RLock | None = None):
        self.throttle = throttle
        self._lock = lock or threading.Lock()
        self._failures: dict[Key, list[float]] = {}

    def __repr__(self) -> str:
        return "LocalFailureCounts()"

    def _recent(self, key: Key, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.throttle.forget_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def _prune(self, now: float) -> None:
        if len(self._failures) <= self.throttle.max_keys:
            return
        for key in list(self._failures):
            self._recent(key, now)
        if len(self._failures) > self.throttle.max_keys:  # still too many: forget the oldest half
            by_age = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in by_age[:len(by_age) // 2]:
                del self._failures[key]

    def retry_after(self, ip: str, name: str, now: float) -> float:
        pair, address = keys(ip, name)
        with self._lock:
            return self.throttle.wait(self._recent(pair, now), self._recent(address, now), now)

    def begin(self, ip: str, name: str, now: float) -> float:
        pair, address = keys(ip, name)
        with self._lock:
            wait = self.throttle.wait(self._recent(pair, now), self._recent(address, now), now)
            if wait > 0:
                return wait
            self._prune(now)
            for key in (pair, address):
                times = self._failures.setdefault(key, [])
                times.append(now)
                del times[:-KEEP]
            return 0.0

    def record(self, ip: str, name: str, now: float) -> None:
        """Count an attempt that was allowed elsewhere (a shared store's shadow copy), unchecked."""
        pair, address = keys(ip, name)
        with self._lock:
            self._prune(now)
            for key in (pair, address):
                times = self._failures.setdefault(key, [])
                times.append(now)
                del times[:-KEEP]

    def succeeded(self, ip: str, name: str) -> None:
        pair, address = keys(ip, name)
        with self._lock:
            self._failures.pop(pair, None)
            times = self._failures.get(address)
            if times:
                times.pop()

    def close(self) -> None:
        pass


__all__ = ["KEEP", "FailureCounts", "Key", "LocalFailureCounts", "Throttle", "keys"]
