"""The Redis event bus and conversation lock (botkit/backends), against the real Redis at
$BOTKIT_TEST_REDIS_URL (default redis://127.0.0.1:6379/15): both pass their contracts, also
between two clients (two workers); a killed holder's lock expires; a dropped connection loses
no event. Without a reachable Redis these tests fail under CI (CI=true) and skip elsewhere."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest

_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
try:
    import redis.asyncio as redis_asyncio
except ImportError:
    if _CI:
        pytest.fail("CI needs the redis extra for these tests: pip install 'botkit[redis]'", pytrace=False)
    pytest.skip("the redis extra is not installed: pip install 'botkit[redis]'", allow_module_level=True)

from botkit.app.compose import build_bus_and_locks  # noqa: E402
from botkit.backends import event_codec  # noqa: E402
from botkit.backends.redis_bus import RedisEventBus  # noqa: E402
from botkit.backends.redis_lock import RedisConversationLock  # noqa: E402
from botkit.config import DialogueConfig, StorageConfig  # noqa: E402
from botkit.engine import Engine  # noqa: E402
from botkit.errors import ConfigError, StorageError  # noqa: E402
from botkit.events import Event, Listener  # noqa: E402
from botkit.testing import (  # noqa: E402
    ConversationLockContract,
    EventBusContract,
    InMemoryConversationStore,
    ScriptedResponder,
    StaticRetriever,
    hit,
)
from botkit.testing.bus_contract import Recorder, event  # noqa: E402
from botkit.types import IncomingMessage  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
URL = os.environ.get("BOTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable() -> str | None:
    import redis

    try:
        redis.Redis.from_url(URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {URL} is not reachable ({exc}); start it: service redis-server start"
    return None


_PROBLEM = _reachable()
if _PROBLEM and _CI:
    pytest.fail(f"CI needs Redis for these tests: {_PROBLEM}", pytrace=False)
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key namespace of its own for each test, removed afterwards."""
    name = f"botkit-test:{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis_asyncio.Redis.from_url(URL)
    keys = [key async for key in client.scan_iter(match=f"{name}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def keys_under(prefix: str) -> list[str]:
    client = redis_asyncio.Redis.from_url(URL)
    try:
        return sorted([key.decode() async for key in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()


async def drop_connections(name_part: str) -> int:
    """Kill the Redis connections whose client name contains ``name_part`` (as a Redis restart
    would, for those clients only: the server and other clients are left alone)."""
    client = redis_asyncio.Redis.from_url(URL)
    try:
        killed = 0
        for info in await client.client_list():
            if name_part in info.get("name", ""):
                killed += await client.execute_command("CLIENT", "KILL", "ID", info["id"])
        return killed
    finally:
        await client.aclose()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"after {timeout}s still waiting for {what}")
        await asyncio.sleep(0.005)


# -- the event bus ---------------------------------------------------------------------------------
def test_events_survive_the_json_codec_whole():
    for n, kind in enumerate(["customer", "bot", "handoff", "agent", "closed"]):
        e = event(n, kind)  # type: ignore[arg-type]
        assert event_codec.decode(event_codec.encode(e)) == e
    with pytest.raises(ValueError, match="not a botkit event"):
        event_codec.decode('{"v": 1, "kind": "bot"}')
    with pytest.raises(ValueError, match="version"):
        event_codec.decode('{"v": 99}')


class TestRedisEventBus(EventBusContract):
    @pytest.fixture
    async def bus(self, prefix: str) -> AsyncIterator[RedisEventBus]:
        bus = RedisEventBus(URL, prefix=prefix)
        await bus.start()
        yield bus
        await bus.close()


class TwoWorkers:
    """One bus seen as two workers: events are published on worker A and heard on worker B,
    so every contract test runs through Redis (serialized, over the stream, read back)."""

    def __init__(self, a: RedisEventBus, b: RedisEventBus) -> None:
        self.a, self.b = a, b

    async def start(self) -> None:
        await self.a.start()
        await self.b.start()

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()

    async def publish(self, e: Event) -> None:
        await self.a.publish(e)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self.b.subscribe(listener)


class TestRedisEventBusBetweenWorkers(EventBusContract):
    @pytest.fixture
    async def bus(self, prefix: str) -> AsyncIterator[TwoWorkers]:
        workers = TwoWorkers(RedisEventBus(URL, prefix=prefix), RedisEventBus(URL, prefix=prefix))
        await workers.start()
        yield workers
        await workers.close()


async def test_each_worker_hears_the_others_marked_remote_and_its_own_once(prefix: str):
    a, b = RedisEventBus(URL, prefix=prefix), RedisEventBus(URL, prefix=prefix)
    await a.start()
    await b.start()
    try:
        heard_a, heard_b = Recorder(), Recorder()
        a.subscribe(heard_a)
        b.subscribe(heard_b)
        await a.publish(event(1, "agent", "on-a"))
        await b.publish(event(2, "customer", "on-b"))
        await wait_until(lambda: len(heard_a.events) == 2 and len(heard_b.events) == 2, "both events on both")
        await asyncio.sleep(0.2)  # nothing else arrives: a worker's own event is not delivered twice
        assert {e.conversation.id: e.remote for e in heard_a.events} == {"on-a": False, "on-b": True}
        assert {e.conversation.id: e.remote for e in heard_b.events} == {"on-a": True, "on-b": False}
        assert len(heard_a.events) == len(heard_b.events) == 2
    finally:
        await a.close()
        await b.close()


async def test_a_new_worker_does_not_replay_old_events(prefix: str):
    a = RedisEventBus(URL, prefix=prefix)
    await a.start()
    try:
        for n in range(3):
            await a.publish(event(n))
        await wait_until(lambda: not a._outbox, "the events written")
        late = RedisEventBus(URL, prefix=prefix)
        await late.start()
        heard = Recorder()
        late.subscribe(heard)
        await a.publish(event(9))
        await wait_until(lambda: len(heard.events) == 1, "the event after it started")
        await asyncio.sleep(0.1)
        assert heard.events == [event(9)]
        await late.close()
    finally:
        await a.close()


async def test_dropped_connections_lose_and_double_no_event(prefix: str):
    """Both workers' connections are killed again and again while events flow (the reader's
    while it blocks on the stream): it reconnects and reads on from its last id, and the writer
    keeps unsent events in order, so B gets every event of A once, in order."""
    a, b = RedisEventBus(URL, prefix=prefix), RedisEventBus(URL, prefix=prefix)
    await a.start()
    await b.start()
    try:
        heard = Recorder()
        b.subscribe(heard)
        published, killed = [], 0
        for round_ in range(6):
            killed += await drop_connections(b.origin) + await drop_connections(a.origin)
            for n in range(round_ * 10, round_ * 10 + 10):
                e = event(n, conversation_id=f"c{n % 4}")
                published.append(e)
                await a.publish(e)
            await asyncio.sleep(0.05)
        await wait_until(lambda: len(heard.events) >= len(published), "every event after the reconnects")
        await asyncio.sleep(0.2)
        assert killed >= 6  # each round dropped at least the reader's (blocked on the stream)
        assert heard.events == published  # none lost, none doubled, in order
    finally:
        await a.close()
        await b.close()


async def swap_client(bus: RedisEventBus, client: object) -> object:
    """Point ``bus``'s reader and writer at ``client`` (a Redis that is down, or back), as a lost
    connection would, once the read under way has ended; returns the old client."""
    old = bus._client
    bus._client = client  # type: ignore[assignment]
    bus._outbox_ready.set()
    await asyncio.sleep(bus.block_ms / 1000 + 0.2)
    return old


def unreachable() -> object:
    return redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)


async def test_a_worker_away_for_a_while_catches_up_in_order(prefix: str, caplog: pytest.LogCaptureFixture):
    """B cannot reach Redis (longer than the client's own retries) while A publishes: once back,
    B reads on from the last event it had and gets every event it missed, in order."""
    a, b = RedisEventBus(URL, prefix=prefix), RedisEventBus(URL, prefix=prefix, block_ms=200)
    await a.start()
    await b.start()
    try:
        heard = Recorder()
        b.subscribe(heard)
        await a.publish(event(0))
        await wait_until(lambda: len(heard.events) == 1, "the first event")
        with caplog.at_level(logging.WARNING, logger="botkit.backends.redis_bus"):
            good = await swap_client(b, unreachable())
            missed = [event(n) for n in range(1, 8)]
            for e in missed:
                await a.publish(e)
            await asyncio.sleep(0.6)
            assert heard.events == [event(0)]  # away
            bad = await swap_client(b, good)
            await bad.aclose()  # type: ignore[attr-defined]
            await wait_until(lambda: len(heard.events) == 8, "the missed events")
        assert heard.events == [event(0), *missed]
        assert any("lost Redis" in r.getMessage() for r in caplog.records)
    finally:
        await a.close()
        await b.close()


async def test_publishing_while_redis_is_unreachable_keeps_the_events_for_later(prefix: str):
    """The writer cannot reach Redis: local listeners still get the events at once, the engine
    is not failed, and the events wait in the outbox, in order, until Redis is back."""
    bus = RedisEventBus(URL, prefix=prefix, block_ms=200)
    await bus.start()
    try:
        heard = Recorder()
        bus.subscribe(heard)
        good = await swap_client(bus, unreachable())
        await bus.publish(event(1))
        await bus.publish(event(2))
        assert heard.events == [event(1), event(2)]  # delivered here at once
        await asyncio.sleep(0.5)
        assert len(bus._outbox) == 2  # kept, in order
        bad = await swap_client(bus, good)
        await bad.aclose()  # type: ignore[attr-defined]
        await wait_until(lambda: not bus._outbox, "the outbox written once Redis is back")
        entries = await good.xrange(bus.stream)  # type: ignore[attr-defined]
        assert [event_codec.decode(f[b"event"]) for _, f in entries] == [event(1), event(2)]
    finally:
        await bus.close()


async def test_a_wrong_url_or_redis_down_is_a_clear_error_at_start():
    with pytest.raises(ConfigError, match="redis://host"):
        await RedisEventBus("http://127.0.0.1:6379").start()
    with pytest.raises(StorageError, match="not reachable .*at start-up.*redis-server start"):
        await RedisEventBus("redis://127.0.0.1:1/0").start()
    with pytest.raises(StorageError, match="not reachable"):
        await RedisConversationLock("redis://:secret@127.0.0.1:1/0").start()
    try:
        await RedisConversationLock("redis://:secret@127.0.0.1:1/0").start()
    except StorageError as exc:
        assert "secret" not in str(exc) and "***" in str(exc)


# -- the conversation lock -------------------------------------------------------------------------
async def queued(*clients: RedisConversationLock) -> None:
    """Return once every ``hold`` entered on ``clients`` has its ticket in Redis (a round trip,
    not a few event-loop turns: under load it may take a while)."""
    for _ in range(10):
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(c._queueing for c in clients):
        if loop.time() > deadline:
            pytest.fail("tickets not queued in Redis after 10 s")
        await asyncio.sleep(0.005)


class RedisLockTiming:
    locks_under_test: tuple[RedisConversationLock, ...] = ()

    async def settle(self) -> None:
        """A waiter is queued once its ticket reached Redis."""
        await queued(*self.locks_under_test)


class TestRedisConversationLock(RedisLockTiming, ConversationLockContract):
    @pytest.fixture
    async def locks(self, prefix: str) -> AsyncIterator[RedisConversationLock]:
        locks = RedisConversationLock(URL, prefix=prefix, ttl=2.0)
        self.locks_under_test = (locks,)
        await locks.start()
        yield locks
        await locks.close()
        assert await keys_under(prefix) == []  # nothing left in Redis either


class Alternating:
    """Two lock clients (two workers) seen as one: successive holds go to A, B, A, B, ..."""

    def __init__(self, a: RedisConversationLock, b: RedisConversationLock) -> None:
        self.clients = (a, b)
        self.n = 0

    async def start(self) -> None:
        for c in self.clients:
            await c.start()

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    def hold(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        self.n += 1
        return self.clients[self.n % 2].hold(conversation_id)

    def active(self) -> int:
        return sum(c.active() for c in self.clients)


class TestRedisConversationLockBetweenWorkers(RedisLockTiming, ConversationLockContract):
    async def test_waiters_get_the_id_in_the_order_they_asked(self, locks: Alternating):
        """Between two workers the order is the order the tickets reach Redis: two calls at the
        same instant on two workers have no order to keep (each worker keeps its own callers' order,
        the contract run on one client above). Here each waiter asks once the previous one queued."""
        order: list[str] = []
        release = asyncio.Event()

        async def first() -> None:
            async with locks.hold("c"):
                await release.wait()
                order.append("first")

        async def waiter(name: str) -> None:
            async with locks.hold("c"):
                order.append(name)
                await asyncio.sleep(0)

        holder = asyncio.create_task(first())
        await self.settle()
        waiters = []
        for i in range(8):  # alternately on worker A and worker B
            waiters.append(asyncio.create_task(waiter(f"w{i}")))
            await self.settle()
        release.set()
        await self.within(asyncio.gather(holder, *waiters), "the waiters")
        assert order == ["first", *(f"w{i}" for i in range(8))]

    @pytest.fixture
    async def locks(self, prefix: str) -> AsyncIterator[Alternating]:
        locks = Alternating(RedisConversationLock(URL, prefix=prefix, ttl=2.0),
                            RedisConversationLock(URL, prefix=prefix, ttl=2.0))
        self.locks_under_test = locks.clients
        await locks.start()
        yield locks
        await locks.close()
        assert await keys_under(prefix) == []


HOLDER = textwrap.dedent("""
    import asyncio, sys
    from botkit.backends.redis_lock import RedisConversationLock

    async def main():
        locks = RedisConversationLock(sys.argv[1], prefix=sys.argv[2], ttl=1.0)
        await locks.start()
        async with locks.hold("telegram:42"):
            print("held", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
""")


async def test_a_killed_workers_lock_expires_but_a_live_one_is_renewed(prefix: str):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, URL, prefix], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    locks = RedisConversationLock(URL, prefix=prefix, ttl=1.0)
    await locks.start()
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 30)
        assert line.strip() == "held"
        got_it = asyncio.Event()

        async def waiter() -> None:
            async with locks.hold("telegram:42"):
                got_it.set()

        task = asyncio.create_task(waiter())
        await asyncio.sleep(2.5)  # 2.5 leases: the live holder renewed its lease, so it still holds
        assert not got_it.is_set(), "the lock of a live, renewing holder was taken away"
        loop = asyncio.get_running_loop()
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: no release, no renewal
        holder.wait()
        killed_at = loop.time()
        await asyncio.wait_for(got_it.wait(), 5)
        waited = loop.time() - killed_at
        assert waited <= 1.0 + locks.poll + 1.5, f"the waiter got the lock {waited:.2f}s after the holder died"
        await task
        assert await keys_under(prefix) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        await locks.close()


async def test_two_workers_racing_are_served_in_queue_order(prefix: str):
    """Messages of one conversation arriving alternately at two workers (a webhook delivering to
    both): each is answered alone, in the order it reached Redis."""
    a = RedisConversationLock(URL, prefix=prefix, ttl=2.0)
    b = RedisConversationLock(URL, prefix=prefix, ttl=2.0)
    await a.start()
    await b.start()
    try:
        order: list[int] = []
        inside = 0
        release = asyncio.Event()

        async def first() -> None:
            async with a.hold("c"):
                await release.wait()

        async def message(n: int) -> None:
            nonlocal inside
            async with (a if n % 2 else b).hold("c"):
                inside += 1
                assert inside == 1
                order.append(n)
                await asyncio.sleep(0.005)
                inside -= 1

        holder = asyncio.create_task(first())
        await queued(a, b)
        tasks = []
        for n in range(10):
            tasks.append(asyncio.create_task(message(n)))
            await queued(a, b)  # each reaches Redis before the next is sent
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, *tasks), 10)
        assert order == list(range(10))
    finally:
        await a.close()
        await b.close()


