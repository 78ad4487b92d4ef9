"""The ConversationStore contract (botkit.testing) run against the SQLite store and the
in-memory fake; a PostgreSQL backend subclasses the same class with its own ``store`` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from botkit.store import SQLiteConversationStore, StoreError
from botkit.testing import ConversationStoreContract, InMemoryConversationStore


class TestSQLiteConversationStore(ConversationStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path):
        s = SQLiteConversationStore(tmp_path / "c.sqlite3")
        await s.start()
        yield s
        await s.close()

    async def test_unstarted_store_says_what_to_do(self, tmp_path: Path):
        with pytest.raises(StoreError, match="call start"):
            await SQLiteConversationStore(tmp_path / "x.sqlite3").turns("c")

    async def test_a_commit_is_fsynced_before_it_returns(self, tmp_path: Path):
        # The web chat acks a message once its inbox row is committed: in WAL mode that commit
        # survives a power cut only with synchronous=FULL (NORMAL: only a killed process).
        s = SQLiteConversationStore(tmp_path / "c.sqlite3")
        await s.start()
        try:
            assert await s._run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
        finally:
            await s.close()


class TestInMemoryConversationStore(ConversationStoreContract):
    @pytest.fixture
    async def store(self):
        s = InMemoryConversationStore()
        await s.start()
        yield s
        await s.close()

    async def test_unstarted_store_says_what_to_do(self):
        with pytest.raises(StoreError, match="call start"):
            await InMemoryConversationStore().turns("c")



async def test_sqlite_store_pages_through_every_conversation_once_in_order(tmp_path: Path):
    from datetime import UTC, datetime, timedelta

    from botkit.types import Turn

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    s = SQLiteConversationStore(tmp_path / "c.sqlite3")
    await s.start()
    try:
        # ids out of time order; three, then two, started at the same instant (then ordered by
        # id), so a page ends between two conversations of the same start time
        for i, cid in enumerate(["e", "d", "c", "b", "a"]):
            await s.get_or_create(cid, "web", "u", {}, t0 + timedelta(minutes=i // 3))
            await s.record([Turn(cid, 1, "customer", f"from {cid}", t0)])
        got = [r async for r in s.stored_conversations(batch=2)]
    finally:
        await s.close()
    assert [r.conversation.id for r in got] == ["c", "d", "e", "a", "b"]
    assert [r.turns[0].text for r in got] == ["from c", "from d", "from e", "from a", "from b"]


async def test_a_read_only_store_reads_without_changing_the_file(tmp_path: Path):
    from datetime import UTC, datetime

    path = tmp_path / "c.sqlite3"
    s = SQLiteConversationStore(path)
    await s.start()
    await s.get_or_create("c", "web", "u", {}, datetime(2026, 1, 1, tzinfo=UTC))
    await s.close()
    path.chmod(0o640)
    before = path.read_bytes()
    ro = SQLiteConversationStore(path, read_only=True)
    await ro.start()
    try:
        assert [r.conversation.id async for r in ro.stored_conversations()] == ["c"]
        with pytest.raises(Exception, match="readonly"):
            await ro.set_satisfaction("c", 5)
    finally:
        await ro.close()
    assert path.read_bytes() == before and path.stat().st_mode & 0o777 == 0o640  # not made private either
