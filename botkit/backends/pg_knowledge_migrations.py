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

import re
from typing import Any

import psycopg
from psycopg import sql

from botkit.backends.postgres_migrations import SchemaTooNew
from botkit.errors import StorageError

COMPONENT = "knowledge"  # this store's row in schema_version
LOCK_WAIT_S = 600  # how long a starting worker waits for another's migration
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

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



def migrate_knowledge(conn: psycopg.Connection[Any], schema: str, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Bring the knowledge tables in ``schema`` to ``len(migrations)`` in one transaction under the
    migration lock; returns how many migrations ran. SchemaTooNew when the schema is at a later
    version (made by a newer botkit): nothing is changed."""
    if not SCHEMA_NAME.match(schema):
        raise StorageError(f"storage.postgres_schema: {schema!r} is not a PostgreSQL schema name botkit uses "
                           "(lower-case letters, digits and _, at most 63, not starting with a digit)")
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(LOCK_WAIT_S * 1000)))
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"botkit.migrate.{schema}",))
        # look first: CREATE ... IF NOT EXISTS needs the right to create even when there is nothing to do
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname=%s", (schema,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".schema_version',)).fetchone()
        if not (found and found[0]):
            conn.execute(sql.SQL("CREATE TABLE {}.schema_version (component TEXT PRIMARY KEY, version INTEGER NOT "
                                 "NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(ident))
        row = conn.execute(sql.SQL("SELECT version FROM {}.schema_version WHERE component=%s").format(ident),
                           (COMPONENT,)).fetchone()
        current = int(row[0]) if row else 0
        if current > len(migrations):
            raise SchemaTooNew(
                f"the knowledge base in PostgreSQL schema {schema!r} is at schema version {current}, made by a "
                f"newer botkit; this one knows versions up to {len(migrations)}. Run the newer botkit, or upgrade "
                "this one (pip install -U botkit); nothing was changed")
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        for step in migrations[current:]:
            conn.execute(step.encode())  # our own constant statements (bytes: psycopg takes them as they are)
        if current < len(migrations):
            conn.execute(sql.SQL("INSERT INTO {}.schema_version (component, version) VALUES (%s, %s) ON CONFLICT "
                                 "(component) DO UPDATE SET version=EXCLUDED.version, updated_at=now()").format(ident),
                         (COMPONENT, len(migrations)))
        return len(migrations) - current


def schema_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The knowledge tables' version in ``schema`` (None: never created there)."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".schema_version',)).fetchone()
    if not (found and found[0]):
        return None
    row = conn.execute(sql.SQL("SELECT version FROM {}.schema_version WHERE component=%s").format(
        sql.Identifier(schema)), (COMPONENT,)).fetchone()
    return int(row[0]) if row else None


__all__ = ["COMPONENT", "MIGRATIONS", "migrate_knowledge", "schema_version"]
