"""The contract every :class:`~botkit.events.EventBus` backend must pass.

A backend's tests subclass :class:`EventBusContract` and provide a ``bus`` fixture that
yields a started bus with no listeners (closing it afterwards)::

    from botkit.testing import EventBusContract

    class TestMyBus(EventBusContract):
        @pytest.fixture
        async def bus(self):
            b = MyBus(...)
            await b.start()
            yield b
            await b.close()

Delivery may be asynchronous (a bus between processes): the tests wait up to
:attr:`EventBusContract.timeout` seconds for events to arrive instead of expecting them when
``publish`` returns. They are ``async``: run them with pytest-asyncio in ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from botkit.events import Event, EventBus, EventKind
from botkit.types import Conversation, Escalation, Handoff, Source, Turn

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def event(n: int, kind: EventKind = "bot", conversation_id: str = "c1") -> Event:
    """The ``n``-th test event: a turn (or, for ``kind="handoff"``, a hand-off) of a conversation,
    with every field set so that a bus that serializes events must carry all of them."""
    conv = Conversation(conversation_id, "telegram", "42", "bot", T0, {"vip": True, "n": n}, None, None)
    at = T0 + timedelta(seconds=n)
    if kind == "handoff":
        handoff = Handoff(n, conversation_id, "asked_for_human", "0:asks_for_human", f"turn {n}", "summary",
                          "telegram", "42", at)
        return Event(kind, conv, handoff=handoff)
    turn = Turn(conversation_id, n, "bot", f"reply {n}", at, action="answer", confidence=0.75,
                sources=(Source("refunds", "Refunds", 0.5),), kb_version=3, resolved_query=f"question {n}",
                escalation=Escalation("low_confidence", "1:low", "detail", "summary") if n % 2 else None,
                author="extractive", meta={"grounded": True})
    return Event(kind, conv, turn)


class Recorder:
    """A listener that keeps what it got (and raises on every event if ``fail``)."""

    def __init__(self, fail: bool = False, delay: Callable[[Event], float] | None = None) -> None:
        self.events: list[Event] = []
        self.fail = fail
        self.delay = delay

    async def __call__(self, event: Event) -> None:
        if self.delay is not None:
            await asyncio.sleep(self.delay(event))
        self.events.append(event)
        if self.fail:
            raise RuntimeError(f"listener bug on {event.kind}")


class EventBusContract:
    #: Seconds to wait for events to arrive (a bus between processes delivers asynchronously).
    timeout: float = 5.0

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Return once ``condition()`` holds; fail the test after :attr:`timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while not condition():
            if loop.time() > deadline:
                pytest.fail(f"after {self.timeout}s still waiting for {what}")
            await asyncio.sleep(0.001)

    async def test_every_subscriber_gets_every_event_in_publish_order(self, bus: EventBus):
        listeners = [Recorder() for _ in range(3)]
        for listener in listeners:
            bus.subscribe(listener)
        kinds: list[EventKind] = ["customer", "bot", "handoff", "assigned", "agent", "note", "returned", "closed"]
        published = [event(i, kinds[i % len(kinds)], f"c{i % 3}") for i in range(24)]
        for e in published:
            await bus.publish(e)
        await self.wait_for(lambda: all(len(r.events) >= len(published) for r in listeners), "all events")
        for listener in listeners:
            assert [(e.kind, e.conversation.id) for e in listener.events] == \
                [(e.kind, e.conversation.id) for e in published]
            assert listener.events == published  # whole: every field of the conversation, turn and hand-off

    async def test_a_slow_listener_still_gets_events_in_order(self, bus: EventBus):
        slow = Recorder(delay=lambda e: 0.02 if e.turn is not None and e.turn.seq == 0 else 0.0)
        fast = Recorder()
        bus.subscribe(slow)
        bus.subscribe(fast)
        published = [event(i) for i in range(5)]
        for e in published:
            await bus.publish(e)
        await self.wait_for(lambda: len(slow.events) >= 5 and len(fast.events) >= 5, "all events")
        assert slow.events == published and fast.events == published

    async def test_unsubscribe_stops_delivery_and_is_harmless_twice(self, bus: EventBus):
        leaving, staying = Recorder(), Recorder()
        unsubscribe = bus.subscribe(leaving)
        bus.subscribe(staying)
        await bus.publish(event(1))
        await self.wait_for(lambda: len(leaving.events) == 1 and len(staying.events) == 1, "the first event")
        unsubscribe()
        unsubscribe()
        await bus.publish(event(2))
        await bus.publish(event(3))
        await self.wait_for(lambda: len(staying.events) == 3, "the events after the unsubscribe")
        assert leaving.events == [event(1)]
        assert staying.events == [event(1), event(2), event(3)]

    async def test_a_listener_subscribed_later_gets_only_later_events(self, bus: EventBus):
        early = Recorder()
        bus.subscribe(early)
        await bus.publish(event(1))
        await self.wait_for(lambda: len(early.events) == 1, "the first event")
        late = Recorder()
        bus.subscribe(late)
        await bus.publish(event(2))
        await self.wait_for(lambda: len(early.events) == 2 and len(late.events) == 1, "the second event")
        assert late.events == [event(2)]

    async def test_a_failing_listener_is_logged_and_does_not_stop_the_others(self, bus: EventBus,
                                                                             caplog: pytest.LogCaptureFixture):
        before, broken, after = Recorder(), Recorder(fail=True), Recorder()
        for listener in (before, broken, after):
            bus.subscribe(listener)
        published = [event(i, conversation_id="conv-with-a-broken-listener") for i in range(3)]
        with caplog.at_level(logging.ERROR):
            for e in published:
                await bus.publish(e)  # the publisher (the engine, after its commit) never sees the error
            await self.wait_for(lambda: len(before.events) == 3 and len(after.events) == 3 and
                                len(broken.events) == 3, "all events")
        assert before.events == after.events == published
        assert broken.events == published  # a listener that failed stays subscribed
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert failures and all("conv-with-a-broken-listener" in r.getMessage() for r in failures)

    async def test_publish_without_listeners_and_close_twice(self, bus: EventBus):
        await bus.publish(event(1))  # nobody listens: nothing happens, nothing fails
        await bus.close()
        await bus.close()