async def test_only_the_owner_releases(prefix: str):
    a = RedisConversationLock(URL, prefix=prefix, ttl=2.0)
    await a.start()
    try:
        release, entered = asyncio.Event(), []

        async def holder() -> None:
            async with a.hold("c"):
                await release.wait()

        async def waiter() -> None:
            async with a.hold("c"):
                entered.append("w")

        h = asyncio.create_task(holder())
        await asyncio.sleep(0.05)
        w = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        # a stranger (a holder whose lease lapsed, a bug) releases with a token it does not own
        assert await a._call("release", [a._queue("c")], ["not-the-owner", a.prefix, a._ttl_ms], "test") == 0
        await asyncio.sleep(0.3)
        assert entered == []
        release.set()
        await asyncio.wait_for(asyncio.gather(h, w), 5)
        assert entered == ["w"]
    finally:
        await a.close()


async def test_a_dropped_connection_while_waiting_does_not_lose_the_turn(prefix: str):
    a = RedisConversationLock(URL, prefix=prefix, ttl=2.0)
    b = RedisConversationLock(URL, prefix=prefix, ttl=2.0)
    await a.start()
    await b.start()
    try:
        release, entered = asyncio.Event(), []

        async def holder() -> None:
            async with a.hold("c"):
                await release.wait()

        async def waiter() -> None:
            async with b.hold("c"):
                entered.append("b")

        h = asyncio.create_task(holder())
        await asyncio.sleep(0.05)
        w = asyncio.create_task(waiter())
        await asyncio.sleep(0.1)
        assert await drop_connections(b.name) >= 1  # b is blocked waiting: its connection goes
        await asyncio.sleep(0.1)
        assert entered == []
        release.set()
        await asyncio.wait_for(asyncio.gather(h, w), 5)
        assert entered == ["b"]
        assert await keys_under(prefix) == []
    finally:
        await a.close()
        await b.close()


