"""Web chat sessions on PostgreSQL (asyncpg), so that a customer's tab resumes its conversation
on whichever worker the load balancer sends its reconnect to.

:class:`PostgresSessionStore` implements :class:`~connectors.webchat.sessions.WebChatSessions`
with the SQLite store's behaviour (both pass tests/test_webchat_session_stores.py): only the
token's SHA-256 is kept; an unknown or expired token gets a new session, never a chosen one;
resuming moves its last-seen time to now. The table (``webchat_sessions``) lives in the
conversation store's schema (``storage.postgres_schema``), migrated on start as component
``webchat_sessions`` of ``schema_version`` (botkit/backends/pg_schema.py); a newer schema is
refused (:class:`SchemaTooNew`).

The app builds it when PostgreSQL is switched on (``BOTKIT_DATABASE_URL``;
botkit/app/storage_switch.py) and hands the web chat connector a factory for it in
``ConnectorContext.extra``: the connector never imports this module. asyncpg, as for the
conversation store: the web chat is async. A server that cannot be reached is a
:class:`~botkit.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from botkit.backends.pg_schema import Component, SchemaTooNew, check_schema, migrate_async
from botkit.backends.postgres import LOST, connect_error, open_pool, where
from botkit.errors import StorageError
from connectors.webchat.sessions import Session, new_session, token_digest, usable_token

MIGRATIONS: tuple[str, ...] = (
    # 1: the SQLite store's table
    """
    CREATE TABLE webchat_sessions (
        token_sha256 TEXT COLLATE "C" PRIMARY KEY, conversation_id TEXT COLLATE "C" NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL);
    """,
)
COMPONENT = Component("webchat_sessions", "the web chat sessions", MIGRATIONS)

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresSessionStore", "SchemaTooNew"]


class PostgresSessionStore:
    """Token -> conversation id in PostgreSQL schema ``schema`` of the database ``dsn`` names."""

    def __init__(self, dsn: str, *, schema: str = "botkit", ttl: timedelta = timedelta(days=30), pool_size: int = 5,
                 source: str = "BOTKIT_DATABASE_URL", clock: Callable[[], datetime] | None = None):
        self._dsn = dsn
        self.schema = check_schema(schema)
        self.ttl = ttl
        self.pool_size = pool_size
        self.source = source
        self.where = where(dsn)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresSessionStore({self.where}, schema={self.schema!r})"

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = await open_pool(self._dsn, self.schema, pool_size=self.pool_size, source=self.source,
                                     what="the web chat sessions",
                                     migrate_with=lambda conn: migrate_async(conn, self.schema, COMPONENT))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("the PostgreSQL web chat session store was not started: call start() first")
        return self._pool

    async def open(self, token: object, *, create: bool = True) -> Session | None:
        pool = self._ready()
        now = self.clock()
        given = usable_token(token)
        try:
            if given is not None:
                digest = token_digest(given)
                # one statement: two tabs resuming at once both see it; an expired one is not moved
                conversation_id = await pool.fetchval(
                    "UPDATE webchat_sessions SET last_seen=$2 WHERE token_sha256=$1 AND last_seen >= $3 "
                    "RETURNING conversation_id", digest, now, now - self.ttl)
                if conversation_id is not None:
                    return Session(given, str(conversation_id), resumed=True)
                await pool.execute("DELETE FROM webchat_sessions WHERE token_sha256=$1 AND last_seen < $2",
                                   digest, now - self.ttl)
            if not create:
                return None
            new_token, conversation_id = new_session()
            await pool.execute("INSERT INTO webchat_sessions (token_sha256, conversation_id, created_at, last_seen) "
                               "VALUES ($1, $2, $3, $3)", token_digest(new_token), conversation_id, now)
        except LOST as exc:
            raise connect_error(exc, self._dsn, self.source) from exc
        return Session(new_token, conversation_id, resumed=False)
