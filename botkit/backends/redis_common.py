"""The Redis connection the bus and the lock share the settings of: a URL checked up front,
retries on a dropped connection, and errors that say what to do.

``BOTKIT_REDIS_URL=redis://host:6379/0`` (or the variable ``storage.redis_url_env`` names)
turns the Redis backends on (botkit/app/compose.py). The password in a URL is never logged.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from botkit.errors import ConfigError, StorageError

#: What a dropped connection raises (the backends retry on these and reconnect).
CONNECTION_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

__all__ = ["CONNECTION_ERRORS", "RedisError", "check_url", "connect", "ping", "shown", "unavailable"]


def shown(url: str) -> str:
    """``url`` fit for a log line or an error: the password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_url(url: str) -> None:
    """A :class:`~botkit.errors.ConfigError` when ``url`` cannot be a Redis URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(f"Redis URL {shown(url)!r} is not redis://host[:port][/db] (or rediss://, unix://): "
                          "fix BOTKIT_REDIS_URL (or the variable storage.redis_url_env names)")


def connect(url: str, name: str | None = None) -> Redis:
    """A client for ``url`` (nothing is sent yet: :func:`ping` checks it is there).

    A command that fails on a dropped connection is retried 3 times (50 ms, 100 ms, 200 ms)
    on a fresh connection; past that the caller sees the error and decides (wait, or fail).
    ``name``: the connections' CLIENT SETNAME (what `redis-cli client list` shows).
    """
    check_url(url)
    try:
        return Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 3),
                              retry_on_error=[RedisConnectionError, RedisTimeoutError],
                              socket_connect_timeout=3, socket_timeout=5, health_check_interval=10,
                              client_name=name)
    except ValueError as exc:
        raise ConfigError(f"Redis URL {shown(url)!r}: {exc}") from exc


def unavailable(url: str, exc: BaseException, doing: str) -> StorageError:
    """The error for Redis not answering while ``doing`` something."""
    return StorageError(f"Redis at {shown(url)} is not reachable ({doing}): {str(exc).rstrip('. ')}. Start it "
                        "(e.g. `service redis-server start`) or fix BOTKIT_REDIS_URL; unset it to keep "
                        "events and locks inside this one process")


async def ping(client: Redis, url: str) -> None:
    """Fail now, with :func:`unavailable`'s message, when Redis is not there or refuses us."""
    try:
        await client.ping()
    except CONNECTION_ERRORS as exc:
        raise unavailable(url, exc, "at start-up") from exc
    except RedisError as exc:  # a wrong password, a database number out of range, ...
        raise StorageError(f"Redis at {shown(url)} refused the connection: {exc}. "
                           "Check the password and database in BOTKIT_REDIS_URL") from exc
