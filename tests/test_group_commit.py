"""Group commit in the SQLite conversation store (botkit.sqlite.AsyncSQLite, issue 13 item 5):
concurrent conversations' writes share one transaction and one fsync, each caller answered only
after the COMMIT that holds its work; a failing unit takes nobody else down; duplicate deliveries
stay idempotent; a SIGKILL loses nothing that was acknowledged.

To make "arrived while a commit was in progress" deterministic, a test first queues a unit that
blocks inside the writer's transaction until the others are queued behind it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from botkit.store import ConflictError, SQLiteConversationStore
from botkit.types import InboxItem, IncomingMessage, Turn
from tests.conftest import REPO

T0 = datetime(2026, 12, 1, tzinfo=UTC)
N = 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteConversationStore]:
    s = SQLiteConversationStore(tmp_path / "c.sqlite3", group_commit=True)
    await s.start()
    commits: list[str] = []
    s._sql._sql.connection.set_trace_callback(  # every COMMIT the writer connection runs
        lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)
    s.commit_log = commits  # type: ignore[attr-defined]
    yield s
    await s.close()


def exchange(cid: str, seq: int = 1) -> list[Turn]:
    return [Turn(cid, seq, "customer", f"question of {cid}", T0),
            Turn(cid, seq + 1, "bot", f"answer to {cid}", T0, action="answer")]


async def behind_a_commit(store: SQLiteConversationStore, calls: list[Awaitable[Any]]) -> list[Any]:
    """Run ``calls`` while a commit is in progress (a unit blocked in the writer's transaction);
    their outcomes (a value or the exception), in order."""
    queued, release = threading.Event(), threading.Event()

    def blocker(db: sqlite3.Connection) -> None:
        queued.set()
        assert release.wait(30)

    first = asyncio.ensure_future(store._sql.tx(blocker))
    assert await asyncio.to_thread(queued.wait, 30)
    tasks = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0.05)  # every call has queued its unit behind the blocked commit
    assert all(not t.done() for t in tasks), "a write returned before the commit that holds it"
    release.set()
    await first
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_concurrent_writers_share_one_commit_and_all_their_rows_are_stored(store: Any) -> None:
    for i in range(N):
        await store.get_or_create(f"c{i}", "web", f"u{i}", {}, T0)
    store.commit_log.clear()
    outcomes = await behind_a_commit(store, [store.record(exchange(f"c{i}"), status="bot") for i in range(N)])
    assert outcomes == [None] * N
    # the blocker's commit, then ONE for the N exchanges queued behind it
    assert len(store.commit_log) == 2, store.commit_log
    for i in range(N):
        assert [(t.seq, t.role, t.text) for t in await store.turns(f"c{i}")] == [
            (1, "customer", f"question of c{i}"), (2, "bot", f"answer to c{i}")]
    assert (await store.stats())["turns"] == 2 * N
    # and it is on disk: another connection (another process's view) sees every row
    with sqlite3.connect(store.path) as other:
        assert other.execute("SELECT count(*) FROM turns").fetchone()[0] == 2 * N


async def test_one_conversation_under_load_keeps_its_order_and_reads_its_writes(store: Any) -> None:
    async def conversation(i: int) -> list[int]:
        cid = f"o{i}"
        await store.get_or_create(cid, "web", "u", {}, T0)
        seen = []
        for _ in range(5):
            seq = (await store.window(cid, 50)).next_seq  # a read connection: must see the last commit
            seen.append(seq)
            await store.record(exchange(cid, seq), status="bot")
        return seen

    results = await asyncio.gather(*(conversation(i) for i in range(N)))
    assert results == [[1, 3, 5, 7, 9]] * N


async def test_a_failing_unit_is_rolled_back_alone_and_raises_only_to_its_caller(store: Any) -> None:
    for i in range(N):
        await store.get_or_create(f"c{i}", "web", f"u{i}", {}, T0)

    class Broken(RuntimeError):
        pass

    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO turns (conversation_id, seq, role, text, at, action, sources, resolved_query, author, "
                   "meta) VALUES ('c0', 99, 'bot', 'half', '', 'answer', '[]', '', 'bot', '{}')")
        raise Broken("the unit failed after writing")

    calls: list[Awaitable[Any]] = [store.record(exchange(f"c{i}"), status="bot") for i in range(N)]
    calls.insert(N // 2, store._sql.tx(half_then_fail))
    store.commit_log.clear()
    outcomes = await behind_a_commit(store, calls)
    assert isinstance(outcomes[N // 2], Broken)
    assert [o for k, o in enumerate(outcomes) if k != N // 2] == [None] * N
    assert len(store.commit_log) == 2  # the others still shared one commit
    assert await store.turn("c0", 99) is None  # the failed unit's write was rolled back
    for i in range(N):
        assert [t.seq for t in await store.turns(f"c{i}")] == [1, 2]


async def test_a_duplicate_turn_and_a_second_answer_fail_only_their_own_callers(store: Any) -> None:
    """The errors a unit's constraint raises (IntegrityError for a turn stored already,
    ConflictError for a message answered already) reach its caller as before, nothing else."""
    await store.get_or_create("d", "web", "u", {}, T0)
    await store.record(exchange("d"))
    item = await store.accept(InboxItem(IncomingMessage("d", "hi", "web", "u", at=T0), "m1"))
    others = [f"x{i}" for i in range(5)]
    for cid in others:
        await store.get_or_create(cid, "web", "u", {}, T0)
    outcomes = await behind_a_commit(store, [
        store.record(exchange("d")),  # seq 1 and 2 exist: IntegrityError, as ungrouped
        store.record(exchange("d", 3), answers=item),
        store.record(exchange("d", 5), answers=item),  # answered by the unit before it, in this same group
        *(store.record(exchange(cid)) for cid in others)])
    assert isinstance(outcomes[0], sqlite3.IntegrityError)
    assert outcomes[1] is None and isinstance(outcomes[2], ConflictError)
    assert outcomes[3:] == [None] * len(others)
    assert [t.seq for t in await store.turns("d")] == [1, 2, 3, 4]
    assert (await store.inbox_item("d", "m1")).state == "answered"
    for cid in others:
        assert [t.seq for t in await store.turns(cid)] == [1, 2]


async def test_a_message_delivered_many_times_at_once_is_accepted_once(store: Any) -> None:
    def delivery(cid: str, mid: str) -> Awaitable[InboxItem]:
        return store.accept(InboxItem(IncomingMessage(cid, f"text {mid}", "web", "u", at=T0), mid))

    calls = [delivery("dup", "same") for _ in range(10)] + [delivery(f"n{i}", "m") for i in range(10)]
    outcomes = await behind_a_commit(store, calls)
    dup = outcomes[:10]
    assert [o.new for o in dup] == [True] + [False] * 9  # the first in arrival order stored it
    assert len({o.order for o in dup}) == 1 and dup[0].order > 0
    assert all(o.new for o in outcomes[10:])
    assert [p.message_id for p in await store.pending(conversation_id="dup")] == ["same"]
    assert len(await store.pending()) == 11


async def test_grouping_off_commits_each_write_alone(tmp_path: Path) -> None:
    s = SQLiteConversationStore(tmp_path / "c.sqlite3", group_commit=False)
    await s.start()
    try:
        commits: list[str] = []
        s._sql._sql.connection.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        for i in range(5):
            await s.get_or_create(f"c{i}", "web", "u", {}, T0)
        commits.clear()
        await asyncio.gather(*(s.record(exchange(f"c{i}")) for i in range(5)))
        assert len(commits) == 5
        assert (await s.stats())["turns"] == 10
    finally:
        await s.close()


async def test_close_waits_for_queued_writes(tmp_path: Path) -> None:
    s = SQLiteConversationStore(tmp_path / "c.sqlite3", group_commit=True)
    await s.start()
    for i in range(N):
        await s.get_or_create(f"c{i}", "web", "u", {}, T0)
    writes = [asyncio.ensure_future(s.record(exchange(f"c{i}"))) for i in range(N)]
    await asyncio.sleep(0)  # queued
    await s.close()
    assert await asyncio.gather(*writes) == [None] * N
    with sqlite3.connect(s.path) as db:
        assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 2 * N


CHILD = textwrap.dedent("""
    import asyncio, sys, uuid
    from datetime import UTC, datetime
    from botkit.store import SQLiteConversationStore
    from botkit.types import InboxItem, IncomingMessage, Turn

    def say(line: str) -> None:  # one write of the whole line: print() writes its pieces one by one
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    async def main() -> None:
        store = SQLiteConversationStore(sys.argv[1], group_commit=True)
        await store.start()
        print("ready", flush=True)

        async def conversation(i: int) -> None:
            cid = f"k{i}"
            for n in range(10_000):
                now = datetime.now(UTC)
                mid = f"{cid}-{sys.argv[3]}-{n}"
                item = await store.accept(InboxItem(IncomingMessage(cid, "where is my order?", at=now), mid))
                say(f"accepted {cid} {mid}")
                await store.get_or_create(cid, "web", "u", {}, now)
                seq = (await store.window(cid, 4)).next_seq
                await store.record([Turn(cid, seq, "customer", mid, now), Turn(cid, seq + 1, "bot", "soon", now)],
                                   status="bot", answers=item)
                say(f"answered {cid} {mid} {seq + 1}")

        await asyncio.gather(*(conversation(i) for i in range(int(sys.argv[2]))))

    asyncio.run(main())
