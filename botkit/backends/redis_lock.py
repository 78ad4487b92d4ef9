"""A :class:`~botkit.locks.ConversationLock` between server workers, on Redis: a FIFO ticket
queue per conversation, with leases.

For each conversation id a Redis list ``{prefix}lock:{id}`` holds the tickets (random tokens)
of the holder and its waiters, in the order they asked. The ticket at the head holds the id.
Every ticket has a lease key ``{prefix}lease:{token}`` that expires after ``ttl`` seconds
unless its process renews it (every ``ttl / 3``, one task per process for all its tickets).

- **Order.** Tickets are queued by one atomic script; within one process a conversation's
  tickets are queued one after the other in the order ``hold`` was entered (a local FIFO
  guards the queueing), so messages that arrived in order on one worker are answered in order.
  Between workers the order is the order in which the tickets reached Redis: two webhook
  deliveries arriving at two workers at once are answered one at a time, the first queued first.
- **A dead holder** (a killed worker) stops renewing: its lease expires after ``ttl`` and the
  next waiter, which checks the head every ``poll`` seconds while waiting, skips its ticket.
  A dead waiter's ticket is skipped the same way.
- **Release** is by the owner only: the script removes the caller's own token (a holder whose
  lease expired cannot release the next holder's turn), then wakes the next live ticket
  (a push to ``{prefix}wake:{token}``, which that waiter blocks on).
- **Redis unreachable**: queueing waits and retries for up to ``wait_for_redis`` seconds, then
  raises :class:`~botkit.errors.StorageError` (the message stays in the inbox, pending, and is
  answered when the channel retries or restarts). A release that cannot reach Redis is logged;
  the lease then expires on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from botkit.backends.redis_common import CONNECTION_ERRORS, RedisError, connect, ping, shown, unavailable

log = logging.getLogger(__name__)

_RENEW_FAILURES: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, RedisError)

# KEYS[1] queue, KEYS[2] lease; ARGV[1] token, ARGV[2] ttl ms
_ENQUEUE = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return redis.call('LLEN', KEYS[1]) - 1
"""

# KEYS[1] queue; ARGV[1] token, ARGV[2] key prefix. 0: ours, n > 0: n tickets ahead, -1: not queued
_TRY = """
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return -1 end
  if head == ARGV[1] then return 0 end
  if redis.call('EXISTS', ARGV[2] .. 'lease:' .. head) == 1 then
    local at = redis.call('LPOS', KEYS[1], ARGV[1])
    if not at then return -1 end
    return at
  end
  redis.call('LPOP', KEYS[1])
end
"""

# KEYS[1] queue; ARGV[1] token, ARGV[2] key prefix, ARGV[3] ttl ms. 1: it held the id, 0: it waited
_RELEASE = """
local was_head = redis.call('LINDEX', KEYS[1], 0) == ARGV[1]
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('DEL', ARGV[2] .. 'lease:' .. ARGV[1], ARGV[2] .. 'wake:' .. ARGV[1])
if not was_head then return 0 end
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return 1 end
  if redis.call('EXISTS', ARGV[2] .. 'lease:' .. head) == 1 then
    local wake = ARGV[2] .. 'wake:' .. head
    redis.call('RPUSH', wake, '1')
    redis.call('PEXPIRE', wake, ARGV[3])
    return 1
  end
  redis.call('LPOP', KEYS[1])
end
"""