# -- two engines (two workers) sharing one store and one Redis --------------------------------------
def two_engines(prefix: str) -> tuple[Engine, Engine]:
    store = InMemoryConversationStore()  # the database both workers share
    retriever = StaticRetriever({"how do refunds work": [hit("refunds", "Refunds reach your card within 5 days.")]})
    return tuple(  # type: ignore[return-value]
        Engine(retriever=retriever, responder=ScriptedResponder(lambda request: "Within 5 days."), store=store,
               config=DialogueConfig(), bus=RedisEventBus(URL, prefix=prefix),
               locks=RedisConversationLock(URL, prefix=prefix, ttl=2.0))
        for _ in range(2))


async def test_a_conversation_answered_on_two_workers_at_once_stays_in_order(prefix: str):
    """A webhook delivers one conversation's messages to two workers at the same time: they are
    answered one at a time (each reply follows its own message, seqs without gaps or repeats),
    and each worker's listeners hear the other's events."""
    a, b = two_engines(prefix)
    heard_on_b = Recorder()
    async with a, b:
        b.subscribe(heard_on_b)
        replies = await asyncio.gather(*((a if n % 2 else b).handle(
            IncomingMessage("tg-1", f"how do refunds work ({n})", "telegram", "42")) for n in range(6)))
        turns = await a.store.turns("tg-1")
        await wait_until(lambda: len([e for e in heard_on_b.events if e.remote]) == 6, "worker A's events on B")
    assert [t.seq for t in turns] == list(range(1, 13))
    assert [t.role for t in turns] == ["customer", "bot"] * 6  # never two customer turns before a reply
    assert sorted(r.turn_seq for r in replies) == [2, 4, 6, 8, 10, 12]
    assert len(heard_on_b.events) == 12 and sum(not e.remote for e in heard_on_b.events) == 6
    assert await keys_under(prefix) == [f"{prefix}events"]  # no lock left behind


