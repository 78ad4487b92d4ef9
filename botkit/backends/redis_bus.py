"""An :class:`~botkit.events.EventBus` between server workers, on a Redis stream.

Every worker's engine publishes to one stream (``{prefix}events``); every worker reads it, so an
agent's reply committed on worker A reaches the customer's websocket on worker B and the agent
console's live page on every worker.

Why a stream (XADD / XREAD from the last id read) and not pub/sub: pub/sub drops whatever is
published while a subscriber is disconnected. A worker that lost its connection (a Redis
restart, a network blip) reads on from the last id it had, so it catches up on the events
published meanwhile, in order. The stream is capped (``maxlen`` entries, trimmed
approximately), so it does not grow with traffic; a reader away for longer than that many
events loses the oldest (logged). Events are notifications: the turns themselves are in the
conversation store, which is what a customer's resumed chat reads.

Delivery:

- Events this worker publishes go to its own listeners at once, inside ``publish``, as the
  in-process bus does (a channel that reads history under the conversation's lock and then
  follows events sees each turn once), and are then written to the stream; the reader skips
  them when they come back.
- Events of other workers are delivered by one reader task, one after the other in stream
  order, marked ``Event.remote``. A listener that acts once for everyone (sending a Telegram
  message) must act on local events only; one that serves its own sockets takes both.
- Redis unreachable while publishing: the local listeners still get the event; it waits in an
  outbox (in order, up to ``outbox_limit``) and is written when Redis is back. The reader
  retries with a growing pause (up to 2 s) and logs once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis

from botkit.backends import event_codec
from botkit.backends.redis_common import CONNECTION_ERRORS, RedisError, connect, ping, shown, unavailable
from botkit.events import Event, Listener

log = logging.getLogger(__name__)

_FAILURES: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, RedisError)
_POKE_FAILURES: tuple[type[Exception], ...] = (TimeoutError, *_FAILURES)


class RedisEventBus:
    """Listeners of this process, plus the events of every other process on the same stream."""

    def __init__(self, url: str, *, prefix: str = "botkit:", maxlen: int = 10_000, block_ms: int = 1000,
                 outbox_limit: int = 10_000) -> None:
        self.url = url
        self.stream = f"{prefix}events"
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.outbox_limit = outbox_limit
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # this bus, in the entries it writes
        self._listeners: list[Listener] = []
        self._client: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._outbox: deque[str] = deque()
        self._outbox_ready = asyncio.Event()
        self._last_id = "0-0"
        self._stopping = False
        self.delivered_remote = 0  # events of other workers delivered (for tests and metrics)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, and read the stream from its current end: a fresh worker does not replay
        old events. Redis not there: a :class:`~botkit.errors.StorageError` saying so."""
        if self._reader is not None:
            return
        self._client = connect(self.url, f"botkit-bus-{self.origin}")
        await ping(self._client, self.url)
        try:
            last: Any = await self._client.xrevrange(self.stream, count=1)
        except CONNECTION_ERRORS as exc:
            raise unavailable(self.url, exc, "reading the event stream") from exc
        self._last_id = last[0][0].decode() if last else "0-0"
        self._stopping = False
        self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")
        self._flusher = asyncio.create_task(self._flush(), name="redis-bus-outbox")

    async def close(self) -> None:
        """Write what waits in the outbox (up to 2 s), stop reading, disconnect. Listeners stay
        subscribed, as with the in-process bus."""
        if self._flusher is not None and self._outbox:
            try:
                await asyncio.wait_for(self._drained(), 2.0)
            except TimeoutError:
                log.error("event bus: %d events could not be written to Redis at %s before closing; "
                          "other workers miss them", len(self._outbox), shown(self.url))
        # The reader is not cancelled inside its blocking XREAD (redis-py can hang on that): it is
        # told to stop and woken by an entry of its own, then ends within one read.
        self._stopping = True
        if self._reader is not None and self._client is not None:
            try:
                await asyncio.wait_for(self._client.xadd(self.stream, {"origin": self.origin, "poke": "1"},
                                                         maxlen=self.maxlen, approximate=True), 1.0)
            except _POKE_FAILURES:
                pass  # Redis is gone: the read ends on its own error or timeout
        for task, grace in ((self._reader, self.block_ms / 1000 + 1.0), (self._flusher, 0.0)):
            if task is None:
                continue
            done, _ = await asyncio.wait([task], timeout=grace) if grace else (set(), None)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        self._reader = self._flusher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- listeners -----------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def _deliver(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not break the conversation
                log.exception("listener failed on %s event for conversation %s", event.kind, event.conversation.id)

    async def publish(self, event: Event) -> None:
        """Deliver to this process's listeners, then queue the event for the stream (written in
        publish order by one task, so a Redis outage never blocks or fails the engine)."""
        await self._deliver(event)
        if self._flusher is None:
            log.error("event bus not started: %s event for conversation %s not sent to other workers",
                      event.kind, event.conversation.id)
            return
        if len(self._outbox) >= self.outbox_limit:
            self._outbox.popleft()
            log.error("event bus: outbox full (%d events, Redis at %s unreachable): dropped the oldest event",
                      self.outbox_limit, shown(self.url))
        self._outbox.append(event_codec.encode(event))
        self._outbox_ready.set()

    # -- the tasks -----------------------------------------------------------------------------
    async def _drained(self) -> None:
        while self._outbox:
            await asyncio.sleep(0.01)

    async def _flush(self) -> None:
        pause, down = 0.05, False
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox and self._client is not None:
                try:
                    await self._client.xadd(self.stream, {"origin": self.origin, "event": self._outbox[0]},
                                            maxlen=self.maxlen, approximate=True)
                except _FAILURES as exc:
                    if not down:
                        log.warning("event bus: cannot write to Redis at %s (%s); %d events wait and are sent "
                                    "when it is back", shown(self.url), exc, len(self._outbox))
                        down = True
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                self._outbox.popleft()
                if down:
                    log.warning("event bus: Redis at %s is back; the waiting events were sent", shown(self.url))
                pause, down = 0.05, False

    async def _read(self) -> None:
        pause, down = 0.05, False
        while not self._stopping and self._client is not None:
            try:
                batches: Any = await self._client.xread({self.stream: self._last_id}, count=100, block=self.block_ms)
            except _FAILURES as exc:
                if not down:
                    log.warning("event bus: lost Redis at %s (%s); reconnecting, then reading on from the last "
                                "event read", shown(self.url), exc)
                    down = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            if down:
                log.warning("event bus: reconnected to Redis at %s", shown(self.url))
            pause, down = 0.05, False
            for _stream, entries in batches or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id.decode()
                    if fields.get(b"origin", b"").decode() == self.origin or b"poke" in fields:
                        continue  # ours (delivered when it was published), or a closing reader's wake-up
                    try:
                        event = event_codec.decode(fields[b"event"])
                    except (KeyError, ValueError) as exc:
                        log.error("event bus: skipped stream entry %s: %s", self._last_id, exc)
                        continue
                    self.delivered_remote += 1
                    await self._deliver(replace(event, remote=True))


__all__ = ["RedisEventBus"]
