"""Events and the bus that carries them from the engine to listeners (channels, the agent console).

The engine publishes an :class:`Event` after each change it has committed (a customer turn,
a bot reply, a hand-off, an agent taking or releasing a conversation). Today one process
serves everything, so :class:`InProcessEventBus` is a list of listeners called in turn. The
:class:`EventBus` protocol is the seam for the scale-out, where several server workers share
one database and a listener in one worker (the agent console's open page) needs the events
of a conversation another worker answered. A backend proves it keeps the engine's promises
by passing :class:`botkit.testing.EventBusContract`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from botkit.types import Conversation, Handoff, Turn

log = logging.getLogger(__name__)

EventKind = Literal["customer", "bot", "agent", "handoff", "assigned", "returned", "closed", "note"]


@dataclass(frozen=True)
class Event:
    """Something listeners (channels, the agent console) may need to act on."""

    kind: EventKind
    conversation: Conversation
    turn: Turn | None = None
    handoff: Handoff | None = None
    #: True when another process published it (a bus between workers, botkit.backends.redis_bus):
    #: a listener that acts once for everyone (sending a Telegram message) skips it; one that
    #: serves this process's own sockets (the web chat, the console page) takes it. Not compared.
    remote: bool = field(default=False, compare=False)


Listener = Callable[[Event], Awaitable[None]]


class EventBus(Protocol):
    """Delivers every published event to every subscribed listener, in publish order.

    A listener that raises is logged and skipped: the others still get the event, and the
    publisher (the engine, which has already committed the change) never sees the error.
    """

    async def start(self) -> None:
        """Connect (if the backend needs to); the engine calls it from ``Engine.start``."""
        ...

    async def close(self) -> None:
        """Disconnect; safe to call twice. The engine calls it from ``Engine.close``."""
        ...

    async def publish(self, event: Event) -> None:
        """Hand ``event`` to every listener subscribed now."""
        ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event from now on; returns a function that unsubscribes
        (calling it twice is harmless)."""
        ...


class InProcessEventBus:
    """Listeners of this process, called one after the other in subscription order.

    ``publish`` returns after every listener has run, so a listener sees an event before the
    engine moves on to the next one. A listener unsubscribed while an event is being delivered
    still gets that event (delivery walks a snapshot of the listeners), not the following ones.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to disconnect; listeners stay subscribed (a restarted engine keeps its channels)."""

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not break the conversation
                log.exception("listener failed on %s event for conversation %s", event.kind, event.conversation.id)


__all__ = ["Event", "EventBus", "EventKind", "InProcessEventBus", "Listener"]