def test_the_switch_is_the_environment_variable(monkeypatch: pytest.MonkeyPatch):
    storage = StorageConfig()
    monkeypatch.delenv("BOTKIT_REDIS_URL", raising=False)
    assert build_bus_and_locks(storage) == (None, None)  # unset: the engine's in-process ones
    monkeypatch.setenv("BOTKIT_REDIS_URL", URL)
    bus, locks = build_bus_and_locks(storage)
    assert isinstance(bus, RedisEventBus) and isinstance(locks, RedisConversationLock)
    assert bus.stream == "botkit:events" and locks.prefix == "botkit:"
    named = StorageConfig(redis_url_env="MY_REDIS", redis_prefix="shop2:")
    monkeypatch.setenv("MY_REDIS", URL)
    bus, locks = build_bus_and_locks(named)
    assert isinstance(bus, RedisEventBus) and bus.stream == "shop2:events"
    monkeypatch.setenv("MY_REDIS", "localhost:6379")
    with pytest.raises(ConfigError, match="not redis://host"):
        build_bus_and_locks(named)


class SentBox:
    """A channel that records what it sent."""

    def __init__(self, name: str, follows_other_workers: bool) -> None:
        self.name = name
        self.follows_other_workers = follows_other_workers
        self.sent: list[tuple[str, str]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, conversation: object, message: object) -> None:
        self.sent.append((conversation.id, message.text))  # type: ignore[attr-defined]


