"""Fair sharing of one local model between concurrent conversations (TurnQueue, LocalCausalLM).

A tiny random GPT-2 (tests/lm_fixtures.py) that never emits EOS, so every generation is exactly
``max_new_tokens`` long. Checks: first come first served, one generation at a time, a queued
request's wait never counts against its ``max_time_s``, a cancelled or timed-out waiter leaves
the queue, and a slow reader does not hold the model.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from lm_fixtures import make_hit, make_request, one_torch_thread, tiny_lm_dir  # noqa: F401 - pytest fixture

from botkit.config import LocalLMConfig
from botkit.errors import GenerationError
from botkit.generation.local import TurnQueue
from botkit.generation.prompt import ChatMessage, build_messages

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

HITS = [make_hit("return-policy", score=0.82)]


async def started(path: Path, **kw: Any) -> Any:
    from botkit.generation.local import LocalCausalLM

    cfg = LocalLMConfig(model_path=str(path), **{"threads": 1, "max_new_tokens": 24, **kw})
    lm = LocalCausalLM(cfg, project_root=Path("/nonexistent"))
    await lm.start()
    return lm


def messages(i: int = 0) -> list[ChatMessage]:
    return build_messages(make_request(f"How long do I have to send item {i} back?", HITS), HITS, history_turns=0)


def record_generations(lm: Any) -> list[tuple[float, float]]:
    """Wrap the worker so each generation thread's (start, end) is recorded."""
    spans: list[tuple[float, float]] = []
    real = lm._generate

    def timed(*args: Any) -> None:
        t0 = time.perf_counter()
        try:
            real(*args)
        finally:
            spans.append((t0, time.perf_counter()))

    lm._generate = timed
    return spans


async def run(lm: Any, i: int, log: list[tuple[int, str, float]]) -> str:
    pieces = []
    async with aclosing(lm.stream(messages(i))) as deltas:
        async for d in deltas:
            if not pieces:
                log.append((i, "first", time.perf_counter()))
            pieces.append(d)
    log.append((i, "done", time.perf_counter()))
    return "".join(pieces)


async def test_concurrent_requests_are_served_first_come_first_served_one_at_a_time(tiny_lm_dir: Path) -> None:
    lm = await started(tiny_lm_dir)
    spans = record_generations(lm)
    log: list[tuple[int, str, float]] = []
    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(run(lm, i, log)))
        await asyncio.sleep(0)  # arrival order 0, 1, 2, ...: each task reaches the queue before the next starts
    texts = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert all(texts)
    firsts = [i for i, what, _ in log if what == "first"]
    assert firsts == [0, 1, 2, 3, 4]
    assert len(spans) == 5
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end  # never two generations at once
    assert lm.turns.served == 5 and lm.turns.waiting == 0 and not lm.turns.busy


async def test_queue_wait_does_not_count_against_max_time(tiny_lm_dir: Path) -> None:
    lm = await started(tiny_lm_dir, max_time_s=60)
    await run(lm, 0, [])  # warm-up
    t0 = time.perf_counter()
    await run(lm, 0, [])
    one = time.perf_counter() - t0
    # Allow each generation 4x (at least 0.5 s) its measured time, then queue enough requests
    # that the last one waits at least twice that bound before its turn comes.
    bound = max(4 * one, 0.5)
    lm.config = lm.config.model_copy(update={"max_time_s": bound})
    holder = await lm.turns.acquire()  # another conversation holds the model for 2 x max_time_s
    log: list[tuple[int, str, float]] = []
    start = time.perf_counter()
    tasks = [asyncio.create_task(run(lm, i, log)) for i in range(3)]
    await asyncio.sleep(2 * bound)
    assert lm.turns.waiting == 3 and not log
    holder.release()
    texts = await asyncio.wait_for(asyncio.gather(*tasks), 60)  # no GenerationError: the wait was not counted
    assert all(texts)
    waited = [t - start for _, what, t in log if what == "first"]
    assert min(waited) >= 2 * bound > bound


async def test_a_cancelled_waiter_leaves_the_queue_and_never_generates(tiny_lm_dir: Path) -> None:
    lm = await started(tiny_lm_dir)
    spans = record_generations(lm)
    holder = await lm.turns.acquire()
    log: list[tuple[int, str, float]] = []
    gone = asyncio.create_task(run(lm, 1, log))
    kept = asyncio.create_task(run(lm, 2, log))
    for _ in range(100):
        if lm.turns.waiting == 2:
            break
        await asyncio.sleep(0.01)
    assert lm.turns.waiting == 2
    gone.cancel()  # the customer disconnected while queued
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert lm.turns.waiting == 1
    holder.release()
    assert await asyncio.wait_for(kept, 30)
    assert [i for i, _, _ in log] == [2, 2] and len(spans) == 1


async def test_max_queue_s_bounds_the_wait_and_the_request_leaves_the_queue(tiny_lm_dir: Path) -> None:
    lm = await started(tiny_lm_dir, max_queue_s=0.2)
    holder = await lm.turns.acquire()
    t0 = time.perf_counter()
    with pytest.raises(GenerationError, match="max_queue_s=0.2") as err:
        await run(lm, 0, [])
    assert getattr(err.value, "code", None) == "busy"
    assert 0.2 <= time.perf_counter() - t0 < 2
    assert lm.turns.waiting == 0
    holder.release()
    assert await asyncio.wait_for(run(lm, 1, []), 30)  # the model is free again


async def test_a_slow_reader_does_not_hold_the_model(tiny_lm_dir: Path) -> None:
    lm = await started(tiny_lm_dir)
    await run(lm, 0, [])  # warm-up
    order: list[str] = []
    async with aclosing(lm.stream(messages(1))) as slow:
        await anext(slow)
        other = asyncio.create_task(run(lm, 2, []))
        # The slow reader stops reading; its generation ends anyway and hands the turn on.
        assert await asyncio.wait_for(other, 30)
        order.append("other done")
        rest = [d async for d in slow]  # the slow reader still gets its whole reply afterwards
        order.append("slow done")
    assert order == ["other done", "slow done"] and rest


async def test_turn_handed_to_a_waiter_cancelled_at_that_moment_passes_on() -> None:
    turns = TurnQueue()
    holder = await turns.acquire()
    waiter = asyncio.create_task(turns.acquire())
    third = asyncio.create_task(turns.acquire())
    await asyncio.sleep(0)
    assert turns.waiting == 2
    holder.release()  # the turn goes to `waiter`...
    waiter.cancel()  # ...which is cancelled before it runs: it must pass the turn on, not keep it
    with pytest.raises(asyncio.CancelledError):
        await waiter
    turn = await asyncio.wait_for(third, 1)
    assert turns.busy and turns.waiting == 0
    turn.release()
    turn.release()  # idempotent
    assert not turns.busy
    again = await asyncio.wait_for(turns.acquire(), 1)  # free: immediate
    assert again.waited_s == 0.0
