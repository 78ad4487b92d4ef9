"""The event bus and conversation lock seams: the in-process implementations pass their
contracts, the contracts catch broken backends, and the engine uses what it is given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from botkit.config import DialogueConfig
from botkit.engine import Engine
from botkit.events import Event, InProcessEventBus, Listener
from botkit.locks import InProcessConversationLock
from botkit.testing import (
    ConversationLockContract,
    EventBusContract,
    InMemoryConversationStore,
    ScriptedResponder,
    StaticRetriever,
    hit,
)
from botkit.types import ConversationState, Escalation, IncomingMessage

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class TestInProcessEventBus(EventBusContract):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[InProcessEventBus]:
        bus = InProcessEventBus()
        await bus.start()
        yield bus
        await bus.close()


class TestInProcessConversationLock(ConversationLockContract):
    @pytest.fixture
    async def locks(self) -> AsyncIterator[InProcessConversationLock]:
        locks = InProcessConversationLock()
        await locks.start()
        yield locks
        await locks.close()


# -- the contracts fail on broken backends ------------------------------------------------------
Failed = (AssertionError, pytest.fail.Exception)


class FragileBus(InProcessEventBus):
    """Stops delivering an event at the first listener that fails."""

    async def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                return


class DeafBus(InProcessEventBus):
    """Unsubscribing does nothing."""

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        super().subscribe(listener)
        return lambda: None


class ConcurrentBus(InProcessEventBus):
    """Delivers each event in its own task: a slow listener sees events out of order."""

    async def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            asyncio.get_running_loop().create_task(listener(event))


class NoLock(InProcessConversationLock):
    """Holds nothing."""

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        await asyncio.sleep(0)
        yield


class GlobalLock(InProcessConversationLock):
    """One lock for every conversation."""

    def hold(self, conversation_id: str):  # type: ignore[no-untyped-def]
        return super().hold("everything")


class LeakyLock(InProcessConversationLock):
    """Keeps a lock for every conversation it has ever seen."""

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(conversation_id, asyncio.Lock()):
            yield


class LifoLock(InProcessConversationLock):
    """Serves the newest waiter first."""

    def __init__(self) -> None:
        super().__init__()
        self._held: set[str] = set()
        self._queue: dict[str, list[asyncio.Future[None]]] = {}

    def active(self) -> int:
        return len(self._held)

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        if conversation_id in self._held:
            waiter = asyncio.get_running_loop().create_future()
            self._queue.setdefault(conversation_id, []).append(waiter)
            await waiter
        self._held.add(conversation_id)
        try:
            yield
        finally:
            queue = self._queue.get(conversation_id)
            if queue:
                queue.pop().set_result(None)  # hands the id over, still held
            else:
                self._queue.pop(conversation_id, None)
                self._held.discard(conversation_id)


def bus_contract() -> EventBusContract:
    contract = EventBusContract()
    contract.timeout = 0.2
    return contract


def lock_contract() -> ConversationLockContract:
    contract = ConversationLockContract()
    contract.timeout = 0.2
    return contract


async def test_the_bus_contract_catches_a_bus_that_stops_at_a_failing_listener(caplog: pytest.LogCaptureFixture):
    with pytest.raises(Failed):
        await bus_contract().test_a_failing_listener_is_logged_and_does_not_stop_the_others(FragileBus(), caplog)


async def test_the_bus_contract_catches_an_unsubscribe_that_does_nothing():
    with pytest.raises(Failed):
        await bus_contract().test_unsubscribe_stops_delivery_and_is_harmless_twice(DeafBus())


async def test_the_bus_contract_catches_out_of_order_delivery():
    with pytest.raises(Failed):
        await bus_contract().test_a_slow_listener_still_gets_events_in_order(ConcurrentBus())


async def test_the_lock_contract_catches_a_lock_that_holds_nothing():
    with pytest.raises(Failed):
        await lock_contract().test_two_holders_of_one_id_never_overlap(NoLock())


async def test_the_lock_contract_catches_one_lock_for_all_conversations():
    with pytest.raises(Failed):
        await lock_contract().test_different_ids_do_not_wait_on_each_other(GlobalLock())


async def test_the_lock_contract_catches_unfair_order_and_leaks():
    with pytest.raises(Failed):
        await lock_contract().test_waiters_get_the_id_in_the_order_they_asked(LifoLock())
    with pytest.raises(Failed):
        await lock_contract().test_no_bookkeeping_is_left_after_use(LeakyLock())


# -- the engine uses the bus and lock it is given -----------------------------------------------
class RecordingBus:
    """An EventBus (not the in-process class) that records what was published, then delivers it."""

    def __init__(self) -> None:
        self.inner = InProcessEventBus()
        self.published: list[Event] = []
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self) -> None:
        self.calls.append("close")

    async def publish(self, event: Event) -> None:
        self.published.append(event)
        await self.inner.publish(event)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self.calls.append("subscribe")
        return self.inner.subscribe(listener)


class RecordingLock(InProcessConversationLock):
    """The in-process lock, recording which ids were held, and what happened while held."""

    def __init__(self, bus: RecordingBus) -> None:
        super().__init__()
        self.bus = bus
        self.held: list[tuple[str, int, int]] = []  # (id, events published before, ... when released)

    @asynccontextmanager
    async def hold(self, conversation_id: str) -> AsyncIterator[None]:
        async with super().hold(conversation_id):
            before = len(self.bus.published)
            yield
            self.held.append((conversation_id, before, len(self.bus.published)))


def asks_for_human(state: ConversationState) -> Escalation | None:
    if "human" in state.message.text.lower():
        return Escalation("asked_for_human", "0:asks_for_human", "said 'human'", "summary")
    return None


async def test_the_engine_publishes_on_the_bus_and_holds_the_lock_it_is_given():
    bus = RecordingBus()
    locks = RecordingLock(bus)
    retriever = StaticRetriever({"how do refunds work": [hit("refunds", "Refunds reach your card within 5 days.")]})
    engine = Engine(retriever=retriever,
                    responder=ScriptedResponder(["Within 5 days.", "(drafted, replaced by the hand-off)",
                                                 "Within 5 days."]),
                    store=InMemoryConversationStore(), rules=[("0:asks_for_human", asks_for_human)],
                    config=DialogueConfig(), clock=lambda: T0, bus=bus, locks=locks)
    heard: list[Event] = []

    async def listener(event: Event) -> None:
        heard.append(event)

    async with engine:
        unsubscribe = engine.subscribe(listener)
        reply = await engine.handle(IncomingMessage("c1", "how do refunds work", "web", "u1"))
        escalated = await engine.handle(IncomingMessage("c1", "a human please", "web", "u1"))
        unsubscribe()
        await engine.handle(IncomingMessage("c2", "how do refunds work", "web", "u2"))
    assert bus.calls == ["start", "subscribe", "close"]
    assert [(e.kind, e.conversation.id) for e in bus.published] == \
        [("customer", "c1"), ("bot", "c1"), ("customer", "c1"), ("bot", "c1"), ("handoff", "c1"),
         ("customer", "c2"), ("bot", "c2")]
    first_customer, first_bot = bus.published[:2]
    assert first_customer.turn.text == "how do refunds work" and first_customer.turn.seq == 1
    assert first_bot.turn.text == reply.text == "Within 5 days." and first_bot.turn.seq == reply.turn_seq == 2
    assert bus.published[4].handoff.reason == "asked_for_human" and escalated.action == "escalate"
    assert heard == bus.published[:5]  # Engine.subscribe is the bus's: unsubscribed before c2
    # each message was answered, and its events published, while its conversation was held
    assert locks.held == [("c1", 0, 2), ("c1", 2, 5), ("c2", 5, 7)]
    assert locks.active() == 0
