"""The PostgreSQL knowledge store's schema (botkit/backends/pg_knowledge.py) and its migrations.

One component, ``knowledge``, in the schema's ``schema_version`` table beside the conversation
store's (botkit/backends/postgres_migrations.py, which made that table): each component is
versioned, migrated and refused on its own, all under the same transaction-level advisory lock
(``botkit.migrate.<schema>``), so two workers starting at once migrate once: the second waits,
then finds nothing to do. It holds
the knowledge base's tables (the SQLite store's, knowledge/store.py, with ``meta`` as
``kb_meta``) and the FAQ proposals (training/gaps.py), which SQLite keeps in the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from botkit.backends.pg_schema import Component, SchemaTooNew, migrate_sync, version_sync

COMPONENT = "knowledge"  # this store's row in schema_version

# Version n is MIGRATIONS[n - 1]; a new botkit appends, never edits a released one. Unqualified
# names: the migration runs with search_path set to the store's schema. Ids are COLLATE "C" so
# that lists come out in the order the SQLite store gives (bytewise).
MIGRATIONS: tuple[str, ...] = (
    # 1: the SQLite knowledge store at schema version 2 (import bases) and the proposals table
    """
    CREATE TABLE kb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE articles (
        id TEXT COLLATE "C" PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, tags TEXT NOT NULL,
        questions TEXT NOT NULL, source TEXT, rev INTEGER NOT NULL, content_hash TEXT NOT NULL,
        updated_at TEXT NOT NULL, updated_by TEXT NOT NULL);
    CREATE TABLE revisions (
        article_id TEXT COLLATE "C" NOT NULL, rev INTEGER NOT NULL, kb_version INTEGER NOT NULL,
        at TEXT NOT NULL, author TEXT NOT NULL, action TEXT NOT NULL, title TEXT NOT NULL,
        body TEXT NOT NULL, tags TEXT NOT NULL, questions TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (article_id, rev));
    CREATE TABLE kb_versions (
        version INTEGER PRIMARY KEY, at TEXT NOT NULL, author TEXT NOT NULL, summary TEXT NOT NULL);
    CREATE TABLE chunks (
        chunk_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, article_id TEXT COLLATE "C" NOT NULL,
        ord INTEGER NOT NULL, kind TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL,
        embed_text TEXT NOT NULL, text_hash TEXT NOT NULL);
    CREATE INDEX chunks_by_article ON chunks (article_id);
    CREATE TABLE embeddings (
        text_hash TEXT NOT NULL, model TEXT NOT NULL, vector BYTEA NOT NULL, PRIMARY KEY (text_hash, model));
    CREATE TABLE import_bases (
        article_id TEXT COLLATE "C" PRIMARY KEY, rev INTEGER NOT NULL, content_hash TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '', at TEXT NOT NULL);
    CREATE TABLE proposals (
        id TEXT COLLATE "C" PRIMARY KEY, title TEXT NOT NULL, questions TEXT NOT NULL, answer TEXT NOT NULL,
        count INTEGER NOT NULL, sources TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed', 'accepted', 'rejected')),
        created_at TEXT NOT NULL, reviewed_at TEXT, reviewer TEXT, article_id TEXT, note TEXT NOT NULL DEFAULT '');
    CREATE INDEX proposals_status ON proposals (status);
    """,
)

KNOWLEDGE = Component(COMPONENT, "the knowledge base", MIGRATIONS, plural=False)


def migrate_knowledge(conn: psycopg.Connection[Any], schema: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the knowledge tables in ``schema`` to ``len(migrations)`` in one transaction under the
    migration lock (botkit/backends/pg_schema.py's runner); returns how many migrations ran.
    SchemaTooNew when the schema is at a later version (made by a newer botkit): nothing is changed."""
    return migrate_sync(conn, schema, KNOWLEDGE, migrations)


def schema_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The knowledge tables' version in ``schema`` (None: never created there)."""
    return version_sync(conn, schema, COMPONENT)


__all__ = ["COMPONENT", "KNOWLEDGE", "MIGRATIONS", "SchemaTooNew", "migrate_knowledge", "schema_version"]
