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

