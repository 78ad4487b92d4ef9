"""Web chat sessions on SQLite and on PostgreSQL (connectors/webchat/sessions.py,
botkit/backends/pg_webchat.py): the same contract on both (new, resumed, unknown and expired
tokens, sliding last-seen, two workers on one store, only hashes stored), then PostgreSQL's own
migrations and errors, and how the app hands the PostgreSQL store to the connector.

PostgreSQL: $BOTKIT_TEST_DATABASE_URL (tests/pg_redis_fixtures.py), a throwaway schema per test;
without the server these skip, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.webchat.sessions import (
    CONVERSATION_PREFIX,
    SESSION_STORE_FACTORY,
    SessionStore,
    WebChatSessions,
    token_digest,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_redis_fixtures import backend_kind, backend_where, pg_dsn, throwaway_schema  # noqa: E402, F401

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(days=30)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(kind: str, tmp_path: Path, where: str | None, clock: Clock) -> WebChatSessions:
    if kind == "sqlite":
        return SessionStore(tmp_path / "webchat.sqlite3", TTL, clock=clock)
    from botkit.backends.pg_webchat import PostgresSessionStore

    assert where is not None
    return PostgresSessionStore(pg_dsn(), schema=where, ttl=TTL, pool_size=2, clock=clock)


@pytest.fixture
async def store(kind: str, tmp_path: Path, where: str | None, clock: Clock) -> AsyncIterator[WebChatSessions]:
    s = make(kind, tmp_path, where, clock)
    await s.start()
    yield s
    await s.close()


# -- the contract --------------------------------------------------------------------------------
async def test_a_new_session_then_resumed_by_its_token(store: WebChatSessions) -> None:
    first = await store.open(None)
    assert first is not None and not first.resumed and first.conversation_id.startswith(CONVERSATION_PREFIX)
    assert len(first.token) >= 40
    again = await store.open(first.token)
    assert again is not None and again.resumed and (again.token, again.conversation_id) == \
        (first.token, first.conversation_id)
    other = await store.open(None)
    assert other is not None and other.token != first.token and other.conversation_id != first.conversation_id


async def test_a_token_we_did_not_issue_never_picks_the_conversation(store: WebChatSessions) -> None:
    mine = await store.open(None)
    assert mine is not None
    for bad in ("made-up-token", mine.conversation_id, token_digest(mine.token), "", "x" * 129, 42, None,
                ["list"]):
        s = await store.open(bad)
        assert s is not None and not s.resumed and s.conversation_id != mine.conversation_id
        assert await store.open(bad, create=False) is None
    assert (await store.open(mine.token, create=False)).conversation_id == mine.conversation_id  # type: ignore[union-attr]


async def test_sessions_expire_after_the_ttl_without_a_visit(store: WebChatSessions, clock: Clock) -> None:
    s = await store.open(None)
    assert s is not None
    clock.now += TTL - timedelta(days=1)
    assert (await store.open(s.token)).resumed  # type: ignore[union-attr]  # a visit: last seen moves to now
    clock.now += TTL - timedelta(days=1)
    assert (await store.open(s.token)).resumed  # type: ignore[union-attr]  # 58 days after it began
    clock.now += TTL + timedelta(seconds=1)
    fresh = await store.open(s.token)
    assert fresh is not None and not fresh.resumed and fresh.conversation_id != s.conversation_id
    clock.now -= TTL  # an expired session is gone, not hidden
    assert await store.open(s.token, create=False) is None
    assert (await store.open(fresh.token)).conversation_id == fresh.conversation_id  # type: ignore[union-attr]


async def test_two_workers_on_one_store_resume_each_others_sessions(kind: str, tmp_path: Path, where: str | None,
                                                                   clock: Clock, store: WebChatSessions) -> None:
    other = make(kind, tmp_path, where, clock)
    await other.start()
    try:
        s = await store.open(None)
        assert s is not None
        resumed = await other.open(s.token)  # the tab reconnected through the load balancer to the other worker
        assert resumed is not None and resumed.resumed and resumed.conversation_id == s.conversation_id
        many = await asyncio.gather(*(w.open(s.token) for w in (store, other) * 5))  # tabs resuming at once
        assert {m.conversation_id for m in many if m} == {s.conversation_id}
    finally:
        await other.close()


async def test_only_the_tokens_hash_is_stored(kind: str, store: WebChatSessions, where: str | None,
                                              tmp_path: Path) -> None:
    s = await store.open(None)
    assert s is not None
    if kind == "sqlite":
        import sqlite3

        db = sqlite3.connect(tmp_path / "webchat.sqlite3")
        rows = db.execute("SELECT token_sha256, conversation_id FROM webchat_sessions").fetchall()
        db.close()
    else:
        import psycopg

        with psycopg.connect(pg_dsn()) as conn:
            rows = conn.execute(f'SELECT token_sha256, conversation_id FROM "{where}".webchat_sessions').fetchall()
    assert [tuple(r) for r in rows] == [(token_digest(s.token), s.conversation_id)]
    assert s.token not in repr(rows)


# -- PostgreSQL only --------------------------------------------------------------------------------
@pytest.fixture
def schema() -> Iterator[str]:
    with throwaway_schema(pg_dsn()) as name:
        yield name


def _versions(schema: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(pg_dsn()) as conn:
        return dict(conn.execute(f'SELECT component, version FROM "{schema}".schema_version').fetchall())  # type: ignore[arg-type]


async def test_migrations_record_their_own_component_and_refuse_a_newer_one(schema: str) -> None:
    import psycopg

    from botkit.backends.pg_accounts import PostgresAccountStore
    from botkit.backends.pg_webchat import MIGRATIONS, PostgresSessionStore, SchemaTooNew

    await asyncio.to_thread(PostgresAccountStore(pg_dsn(), schema=schema).start)
    first = PostgresSessionStore(pg_dsn(), schema=schema)
    await first.start()
    s = await first.open(None)
    await first.close()
    assert _versions(schema) == {"accounts": 1, "webchat_sessions": len(MIGRATIONS)}
    again = PostgresSessionStore(pg_dsn(), schema=schema)  # a restart: nothing to migrate, the session kept
    await again.start()
    try:
        assert s is not None and (await again.open(s.token)).conversation_id == s.conversation_id  # type: ignore[union-attr]
    finally:
        await again.close()
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"UPDATE \"{schema}\".schema_version SET version=5 WHERE component='webchat_sessions'")
    with pytest.raises(SchemaTooNew, match="the web chat sessions in PostgreSQL schema .* at schema version 5"):
        await PostgresSessionStore(pg_dsn(), schema=schema).start()
    assert _versions(schema) == {"accounts": 1, "webchat_sessions": 5}


async def test_a_server_that_is_not_there_or_a_store_not_started_is_a_clear_error() -> None:
    from botkit.backends.pg_webchat import PostgresSessionStore
    from botkit.errors import DatabaseUnavailable, StorageError

    store = PostgresSessionStore("postgresql://botkit:s3cret-pw@127.0.0.1:1/botkit")
    with pytest.raises(DatabaseUnavailable) as caught:
        await store.start()
    assert "cannot reach PostgreSQL at 127.0.0.1:1/botkit" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(store)
    with pytest.raises(StorageError, match="call start"):
        await store.open(None)


def test_the_app_hands_the_connector_the_postgresql_store_when_switched_on(tmp_path: Path, schema: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp import web

    from botkit.app.storage_switch import connector_extras
    from botkit.backends.pg_webchat import PostgresSessionStore
    from botkit.channels import ConnectorContext
    from botkit.project import Project
    from connectors.webchat.config import WebChatConfig
    from connectors.webchat.connector import WebChatConnector

    root = tmp_path / "bot"
    root.mkdir()
    (root / "bot.yaml").write_text(f"name: test bot\nstorage:\n  postgres_schema: {schema}\nchannels: {{}}\n",
                                   encoding="utf-8")

    def connector() -> WebChatConnector:
        project = Project.load(root)
        ctx = ConnectorContext("webchat", {}, None, web.Application(), project,  # type: ignore[arg-type]
                               extra=connector_extras(project))
        return WebChatConnector(ctx, WebChatConfig(session_days=7))

    monkeypatch.delenv("BOTKIT_DATABASE_URL", raising=False)
    assert connector_extras(Project.load(root)) == {}
    assert isinstance(connector().sessions, SessionStore)
    monkeypatch.setenv("BOTKIT_DATABASE_URL", pg_dsn())
    assert set(connector_extras(Project.load(root))) == {SESSION_STORE_FACTORY}
    sessions = connector().sessions
    assert isinstance(sessions, PostgresSessionStore)
    assert (sessions.schema, sessions.ttl) == (schema, timedelta(days=7))
    assert not (root / ".botkit" / "webchat.sqlite3").exists()
