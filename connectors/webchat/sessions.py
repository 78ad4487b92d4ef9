"""Web chat sessions: a random token in the customer's browser, a conversation id on the server.

The token (``secrets.token_urlsafe(32)``) is the customer's only credential: whoever holds it
reads the conversation. It is therefore never stored or logged; the table keeps its SHA-256,
so a copy of the database does not hand out live sessions. The mapping lives in its own
SQLite file in the project's state directory, so a reconnect to a restarted server resumes
the same conversation. Only tokens this server issued are honoured: an unknown or expired
token gets a new session (and a new, empty conversation), never a chosen one.

:class:`WebChatSessions` is the seam: :class:`SessionStore` (SQLite, one process) here; with
PostgreSQL switched on (``BOTKIT_DATABASE_URL``) the app hands the connector a factory for the
PostgreSQL twin (botkit/backends/pg_webchat.py, shared by every worker) in
``ConnectorContext.extra[SESSION_STORE_FACTORY]``: connectors never import the backends.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from botkit.sqlite import AsyncSQLite

T = TypeVar("T")
SESSIONS_DB = "webchat.sqlite3"
CONVERSATION_PREFIX = "webchat:"
MAX_TOKEN_CHARS = 128
SESSION_STORE_FACTORY = "webchat.sessions"  # the ConnectorContext.extra key of a SessionStoreFactory

SCHEMA = """
CREATE TABLE IF NOT EXISTS webchat_sessions (
    token_sha256 TEXT PRIMARY KEY, conversation_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, last_seen TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Session:
    token: str
    conversation_id: str
    resumed: bool  # False: a new session (the token given, if any, was unknown or expired)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_digest(token: str) -> str:
    """The SHA-256 a store keeps of a token (hex)."""
    return _digest(token)


def new_session() -> tuple[str, str]:
    """A fresh (token, conversation id)."""
    return secrets.token_urlsafe(32), CONVERSATION_PREFIX + secrets.token_urlsafe(12)


def usable_token(token: object) -> str | None:
    """``token`` when it could be one we issued (a string of sensible length), else None."""
    return token if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS else None


@runtime_checkable
class WebChatSessions(Protocol):
    """Token -> conversation id (only the token's SHA-256 is kept)."""

    ttl: timedelta

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def open(self, token: object, *, create: bool = True) -> Session | None:
        """Resume the session of ``token`` when it is one of ours and seen within ``ttl`` (its
        last-seen time is then now), else start a new one (None instead when ``create`` is false)."""
        ...


#: Makes the session store, given the session lifetime (channels.webchat.session_days).
SessionStoreFactory = Callable[[timedelta], WebChatSessions]


class SessionStore:
    """Token → conversation id, in SQLite; every operation runs in a worker thread."""

    def __init__(self, path: Path | str, ttl: timedelta = timedelta(days=30), *,
                 clock: Callable[[], datetime] | None = None):
        self.path = Path(path)
        self.ttl = ttl
        self.clock = clock or (lambda: datetime.now(UTC))  # tests move it to expire sessions
        self._sql = AsyncSQLite(self.path, SCHEMA, what="the web chat session store")

    async def start(self) -> None:
        await self._sql.start()

    async def close(self) -> None:
        await self._sql.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._sql.run(fn)

    async def open(self, token: object, *, create: bool = True) -> Session | None:
        """Resume the session of ``token`` when it is one of ours and still valid, else start a new
        one (None instead when ``create`` is false)."""
        now = self.clock()
        given = usable_token(token)
        if given is not None:
            digest = _digest(given)

            def resume(db: sqlite3.Connection) -> str | None:
                row = db.execute("SELECT conversation_id, last_seen FROM webchat_sessions WHERE token_sha256=?",
                                 (digest,)).fetchone()
                if row is None:
                    return None
                if datetime.fromisoformat(row[1]) < now - self.ttl:
                    db.execute("DELETE FROM webchat_sessions WHERE token_sha256=?", (digest,))
                    return None
                db.execute("UPDATE webchat_sessions SET last_seen=? WHERE token_sha256=?", (now.isoformat(), digest))
                return str(row[0])

            conversation_id = await self._run(resume)
            if conversation_id is not None:
                return Session(given, conversation_id, resumed=True)
        if not create:
            return None
        new_token, conversation_id = new_session()

        def insert(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO webchat_sessions (token_sha256, conversation_id, created_at, last_seen) "
                       "VALUES (?,?,?,?)", (_digest(new_token), conversation_id, now.isoformat(), now.isoformat()))

        await self._run(insert)
        return Session(new_token, conversation_id, resumed=False)