class RedisConversationLock:
    """Per-conversation FIFO mutual exclusion shared by every process on the same Redis."""

    def __init__(self, url: str, *, prefix: str = "botkit:", ttl: float = 15.0, poll: float | None = None,
                 wait_for_redis: float = 30.0) -> None:
        if ttl <= 0.1:
            raise ValueError(f"ttl must be more than 0.1 s (got {ttl})")
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.poll = poll if poll is not None else min(1.0, ttl / 4)
        self.wait_for_redis = wait_for_redis
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._tickets: dict[str, str] = {}  # token -> conversation id, held or waiting in this process
        self._local: dict[str, asyncio.Lock] = {}  # conversation id -> the queueing FIFO of this process
        self._users: dict[str, int] = {}  # conversation id -> holders and waiters in this process
        self._inflight: set[asyncio.Future[Any]] = set()  # BLPOPs of waiters, also of those that left
        self._queueing = 0  # holds entered whose ticket is not in Redis yet
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # its connections' client name ends so

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    async def start(self) -> None:
        """Connect; Redis not there: a :class:`~botkit.errors.StorageError` saying so."""
        if self._client is not None:
            return
        client = connect(self.url, f"botkit-lock-{self.name}")
        await ping(client, self.url)
        self._client = client
        self._scripts = {name: client.register_script(text)
                         for name, text in (("enqueue", _ENQUEUE), ("try", _TRY), ("release", _RELEASE))}
        self._renewer = asyncio.create_task(self._renew(), name="redis-lock-renewer")

    async def close(self) -> None:
        """Stop renewing and disconnect (tickets still queued expire after ``ttl``)."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if self._inflight:  # waiters that left: their BLPOPs end within ``poll``
            await asyncio.wait(set(self._inflight), timeout=self.poll + 1.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def active(self) -> int:
        return len(self._users)

    def _queue(self, conversation_id: str) -> str:
        return f"{self.prefix}lock:{conversation_id}"

    # -- holding -------------------------------------------------------------------------------
    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        # No await before the local FIFO is asked for: the caller's place is taken when it enters.
        local = self._local.setdefault(conversation_id, asyncio.Lock())
        self._users[conversation_id] = self._users.get(conversation_id, 0) + 1
        token = uuid.uuid4().hex
        self._queueing += 1
        try:
            try:
                try:
                    async with local:
                        await self._enqueue(conversation_id, token)
                finally:
                    self._queueing -= 1
                await self._wait_turn(conversation_id, token)
                yield
            finally:  # also when cancelled while queueing: the ticket may have reached Redis
                await asyncio.shield(self._release(conversation_id, token))
        finally:
            self._users[conversation_id] -= 1
            if self._users[conversation_id] == 0:
                del self._users[conversation_id]
                del self._local[conversation_id]

    async def _call(self, name: str, keys: list[str], args: list[Any], doing: str) -> int:
        """Run a script; on a dropped connection, retry until ``wait_for_redis`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_for_redis
        pause = 0.05
        while True:
            if self._client is None:
                raise RuntimeError("RedisConversationLock used before start() (or after close())")
            try:
                return int(await self._scripts[name](keys=keys, args=args))
            except CONNECTION_ERRORS as exc:
                if loop.time() + pause > deadline:
                    raise unavailable(self.url, exc, doing) from exc
                log.warning("conversation lock: Redis at %s unreachable while %s (%s); retrying",
                            shown(self.url), doing, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _enqueue(self, conversation_id: str, token: str) -> None:
        self._tickets[token] = conversation_id
        try:
            await self._call("enqueue", [self._queue(conversation_id), f"{self.prefix}lease:{token}"],
                             [token, self._ttl_ms], f"queueing for conversation {conversation_id}")
        except BaseException:
            self._tickets.pop(token, None)
            raise

    async def _wait_turn(self, conversation_id: str, token: str) -> None:
        queue = self._queue(conversation_id)
        while True:
            ahead = await self._call("try", [queue], [token, self.prefix],
                                     f"waiting for conversation {conversation_id}")
            if ahead == 0:
                return
            if ahead < 0:  # our ticket is gone (Redis restarted empty, or our lease lapsed): queue again
                log.warning("conversation lock: the ticket for conversation %s was lost (Redis restarted, or "
                            "it was not renewed for %.1f s); queueing again", conversation_id, self.ttl)
                await self._enqueue(conversation_id, token)
                continue
            assert self._client is not None
            # Shielded: a waiter cancelled now (a customer gone, a shutdown) returns at once, and
            # the BLPOP ends on its own within ``poll``; redis-py can hang when a blocking
            # command is cancelled inside it.
            blpop = asyncio.ensure_future(self._client.blpop([f"{self.prefix}wake:{token}"], timeout=self.poll))
            self._inflight.add(blpop)
            blpop.add_done_callback(self._blpop_done)
            try:
                await asyncio.shield(blpop)
            except CONNECTION_ERRORS:
                await asyncio.sleep(min(self.poll, 0.2))  # _call retries (and gives up) on the next round

    def _blpop_done(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a waiter that left does not care how its wait ended

    async def _release(self, conversation_id: str, token: str) -> None:
        self._tickets.pop(token, None)
        if self._client is None:
            return
        try:
            await self._call("release", [self._queue(conversation_id)], [token, self.prefix, self._ttl_ms],
                             f"releasing conversation {conversation_id}")
        except Exception as exc:  # noqa: BLE001 - the lease expires on its own; the block's outcome stands
            log.error("conversation lock: could not release conversation %s (%s); the next holder waits "
                      "until its lease expires (%.1f s)", conversation_id, exc, self.ttl)

    async def _renew(self) -> None:
        """Every ``ttl / 3``: extend the lease of every ticket this process holds or waits with."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            tickets = dict(self._tickets)
            if not tickets or self._client is None:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for token, conversation_id in tickets.items():
                        pipe.pexpire(f"{self.prefix}lease:{token}", self._ttl_ms)
                        pipe.pexpire(self._queue(conversation_id), 2 * self._ttl_ms)
                    results = await pipe.execute()
            except _RENEW_FAILURES as exc:  # the renewer never dies: it retries next round
                log.warning("conversation lock: could not renew %d leases at Redis %s (%s)",
                            len(tickets), shown(self.url), exc)
                continue
            for (token, conversation_id), renewed in zip(tickets.items(), results[::2]):
                if not renewed and token in self._tickets:
                    log.error("conversation lock: the lease for conversation %s had expired before it was "
                              "renewed (Redis unreachable or this process stalled for %.1f s): another worker "
                              "may be answering it too", conversation_id, self.ttl)


__all__ = ["RedisConversationLock"]
