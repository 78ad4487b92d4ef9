"""The PostgreSQL conversation store's schema and its migrations (botkit/backends/postgres.py).

The store's tables live in one PostgreSQL schema; ``schema_version`` records, per component
(this store: ``conversations``; the knowledge and account stores later), the version its tables
are at. :func:`migrate` brings a schema to this botkit's version in one transaction under
``pg_advisory_xact_lock``, so of two workers starting at once one migrates and the other waits,
then finds nothing to do; a schema at a version this botkit does not know is refused
(:class:`SchemaTooNew`) and left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from botkit.errors import StorageError

COMPONENT = "conversations"  # this store's row in schema_version (the knowledge and account stores: later)

# Version n is MIGRATIONS[n - 1]; a new botkit appends, never edits a released one. Unqualified
# names: every connection's search_path is the store's schema.
MIGRATIONS: tuple[str, ...] = (
    # 1: the tables of the SQLite store's first release
    """
    CREATE TABLE conversations (
        id TEXT COLLATE "C" PRIMARY KEY, channel TEXT NOT NULL, customer_id TEXT NOT NULL, status TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL, attributes JSONB NOT NULL, satisfaction INTEGER, assigned_agent TEXT);
    CREATE INDEX conversations_by_start ON conversations (started_at, id);
    CREATE TABLE turns (
        conversation_id TEXT COLLATE "C" NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL, action TEXT NOT NULL, confidence DOUBLE PRECISION, sources JSONB NOT NULL,
        kb_version INTEGER, resolved_query TEXT NOT NULL, escalation JSONB, author TEXT NOT NULL,
        feedback INTEGER NOT NULL DEFAULT 0, meta JSONB NOT NULL, PRIMARY KEY (conversation_id, seq));
    CREATE TABLE handoffs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, conversation_id TEXT COLLATE "C" NOT NULL,
        reason TEXT NOT NULL, rule TEXT NOT NULL, detail TEXT NOT NULL, summary TEXT NOT NULL, channel TEXT NOT NULL,
        customer_id TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL, status TEXT NOT NULL, agent TEXT,
        closed_at TIMESTAMPTZ);
    CREATE INDEX handoffs_by_conversation ON handoffs (conversation_id, status);
    CREATE TABLE inbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, conversation_id TEXT COLLATE "C" NOT NULL,
        message_id TEXT COLLATE "C" NOT NULL, channel TEXT NOT NULL, customer_id TEXT NOT NULL, text TEXT NOT NULL,
        attributes JSONB NOT NULL, received_at TIMESTAMPTZ NOT NULL, meta JSONB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending', reply_seq INTEGER, UNIQUE (conversation_id, message_id));
    CREATE INDEX inbox_by_state ON inbox (state, channel);
    CREATE TABLE conversation_labels (conversation_id TEXT COLLATE "C" NOT NULL, label TEXT NOT NULL);
    CREATE UNIQUE INDEX labels_unique ON conversation_labels (conversation_id, lower(label));
    CREATE INDEX labels_by_label ON conversation_labels (lower(label));
    CREATE TABLE canned_replies (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, shortcut TEXT NOT NULL, text TEXT NOT NULL,
        author TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
    CREATE UNIQUE INDEX canned_by_shortcut ON canned_replies (lower(shortcut));
    """,
    # 2: when an agent picked a hand-off up (the SQLite store's first added column)
    """
    ALTER TABLE handoffs ADD COLUMN assigned_at TIMESTAMPTZ;
    """,
)


LOCK_WAIT_S = 600.0  # how long a starting worker waits for another's migration


class SchemaTooNew(StorageError):
    """The database's schema was made by a newer botkit: this one refuses to use it."""


async def migrate(conn: asyncpg.Connection, schema: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring ``schema`` to ``len(migrations)`` in one transaction under an advisory lock (a second
    worker waits, then finds it done); returns how many migrations ran. SchemaTooNew when the
    schema is at a version past ``migrations``: nothing is changed."""
    async with conn.transaction():
        # another worker migrating holds the lock for as long as that takes: wait past command_timeout
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"botkit.migrate.{schema}",
                           timeout=LOCK_WAIT_S)
        # CREATE ... IF NOT EXISTS needs the right to create even when there is nothing to create:
        # look first, so a role that may only use an existing schema starts on one that is up to date
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname=$1)", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_version') is None:
            await conn.execute(f'CREATE TABLE "{schema}".schema_version (component TEXT PRIMARY KEY, '
                               "version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = await conn.fetchval(f'SELECT version FROM "{schema}".schema_version WHERE component=$1',
                                      COMPONENT) or 0
        if current > len(migrations):
            raise SchemaTooNew(
                f"the conversation store in PostgreSQL schema {schema!r} is at schema version {current}, made by a "
                f"newer botkit; this one knows versions up to {len(migrations)}. Run the newer botkit, or upgrade "
                "this one (pip install -U botkit); nothing was changed")
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for sql in migrations[current:]:
            await conn.execute(sql)
        if current < len(migrations):
            await conn.execute(f'INSERT INTO "{schema}".schema_version (component, version) VALUES ($1, $2) '
                               "ON CONFLICT (component) DO UPDATE SET version=EXCLUDED.version, updated_at=now()",
                               COMPONENT, len(migrations))
        return len(migrations) - current


async def schema_version(conn: asyncpg.Connection, schema: str) -> int | None:
    """The conversation store's version in ``schema`` (None: not created there)."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_version')
    if exists is None:
        return None
    value = await conn.fetchval(f'SELECT version FROM "{schema}".schema_version WHERE component=$1', COMPONENT)
    return int(value) if value is not None else None


__all__ = ["COMPONENT", "MIGRATIONS", "SchemaTooNew", "migrate", "schema_version"]
