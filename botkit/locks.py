"""Per-conversation ordering: while one message of a conversation is answered, the next waits.

The engine answers the messages of one conversation strictly in arrival order and different
conversations concurrently. It gets that from a :class:`ConversationLock`: ``async with
locks.hold(conversation_id):`` around everything that reads and then writes a conversation.
Today one process serves everything, so :class:`InProcessConversationLock` is an
``asyncio.Lock`` per conversation id. The protocol is the seam for the scale-out, where
several server workers share one database and two of them must not answer the same
conversation at once. A backend proves it keeps the engine's promises by passing
:class:`botkit.testing.ConversationLockContract`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class ConversationLock(Protocol):
    """Mutual exclusion per conversation id, first come first served.

    - Two holders of the same id never overlap; different ids never wait on each other.
    - Waiters get the id in the order they called ``hold`` (entered the ``async with``): the
      engine takes a message's place before its first ``await``, so messages sent one after
      the other are answered in that order.
    - Leaving the block releases the id, also on an exception or a cancellation; a waiter
      cancelled before its turn gives up its place without holding the id.
    """

    async def start(self) -> None:
        """Connect (if the backend needs to); the engine calls it from ``Engine.start``."""
        ...

    async def close(self) -> None:
        """Disconnect; safe to call twice. The engine calls it from ``Engine.close``."""
        ...

    def hold(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """``async with locks.hold(cid):`` runs the block while no one else holds ``cid``."""
        ...

    def active(self) -> int:
        """How many conversation ids this process holds or waits for now: 0 when idle, so
        bookkeeping for finished conversations is not kept (no growth with traffic)."""
        ...


class InProcessConversationLock:
    """An ``asyncio.Lock`` per conversation id (FIFO), dropped when nobody holds or waits on it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, int] = {}

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to disconnect."""

    def active(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        # No await before the lock is asked for: the caller's place is taken when it enters.
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        self._waiters[conversation_id] = self._waiters.get(conversation_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiters[conversation_id] -= 1
            if self._waiters[conversation_id] == 0:
                del self._waiters[conversation_id]
                del self._locks[conversation_id]


__all__ = ["ConversationLock", "InProcessConversationLock"]
