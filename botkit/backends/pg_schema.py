"""Versioned migrations for the PostgreSQL twins of the staff accounts and the web chat sessions.

They share the conversation store's bookkeeping (botkit/backends/postgres_migrations.py): one
``schema_version`` table per PostgreSQL schema with a row per *component* (``conversations``,
``accounts``, ``webchat_sessions``, ...), so each component is migrated and refused on its own
and none overwrites another's version. Every component migrates under the same transaction-scoped
advisory lock (``botkit.migrate.<schema>``) as the conversation store: two workers, or two
stores of one worker, starting at once never create the schema or ``schema_version`` twice; the
second waits, then finds its tables there.

:func:`migrate_sync` runs a component's migrations over a psycopg 3 connection (the staff
accounts are synchronous), :func:`migrate_async` over an asyncpg one (the web chat sessions); the
statements are the same. A component at a version past the ones this botkit knows is refused with
:class:`~botkit.backends.postgres_migrations.SchemaTooNew` and left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import psycopg
from psycopg.rows import tuple_row

from botkit.backends.postgres_migrations import SchemaTooNew
from botkit.errors import StorageError

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCK_WAIT_S = 600  # how long a starting worker waits for another's migration

__all__ = ["Component", "SchemaTooNew", "check_schema", "migrate_async", "migrate_sync"]


@dataclass(frozen=True)
class Component:
    """One component's migrations: version n is ``migrations[n - 1]`` (append, never edit a
    released one); ``what`` names it in errors ("the staff accounts")."""

    name: str
    what: str
    migrations: Sequence[str]

    def too_new(self, schema: str, current: int, known: int | None = None) -> SchemaTooNew:
        known = len(self.migrations) if known is None else known
        return SchemaTooNew(
            f"{self.what} in PostgreSQL schema {schema!r} are at schema version {current}, made by a newer "
            f"botkit; this one knows versions up to {known}. Run the newer botkit, or upgrade this one "
            "(pip install -U botkit); nothing was changed")


def check_schema(schema: str) -> str:
    """``schema`` when it is a name botkit uses (it is quoted into SQL), else a StorageError."""
    if not SCHEMA_NAME.match(schema):
        raise StorageError(f"storage.postgres_schema: {schema!r} is not a PostgreSQL schema name botkit uses "
                           "(lower-case letters, digits and _, at most 63, not starting with a digit)")
    return schema


def _create_version_table(schema: str) -> str:
    return (f'CREATE TABLE "{schema}".schema_version (component TEXT PRIMARY KEY, '
            "version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())")


def migrate_sync(conn: psycopg.Connection, schema: str, component: Component,
                 migrations: Sequence[str] | None = None) -> int:
    """Bring ``component`` in ``schema`` to ``len(migrations)`` (default: all it has) in one
    transaction under the advisory lock; returns how many migrations ran."""
    steps = component.migrations if migrations is None else migrations
    check_schema(schema)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:  # whatever rows the connection makes
        cur.execute(f"SET LOCAL statement_timeout = {LOCK_WAIT_S * 1000}")  # wait for another's migration
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"botkit.migrate.{schema}",))
        # look first: CREATE ... IF NOT EXISTS needs the right to create even when there is nothing to do
        if cur.execute("SELECT 1 FROM pg_namespace WHERE nspname=%s", (schema,)).fetchone() is None:
            cur.execute(f'CREATE SCHEMA "{schema}"')
        row = cur.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_version',)).fetchone()
        if row is None or row[0] is None:
            cur.execute(_create_version_table(schema))
        row = cur.execute(f'SELECT version FROM "{schema}".schema_version WHERE component=%s',
                          (component.name,)).fetchone()
        current = int(row[0]) if row else 0
        if current > len(steps):
            raise component.too_new(schema, current, len(steps))
        cur.execute(f'SET LOCAL search_path TO "{schema}"')
        for sql in steps[current:]:
            cur.execute(sql)  # our own constant statements
        if current < len(steps):
            cur.execute(f'INSERT INTO "{schema}".schema_version (component, version) VALUES (%s, %s) '
                        "ON CONFLICT (component) DO UPDATE SET version=EXCLUDED.version, updated_at=now()",
                        (component.name, len(steps)))
        return len(steps) - current


async def migrate_async(conn: asyncpg.Connection, schema: str, component: Component,
                        migrations: Sequence[str] | None = None) -> int:
    """:func:`migrate_sync` over an asyncpg connection."""
    steps = component.migrations if migrations is None else migrations
    check_schema(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"botkit.migrate.{schema}",
                           timeout=LOCK_WAIT_S)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname=$1)", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_version') is None:
            await conn.execute(_create_version_table(schema))
        current = await conn.fetchval(f'SELECT version FROM "{schema}".schema_version WHERE component=$1',
                                      component.name) or 0
        if current > len(steps):
            raise component.too_new(schema, current, len(steps))
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for sql in steps[current:]:
            await conn.execute(sql)
        if current < len(steps):
            await conn.execute(f'INSERT INTO "{schema}".schema_version (component, version) VALUES ($1, $2) '
                               "ON CONFLICT (component) DO UPDATE SET version=EXCLUDED.version, updated_at=now()",
                               component.name, len(steps))
        return len(steps) - current
