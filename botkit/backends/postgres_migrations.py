"""The PostgreSQL conversation store's schema and its migrations (botkit/backends/postgres.py).

The store's tables live in one PostgreSQL schema; ``schema_version`` records, per component
(this store: ``conversations``; the knowledge and account stores later), the version its tables
are at. :func:`migrate` (botkit/backends/pg_schema.py's runner) brings a schema to this botkit's
version in one transaction under ``pg_advisory_xact_lock``, so of two workers starting at once one
migrates and the other waits, then finds nothing to do; a schema at a version this botkit does not know is refused
(:class:`SchemaTooNew`) and left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from botkit.backends.pg_schema import Component, SchemaTooNew, migrate_async, version_async

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

CONVERSATIONS = Component(COMPONENT, "the conversation store", MIGRATIONS, plural=False)


async def migrate(conn: asyncpg.Connection, schema: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring ``schema`` to ``len(migrations)`` in one transaction under an advisory lock (a second
    worker waits, then finds it done); returns how many migrations ran. SchemaTooNew when the
    schema is at a version past ``migrations``: nothing is changed."""
    return await migrate_async(conn, schema, CONVERSATIONS, migrations)


async def schema_version(conn: asyncpg.Connection, schema: str) -> int | None:
    """The conversation store's version in ``schema`` (None: not created there)."""
    return await version_async(conn, schema, COMPONENT)


__all__ = ["COMPONENT", "CONVERSATIONS", "MIGRATIONS", "SchemaTooNew", "migrate", "schema_version"]
