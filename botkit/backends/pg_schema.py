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
statements are the same (written once, below). The conversation store
(botkit/backends/postgres_migrations.py) and the knowledge base
(botkit/backends/pg_knowledge_migrations.py) migrate through them too. A component at a version
past the ones this botkit knows is refused with :class:`SchemaTooNew` and left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
from psycopg.rows import tuple_row

from botkit.errors import StorageError

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCK_WAIT_S = 600  # how long a starting worker waits for another's migration

__all__ = ["Component", "SchemaTooNew", "check_schema", "migrate_async", "migrate_sync", "version_async",
           "version_sync"]


class SchemaTooNew(StorageError):
    """The database's schema was made by a newer botkit: this one refuses to use it."""


@dataclass(frozen=True)
class Component:
    """One component's migrations: version n is ``migrations[n - 1]`` (append, never edit a
    released one); ``what`` names it in errors ("the staff accounts", plural unless ``plural``
    is False: "the conversation store")."""

    name: str
    what: str
    migrations: Sequence[str]
    plural: bool = True

    def too_new(self, schema: str, current: int, known: int | None = None) -> SchemaTooNew:
        known = len(self.migrations) if known is None else known
        return SchemaTooNew(
            f"{self.what} in PostgreSQL schema {schema!r} {'are' if self.plural else 'is'} at schema version "
            f"{current}, made by a newer botkit; this one knows versions up to {known}. Run the newer botkit, or "
            "upgrade this one (pip install -U botkit); nothing was changed")

    def check_version(self, schema: str, current: int, steps: Sequence[str]) -> None:
        """SchemaTooNew when ``current`` is past the versions ``steps`` reach."""
        if current > len(steps):
            raise self.too_new(schema, current, len(steps))


def check_schema(schema: str) -> str:
    """``schema`` when it is a name botkit uses (it is quoted into SQL), else a StorageError."""
    if not SCHEMA_NAME.match(schema):
        raise StorageError(f"storage.postgres_schema: {schema!r} is not a PostgreSQL schema name botkit uses "
                           "(lower-case letters, digits and _, at most 63, not starting with a digit)")
    return schema


# The statements of a migration, written once for both drivers: ``{0}``, ``{1}`` are the
# parameters (asyncpg's $1, $2; psycopg's %s), ``{schema}`` the checked schema name.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext({0}))"
# look first: CREATE ... IF NOT EXISTS needs the right to create even when there is nothing to do,
# so a role that may only use an existing schema starts on one that is up to date
_SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname={0})"
_CREATE_SCHEMA = 'CREATE SCHEMA "{schema}"'
_VERSION_TABLE = "SELECT to_regclass({0})"
_CREATE_VERSION_TABLE = ('CREATE TABLE "{schema}".schema_version (component TEXT PRIMARY KEY, '
                         "version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())")
_VERSION = 'SELECT version FROM "{schema}".schema_version WHERE component={0}'
_SEARCH_PATH = 'SET LOCAL search_path TO "{schema}"'
_SET_VERSION = ('INSERT INTO "{schema}".schema_version (component, version) VALUES ({0}, {1}) '
                "ON CONFLICT (component) DO UPDATE SET version=EXCLUDED.version, updated_at=now()")
_ASYNCPG = ("$1", "$2")
_PSYCOPG = ("%s", "%s")


def _lock_key(schema: str) -> str:
    return f"botkit.migrate.{schema}"


def _table(schema: str) -> str:
    return f'"{schema}".schema_version'


def migrate_sync(conn: psycopg.Connection[Any], schema: str, component: Component,
                 migrations: Sequence[str] | None = None) -> int:
    """Bring ``component`` in ``schema`` to ``len(migrations)`` (default: all it has) in one
    transaction under the advisory lock; returns how many migrations ran. SchemaTooNew when it is
    at a later version (made by a newer botkit): nothing is changed."""
    steps = component.migrations if migrations is None else migrations
    check_schema(schema)

    def q(statement: str) -> str:
        return statement.format(*_PSYCOPG, schema=schema)

    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:  # whatever rows the connection makes
        cur.execute(f"SET LOCAL statement_timeout = {LOCK_WAIT_S * 1000}")  # wait for another's migration
        cur.execute(q(_LOCK), (_lock_key(schema),))
        row = cur.execute(q(_SCHEMA_EXISTS), (schema,)).fetchone()
        if not (row and row[0]):
            cur.execute(q(_CREATE_SCHEMA))
        row = cur.execute(q(_VERSION_TABLE), (_table(schema),)).fetchone()
        if row is None or row[0] is None:
            cur.execute(q(_CREATE_VERSION_TABLE))
        row = cur.execute(q(_VERSION), (component.name,)).fetchone()
        current = int(row[0]) if row else 0
        component.check_version(schema, current, steps)
        cur.execute(q(_SEARCH_PATH))
        for sql in steps[current:]:
            cur.execute(sql)  # our own constant statements
        if current < len(steps):
            cur.execute(q(_SET_VERSION), (component.name, len(steps)))
        return len(steps) - current


async def migrate_async(conn: asyncpg.Connection, schema: str, component: Component,
                        migrations: Sequence[str] | None = None) -> int:
    """:func:`migrate_sync` over an asyncpg connection (the lock's wait: a timeout on its statement)."""
    steps = component.migrations if migrations is None else migrations
    check_schema(schema)

    def q(statement: str) -> str:
        return statement.format(*_ASYNCPG, schema=schema)

    async with conn.transaction():
        # another worker migrating holds the lock for as long as that takes: wait past command_timeout
        await conn.execute(q(_LOCK), _lock_key(schema), timeout=LOCK_WAIT_S)
        if not await conn.fetchval(q(_SCHEMA_EXISTS), schema):
            await conn.execute(q(_CREATE_SCHEMA))
        if await conn.fetchval(q(_VERSION_TABLE), _table(schema)) is None:
            await conn.execute(q(_CREATE_VERSION_TABLE))
        current = await conn.fetchval(q(_VERSION), component.name) or 0
        component.check_version(schema, current, steps)
        await conn.execute(q(_SEARCH_PATH))
        for sql in steps[current:]:
            await conn.execute(sql)
        if current < len(steps):
            await conn.execute(q(_SET_VERSION), component.name, len(steps))
        return len(steps) - current


def version_sync(conn: psycopg.Connection[Any], schema: str, name: str) -> int | None:
    """Component ``name``'s version in ``schema`` (None: not created there)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(_VERSION_TABLE.format(*_PSYCOPG), (_table(schema),)).fetchone()
        if row is None or row[0] is None:
            return None
        row = cur.execute(_VERSION.format(*_PSYCOPG, schema=check_schema(schema)), (name,)).fetchone()
    return int(row[0]) if row else None


async def version_async(conn: asyncpg.Connection, schema: str, name: str) -> int | None:
    """:func:`version_sync` over an asyncpg connection."""
    if await conn.fetchval(_VERSION_TABLE.format(*_ASYNCPG), _table(schema)) is None:
        return None
    value = await conn.fetchval(_VERSION.format(*_ASYNCPG, schema=check_schema(schema)), name)
    return int(value) if value is not None else None