""")


def _acknowledged(line: str, messages: set[str], replies: set[tuple[str, int]]) -> None:
    kind, cid, mid, *rest = line.split()
    if kind == "accepted":
        messages.add(mid)
    else:
        replies.add((cid, int(rest[0])))


@pytest.mark.slow
def test_sigkill_mid_group_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A child process writes 30 conversations as fast as it can (so commits are grouped) and
    prints each write once its await returned (the acknowledgement); it is SIGKILLed mid-stream,
    several times. Every acknowledged message and reply is in the file afterwards."""
    path = tmp_path / "c.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acked_in: set[str] = set()
    acked_out: set[tuple[str, int]] = set()
    for round_, after in enumerate((40, 150, 400)):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "30", str(round_)],
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        lines = 0
        try:
            for line in child.stdout:
                _acknowledged(line, acked_in, acked_out)
                lines += 1
                if lines >= after:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # what it printed after our last read was acknowledged too: read the rest of the pipe
        # (a line the kill cut short, without its newline, was not acknowledged: the last piece)
        for line in child.stdout.read().split("\n")[:-1]:
            _acknowledged(line, acked_in, acked_out)
        with sqlite3.connect(path) as db:
            stored_in = {r[0] for r in db.execute("SELECT message_id FROM inbox")}
            stored_out = {(r[0], r[1]) for r in db.execute("SELECT conversation_id, seq FROM turns WHERE role='bot'")}
        assert acked_in <= stored_in, f"round {round_}: acknowledged, not stored: {sorted(acked_in - stored_in)[:5]}"
        assert acked_out <= stored_out, f"round {round_}: replies lost: {sorted(acked_out - stored_out)[:5]}"
    assert len(acked_in) >= 100 and len(acked_out) >= 50
    print(f"\nSIGKILL x3 mid-stream (30 conversations, grouped commits): acknowledged {len(acked_in)} messages and "
          f"{len(acked_out)} replies, lost 0")
