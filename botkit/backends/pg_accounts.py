"""Staff accounts, their sessions and API tokens on PostgreSQL (psycopg 3, synchronous), so that
every worker of one bot knows the same staff: a session made on one worker is valid on all, a
password changed or an account disabled on one ends its sessions everywhere.

:class:`PostgresAccountStore` implements :class:`~botkit.staff_store.AccountStore` with the
SQLite store's behaviour (both pass tests/test_account_stores.py). It is chosen by the same switch
as the conversation store: ``BOTKIT_DATABASE_URL`` set (or ``storage.backend: postgresql``;
botkit/app/storage_switch.py). Its tables (``staff_users``, ``staff_sessions``,
``staff_api_tokens``) live in the conversation store's schema (``storage.postgres_schema``) and
are migrated on start as component ``accounts`` of its ``schema_version`` table
(botkit/backends/pg_schema.py): apart from the conversation store's version, under the same
advisory lock, a newer schema refused (:class:`SchemaTooNew`).

**Why psycopg 3 and not asyncpg here.** :class:`~botkit.app.accounts.Auth` is synchronous: the
CLI calls it directly and the web handlers in a worker thread. asyncpg has no synchronous API,
so using it would mean a private event loop in a thread of its own and a hop to it and back for
every statement. Measured on the shared 2-core test machine against the local server, from a
plain thread: one ``SELECT $1`` over a held connection, psycopg 3 88-94 us per call against
0.8-1.2 ms through the bridge (the thread wake-ups cost more than the query); Auth's session
lookup through the pools as used here (``benchmarks/accounts_driver.py``, load average 6-8),
psycopg 3 0.4-0.9 ms against 0.9-2.6 ms, medians 0.76 and 1.54 ms. psycopg 3 is
also what ``benchmarks/pg_driver.py`` already measures. Connections come from a
``psycopg_pool.ConnectionPool`` (up to ``pool_size``; each is checked before use, so one that a
server restart broke is replaced instead of failing a request; the check is one more round trip,
part of the pooled figures above).

A server that cannot be reached is a :class:`~botkit.errors.DatabaseUnavailable`; a refused login
or a missing database a :class:`~botkit.errors.StorageError` that says what to fix. The DSN's
password never appears in a message or a repr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from botkit.backends.pg_schema import Component, SchemaTooNew, check_schema, migrate_sync
from botkit.backends.postgres import where
from botkit.errors import DatabaseUnavailable, StorageError
from botkit.staff_store import SessionRecord, TokenRecord, UserRecord

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_MS = 30_000  # a server gone silent fails the request after this, never hangs it

# Version n is MIGRATIONS[n - 1]; append, never edit a released one. Names compare without case
# (they are ASCII): unique on lower(name), looked up by lower(name).
MIGRATIONS: tuple[str, ...] = (
    # 1: the SQLite store's tables
    """
    CREATE TABLE staff_users (
        name TEXT NOT NULL, role TEXT NOT NULL, password_hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, disabled_at DOUBLE PRECISION);
    CREATE UNIQUE INDEX staff_users_by_name ON staff_users (lower(name));
    CREATE TABLE staff_sessions (
        token_hash TEXT PRIMARY KEY, name TEXT NOT NULL, csrf TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL);
    CREATE INDEX staff_sessions_by_name ON staff_sessions (lower(name));
    CREATE INDEX staff_sessions_by_expiry ON staff_sessions (expires_at);
    CREATE TABLE staff_api_tokens (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        label TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, last_used_at DOUBLE PRECISION);
    CREATE INDEX staff_api_tokens_by_name ON staff_api_tokens (lower(name));
    """,
)
COMPONENT = Component("accounts", "the staff accounts", MIGRATIONS)

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresAccountStore", "SchemaTooNew", "connect_error"]


def connect_error(exc: BaseException, dsn: str, source: str = "BOTKIT_DATABASE_URL") -> StorageError:
    """What a failed psycopg connection means for an operator, in one line."""
    at = where(dsn)
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()).rstrip(".") \
        or type(exc).__name__  # libpq's message spans lines ("... Connection refused\n\tIs the server running ...")
    lowered = str(exc).lower()
    if isinstance(exc, psycopg.ProgrammingError) or "invalid dsn" in lowered or "missing \"=\"" in lowered:
        return StorageError(f"{source} is not a PostgreSQL DSN botkit can use ({text}); write it as "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    if "database" in lowered and "does not exist" in lowered:
        return StorageError(f"PostgreSQL at {at}: {text}; create it (`createdb`) or fix the database name in {source}")
    if "authentication failed" in lowered or ("role" in lowered and "does not exist" in lowered) \
            or "no password supplied" in lowered or "no pg_hba.conf entry" in lowered:
        return StorageError(f"PostgreSQL at {at} refused the login: {text}; check the user and password in {source}")
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {at}: the host name does not resolve ({text}); "
                                   f"check the host in {source}")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout | OSError):
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {at}: {text}; check that the server runs and listens "
                                   f"there (`pg_isready -h {at.split(':')[0]}`) and the host and port in {source}")
    return StorageError(f"PostgreSQL at {at}: {text}")


def _user(row: dict[str, Any]) -> UserRecord:
    return UserRecord(row["name"], row["role"], row["password_hash"], row["created_at"], row["disabled_at"])


class PostgresAccountStore:
    """The staff accounts in PostgreSQL schema ``schema`` of the database ``dsn`` names
    (``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``). Opened by :meth:`start` (which migrates),
    or on first use (the CLI)."""

    def __init__(self, dsn: str, *, schema: str = "botkit", pool_size: int = 4, source: str = "BOTKIT_DATABASE_URL",
                 application_name: str = "botkit-accounts"):
        self._dsn = dsn
        self.application_name = application_name  # what pg_stat_activity shows for its connections
        self.schema = check_schema(schema)
        self.source = source
        self.where = where(dsn)
        self.pool_size = pool_size
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] | None = None
        self._starting = threading.Lock()  # the first requests of a server may arrive together

    def __repr__(self) -> str:
        return f"PostgresAccountStore({self.where}, schema={self.schema!r})"

    def _connect_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, "row_factory": dict_row,
                "application_name": self.application_name,
                "options": f"-c search_path={self.schema} -c statement_timeout={COMMAND_TIMEOUT_MS}"}

    def start(self) -> None:
        """Connect, migrate the schema (under the advisory lock), open the pool."""
        with self._starting:
            if self._pool is None:
                self._start()

    def _start(self) -> None:
        try:  # one plain connection first: its failure says why (a pool would only time out)
            conn = psycopg.connect(self._dsn, **self._connect_kwargs())
        except Exception as exc:  # noqa: BLE001 - every way of failing to connect gets its one-line reason
            raise connect_error(exc, self._dsn, self.source) from exc
        try:
            with conn:
                migrate_sync(conn, self.schema, COMPONENT)
        except SchemaTooNew:
            raise
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StorageError(
                f"PostgreSQL at {self.where}: cannot create or migrate the staff accounts in schema {self.schema!r} "
                f"({exc}); let this role create it (GRANT CREATE ON DATABASE, or create the schema owned by it), or "
                "start once with a role that may, then this one runs on it") from exc
        except psycopg.OperationalError as exc:
            raise connect_error(exc, self._dsn, self.source) from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL at {self.where}: migrating the staff accounts in schema {self.schema!r} "
                               f"failed, so nothing of it was changed: {exc}") from exc
        pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            self._dsn, min_size=1, max_size=self.pool_size, kwargs=self._connect_kwargs(), open=False,
            check=ConnectionPool.check_connection, timeout=CONNECT_TIMEOUT_S, name="botkit-accounts")
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            pool.close()
            raise connect_error(exc, self._dsn, self.source) from exc
        self._pool = pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _run(self, fn: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        if self._pool is None:
            self.start()  # the CLI never calls start()
        assert self._pool is not None
        try:
            with self._pool.connection() as conn:
                return fn(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The server went away (its transaction, if any, was rolled back) or no connection came.
            raise connect_error(exc, self._dsn, self.source) from exc

    def _count(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._run(lambda c: c.execute(sql, params).rowcount)

    def _one(self, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        return self._run(lambda c: c.execute(sql, params).fetchone())

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self._run(lambda c: c.execute(sql, params).fetchall())

    # -- accounts ----------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password_hash: str, created_at: float) -> bool:
        # ON CONFLICT on the lower(name) index: two workers adding the same name get one account
        return self._count("INSERT INTO staff_users (name, role, password_hash, created_at) VALUES (%s,%s,%s,%s) "
                           "ON CONFLICT ((lower(name))) DO NOTHING", (name, role, password_hash, created_at)) == 1

    def user(self, name: str) -> UserRecord | None:
        row = self._one("SELECT * FROM staff_users WHERE lower(name)=lower(%s)", (name,))
        return _user(row) if row else None

    def users(self) -> list[UserRecord]:
        return [_user(r) for r in self._all("SELECT * FROM staff_users ORDER BY lower(name), name")]

    def set_password_hash(self, name: str, password_hash: str, *, only_if: str | None = None) -> bool:
        if only_if is None:
            return self._count("UPDATE staff_users SET password_hash=%s WHERE lower(name)=lower(%s)",
                               (password_hash, name)) == 1
        return self._count("UPDATE staff_users SET password_hash=%s WHERE lower(name)=lower(%s) AND password_hash=%s",
                           (password_hash, name, only_if)) == 1

    def set_role(self, name: str, role: str) -> bool:
        return self._count("UPDATE staff_users SET role=%s WHERE lower(name)=lower(%s)", (role, name)) == 1

    def set_disabled(self, name: str, disabled_at: float | None) -> bool:
        return self._count("UPDATE staff_users SET disabled_at=%s WHERE lower(name)=lower(%s)",
                           (disabled_at, name)) == 1

    # -- sessions ----------------------------------------------------------------------------------
    def add_session(self, token_hash: str, name: str, csrf: str, created_at: float, expires_at: float) -> None:
        def add(conn: psycopg.Connection[dict[str, Any]]) -> None:
            with conn.transaction():
                conn.execute("DELETE FROM staff_sessions WHERE expires_at <= %s", (created_at,))
                conn.execute("INSERT INTO staff_sessions (token_hash, name, csrf, created_at, expires_at) "
                             "VALUES (%s,%s,%s,%s,%s)", (token_hash, name, csrf, created_at, expires_at))

        self._run(add)

    def session(self, token_hash: str) -> SessionRecord | None:
        row = self._one("SELECT s.name, s.csrf, s.expires_at, u.role, u.disabled_at FROM staff_sessions s "
                        "JOIN staff_users u ON lower(u.name) = lower(s.name) WHERE s.token_hash=%s", (token_hash,))
        return SessionRecord(row["name"], row["csrf"], row["expires_at"], row["role"], row["disabled_at"]) \
            if row else None

    def extend_session(self, token_hash: str, expires_at: float) -> None:
        self._count("UPDATE staff_sessions SET expires_at=%s WHERE token_hash=%s", (expires_at, token_hash))

    def end_session(self, token_hash: str) -> None:
        self._count("DELETE FROM staff_sessions WHERE token_hash=%s", (token_hash,))

    def end_sessions_of(self, name: str) -> None:
        self._count("DELETE FROM staff_sessions WHERE lower(name)=lower(%s)", (name,))

    # -- API tokens --------------------------------------------------------------------------------
    def add_token(self, token_hash: str, name: str, label: str, created_at: float) -> None:
        self._count("INSERT INTO staff_api_tokens (token_hash, name, label, created_at) VALUES (%s,%s,%s,%s)",
                    (token_hash, name, label, created_at))

    def token(self, token_hash: str) -> TokenRecord | None:
        row = self._one("SELECT t.name, u.role, u.disabled_at FROM staff_api_tokens t "
                        "JOIN staff_users u ON lower(u.name) = lower(t.name) WHERE t.token_hash=%s", (token_hash,))
        return TokenRecord(row["name"], row["role"], row["disabled_at"]) if row else None

    def touch_token(self, token_hash: str, used_at: float) -> None:
        self._count("UPDATE staff_api_tokens SET last_used_at=%s WHERE token_hash=%s", (used_at, token_hash))

    def tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, name, label, created_at, last_used_at FROM staff_api_tokens"
        if name:
            return self._all(sql + " WHERE lower(name)=lower(%s) ORDER BY id", (name,))
        return self._all(sql + " ORDER BY id")

    def revoke_token(self, token_id: int) -> bool:
        return self._count("DELETE FROM staff_api_tokens WHERE id=%s", (token_id,)) == 1
