"""The contract every :class:`~botkit.locks.ConversationLock` backend must pass.

A backend's tests subclass :class:`ConversationLockContract` and provide a ``locks`` fixture
that yields a started, idle lock (closing it afterwards)::

    from botkit.testing import ConversationLockContract

    class TestMyLock(ConversationLockContract):
        @pytest.fixture
        async def locks(self):
            lock = MyLock(...)
            await lock.start()
            yield lock
            await lock.close()

A test that would hang on a broken lock (a deadlock, an id never released) fails after
:attr:`ConversationLockContract.timeout` seconds instead. The tests are ``async``: run them
with pytest-asyncio in ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from botkit.locks import ConversationLock

T = TypeVar("T")


class ConversationLockContract:
    #: Seconds after which a wait that should have ended counts as a deadlock.
    timeout: float = 5.0

    async def within(self, awaitable: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except TimeoutError:
            pytest.fail(f"after {self.timeout}s still waiting for {what}")

    async def settle(self) -> None:
        """Let started tasks run up to their first real wait (a backend that takes longer to
        queue a waiter, e.g. a round trip to a database, overrides this)."""
        for _ in range(10):
            await asyncio.sleep(0)

    async def test_two_holders_of_one_id_never_overlap(self, locks: ConversationLock):
        inside, most, done = 0, 0, []

        async def holder(i: int) -> None:
            nonlocal inside, most
            async with locks.hold("c"):
                inside += 1
                most = max(most, inside)
                for _ in range(3):
                    await asyncio.sleep(0)
                await asyncio.sleep(0.001)
                inside -= 1
                done.append(i)

        await self.within(asyncio.gather(*(holder(i) for i in range(10))), "ten holders of one id")
        assert most == 1, f"{most} holders of one conversation were inside at once"
        assert sorted(done) == list(range(10))

    async def test_different_ids_do_not_wait_on_each_other(self, locks: ConversationLock):
        b_inside = asyncio.Event()

        async def a() -> None:
            async with locks.hold("a"):
                await b_inside.wait()  # only ends if "b" can be held while "a" is

        async def b() -> None:
            async with locks.hold("b"):
                b_inside.set()

        await self.within(asyncio.gather(a(), b()), "'b' while 'a' is held (different ids must not block)")

    async def test_waiters_get_the_id_in_the_order_they_asked(self, locks: ConversationLock):
        order: list[str] = []
        release = asyncio.Event()
        late: list[asyncio.Task[None]] = []

        async def first() -> None:
            async with locks.hold("c"):
                await release.wait()
                late.append(asyncio.create_task(waiter("late")))  # asks while others wait: goes last
                order.append("first")

        async def waiter(name: str) -> None:
            async with locks.hold("c"):
                order.append(name)
                await asyncio.sleep(0)

        holder = asyncio.create_task(first())
        await self.settle()
        # Started one after the other with no pause: each takes its place when it enters, as the
        # engine's messages do, so they are served in this order.
        waiters = [asyncio.create_task(waiter(f"w{i}")) for i in range(8)]
        await self.settle()
        release.set()
        await self.within(asyncio.gather(holder, *waiters), "the waiters")
        await self.within(asyncio.gather(*late), "the late comer")
        assert order == ["first", *(f"w{i}" for i in range(8)), "late"]

    async def test_an_exception_in_the_block_releases_the_id(self, locks: ConversationLock):
        with pytest.raises(RuntimeError, match="handling failed"):  # the lock passes it on unchanged
            async with locks.hold("c"):
                raise RuntimeError("handling failed")

        async def again() -> None:
            async with locks.hold("c"):
                pass

        await self.within(again(), "the id after an exception (it was not released)")
        assert locks.active() == 0

    async def test_a_cancelled_holder_releases_the_id(self, locks: ConversationLock):
        entered, after = asyncio.Event(), []

        async def holder() -> None:
            async with locks.hold("c"):
                entered.set()
                await asyncio.Event().wait()  # forever, until cancelled

        async def waiter() -> None:
            async with locks.hold("c"):
                after.append("got it")

        task = asyncio.create_task(holder())
        await self.within(entered.wait(), "the first holder")
        queued = asyncio.create_task(waiter())
        await self.settle()
        assert after == []  # still held
        task.cancel()
        await self.within(queued, "the id after its holder was cancelled (it was not released)")
        assert after == ["got it"] and task.cancelled()
        assert locks.active() == 0

    async def test_a_waiter_cancelled_before_its_turn_gives_up_its_place(self, locks: ConversationLock):
        release, order = asyncio.Event(), []

        async def holder() -> None:
            async with locks.hold("c"):
                await release.wait()

        async def waiter(name: str) -> None:
            async with locks.hold("c"):
                order.append(name)

        first = asyncio.create_task(holder())
        await self.settle()
        w1, w2, w3 = (asyncio.create_task(waiter(n)) for n in ("w1", "w2", "w3"))
        await self.settle()
        w2.cancel()
        await self.settle()
        release.set()
        await self.within(asyncio.gather(first, w1, w3), "the waiters after one of them was cancelled")
        assert w2.cancelled() and order == ["w1", "w3"]
        assert locks.active() == 0

    async def test_no_bookkeeping_is_left_after_use(self, locks: ConversationLock):
        assert locks.active() == 0
        seen_active: list[int] = []

        async def turn(cid: str) -> None:
            async with locks.hold(cid):
                seen_active.append(locks.active())
                await asyncio.sleep(0)

        await self.within(asyncio.gather(*(turn(f"conv-{i % 50}") for i in range(200))), "200 turns")
        assert max(seen_active) >= 2  # counted while in use (50 ids at once)...
        assert locks.active() == 0  # ...and forgotten after: memory does not grow with conversations
