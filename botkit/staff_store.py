"""Where staff accounts, their browser sessions and their API tokens are kept: the
:class:`AccountStore` seam under :class:`botkit.app.accounts.Auth`.

Auth holds the rules (names, roles, password hashing, expiry, the sign-in throttle); a store only
keeps rows. Two implementations pass the same contract (tests/test_account_stores.py):

* :class:`SQLiteAccountStore`: ``<state_dir>/accounts.sqlite3``, one process (the default);
* ``botkit.backends.pg_accounts.PostgresAccountStore``: PostgreSQL, shared by every worker,
  chosen by the same switch as the conversation store (``BOTKIT_DATABASE_URL``, or
  ``storage.backend: postgresql``; botkit/app/storage_switch.py).

The methods are synchronous (the CLI calls them directly, the web handlers in a thread). Names
compare without regard to case (ASCII: account names are ASCII). Times are seconds since the
epoch, as Auth's clock gives them. Only hashes of session and API tokens are stored.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from botkit.sqlite import SQLiteDatabase

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY COLLATE NOCASE, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_at REAL NOT NULL, disabled_at REAL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL COLLATE NOCASE, csrf TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT, token_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL COLLATE NOCASE,
    label TEXT NOT NULL, created_at REAL NOT NULL, last_used_at REAL);
"""


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    password_hash: str
    created_at: float
    disabled_at: float | None


@dataclass(frozen=True)
class SessionRecord:
    """A session joined with its account (the role and disabled state are the account's now)."""

    name: str
    csrf: str
    expires_at: float
    role: str
    disabled_at: float | None


@dataclass(frozen=True)
class TokenRecord:
    """An API token joined with its account."""

    name: str
    role: str
    disabled_at: float | None


@runtime_checkable
class AccountStore(Protocol):
    """Rows of accounts, sessions and API tokens. ``bool`` results: whether a row matched."""

    def start(self) -> None: ...
    def close(self) -> None: ...

    # accounts
    def add_user(self, name: str, role: str, password_hash: str, created_at: float) -> bool:
        """False when an account of that name (any case) exists already."""
        ...
    def user(self, name: str) -> UserRecord | None: ...
    def users(self) -> list[UserRecord]:
        """Ordered by name, case-insensitively."""
        ...
    def set_password_hash(self, name: str, password_hash: str, *, only_if: str | None = None) -> bool:
        """Replace the hash (only when it is still ``only_if``, if given)."""
        ...
    def set_role(self, name: str, role: str) -> bool: ...
    def set_disabled(self, name: str, disabled_at: float | None) -> bool: ...

    # sessions
    def add_session(self, token_hash: str, name: str, csrf: str, created_at: float, expires_at: float) -> None:
        """Also forgets sessions that expired by ``created_at`` (housekeeping)."""
        ...
    def session(self, token_hash: str) -> SessionRecord | None: ...
    def extend_session(self, token_hash: str, expires_at: float) -> None: ...
    def end_session(self, token_hash: str) -> None: ...
    def end_sessions_of(self, name: str) -> None: ...

    # API tokens
    def add_token(self, token_hash: str, name: str, label: str, created_at: float) -> None: ...
    def token(self, token_hash: str) -> TokenRecord | None: ...
    def touch_token(self, token_hash: str, used_at: float) -> None: ...
    def tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        """id, name, label, created_at, last_used_at of each token (of one account), by id."""
        ...
    def revoke_token(self, token_id: int) -> bool: ...


def _user(row: sqlite3.Row) -> UserRecord:
    return UserRecord(row["name"], row["role"], row["password_hash"], row["created_at"], row["disabled_at"])