async def test_another_workers_agent_reply_goes_to_this_workers_sockets_but_not_twice_to_telegram():
    """With a Redis bus every worker hears every event: the web chat (tabs connected here) sends
    other workers' events too; Telegram (an outside API) only the worker that published does."""
    from aiohttp import web

    from botkit.app.keys import CONNECTORS, ENGINE, METRICS
    from botkit.app.server import Metrics, _engine_ctx
    from botkit.types import Conversation, Turn

    engine = Engine(retriever=StaticRetriever({}), responder=ScriptedResponder([]), store=InMemoryConversationStore())
    webchat, telegram = SentBox("webchat", True), SentBox("telegram", False)
    app = web.Application()
    app[ENGINE], app[METRICS], app[CONNECTORS] = engine, Metrics(), {"webchat": webchat, "telegram": telegram}
    lifecycle = _engine_ctx(app)
    await lifecycle.__anext__()
    try:
        for channel in ("webchat", "telegram"):
            conv = Conversation(f"{channel}-1", channel, "42", "handed_off", T0)
            for remote, text in ((False, "from here"), (True, "from another worker")):
                turn = Turn(conv.id, 3, "agent", text, T0, action="agent", author="ann")
                await engine.bus.publish(Event("agent", conv, turn, remote=remote))
    finally:
        with pytest.raises(StopAsyncIteration):
            await lifecycle.__anext__()
    assert webchat.sent == [("webchat-1", "from here"), ("webchat-1", "from another worker")]
    assert telegram.sent == [("telegram-1", "from here")]  # the other worker sent its own reply