class SQLiteAccountStore:
    """The accounts in one SQLite file (created ``0600``: it holds password hashes); one
    connection shared by threads, every statement under its lock. Opened on first use when
    :meth:`start` was not called (the CLI)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        # SQLite's default synchronous (FULL), as it always had.
        self._sql = SQLiteDatabase(self.path, SQLITE_SCHEMA, what="the accounts database")

    def __repr__(self) -> str:
        return f"SQLiteAccountStore({str(self.path)!r})"

    def start(self) -> None:
        self._sql.start()

    def close(self) -> None:
        self._sql.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection (opened on first use); use it under the database's lock."""
        return self._sql.connection

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return self._sql.run(lambda db: db.execute(sql, params).rowcount)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return self._sql.run(lambda db: db.execute(sql, params).fetchone())

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._sql.run(lambda db: db.execute(sql, params).fetchall())

    def add_user(self, name: str, role: str, password_hash: str, created_at: float) -> bool:
        try:
            self._write("INSERT INTO users (name, role, password_hash, created_at) VALUES (?,?,?,?)",
                        (name, role, password_hash, created_at))
        except sqlite3.IntegrityError:
            return False
        return True

    def user(self, name: str) -> UserRecord | None:
        row = self.one("SELECT * FROM users WHERE name=?", (name,))
        return _user(row) if row else None

    def users(self) -> list[UserRecord]:
        return [_user(r) for r in self._all("SELECT * FROM users ORDER BY name")]

    def set_password_hash(self, name: str, password_hash: str, *, only_if: str | None = None) -> bool:
        if only_if is None:
            return self._write("UPDATE users SET password_hash=? WHERE name=?", (password_hash, name)) == 1
        return self._write("UPDATE users SET password_hash=? WHERE name=? AND password_hash=?",
                           (password_hash, name, only_if)) == 1

    def set_role(self, name: str, role: str) -> bool:
        return self._write("UPDATE users SET role=? WHERE name=?", (role, name)) == 1

    def set_disabled(self, name: str, disabled_at: float | None) -> bool:
        return self._write("UPDATE users SET disabled_at=? WHERE name=?", (disabled_at, name)) == 1

    def add_session(self, token_hash: str, name: str, csrf: str, created_at: float, expires_at: float) -> None:
        self._write("DELETE FROM sessions WHERE expires_at <= ?", (created_at,))
        self._write("INSERT INTO sessions (token_hash, name, csrf, created_at, expires_at) VALUES (?,?,?,?,?)",
                    (token_hash, name, csrf, created_at, expires_at))

    def session(self, token_hash: str) -> SessionRecord | None:
        row = self.one("SELECT s.name, s.csrf, s.expires_at, u.role, u.disabled_at FROM sessions s "
                       "JOIN users u ON u.name = s.name WHERE s.token_hash=?", (token_hash,))
        return SessionRecord(row["name"], row["csrf"], row["expires_at"], row["role"], row["disabled_at"]) \
            if row else None

    def extend_session(self, token_hash: str, expires_at: float) -> None:
        self._write("UPDATE sessions SET expires_at=? WHERE token_hash=?", (expires_at, token_hash))

    def end_session(self, token_hash: str) -> None:
        self._write("DELETE FROM sessions WHERE token_hash=?", (token_hash,))

    def end_sessions_of(self, name: str) -> None:
        self._write("DELETE FROM sessions WHERE name=?", (name,))

    def add_token(self, token_hash: str, name: str, label: str, created_at: float) -> None:
        self._write("INSERT INTO api_tokens (token_hash, name, label, created_at) VALUES (?,?,?,?)",
                    (token_hash, name, label, created_at))

    def token(self, token_hash: str) -> TokenRecord | None:
        row = self.one("SELECT t.name, u.role, u.disabled_at FROM api_tokens t JOIN users u ON u.name = t.name "
                       "WHERE t.token_hash=?", (token_hash,))
        return TokenRecord(row["name"], row["role"], row["disabled_at"]) if row else None

    def touch_token(self, token_hash: str, used_at: float) -> None:
        self._write("UPDATE api_tokens SET last_used_at=? WHERE token_hash=?", (used_at, token_hash))

    def tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, name, label, created_at, last_used_at FROM api_tokens"
        rows = self._all(sql + (" WHERE name=? ORDER BY id" if name else " ORDER BY id"), (name,) if name else ())
        return [dict(r) for r in rows]

    def revoke_token(self, token_id: int) -> bool:
        return self._write("DELETE FROM api_tokens WHERE id=?", (token_id,)) == 1


__all__ = ["SQLITE_SCHEMA", "AccountStore", "SQLiteAccountStore", "SessionRecord", "TokenRecord", "UserRecord"]
