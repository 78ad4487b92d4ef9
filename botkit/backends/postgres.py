"""The conversation store on PostgreSQL (asyncpg), for several workers sharing one store.

:class:`PostgresConversationStore` implements :class:`~botkit.store.ConversationStore` with the
same behaviour as :class:`~botkit.store.SQLiteConversationStore` (both pass
``botkit.testing.ConversationStoreContract``): one exchange is one transaction, an accepted
message is stored once and answered once (``UPDATE ... WHERE state='pending'``), two agents
racing for a hand-off get one winner (row locks).

Every table lives in one PostgreSQL schema (``storage.postgres_schema``, default ``botkit``),
created on start; the migrations (botkit/backends/postgres_migrations.py) bring it to this
botkit's version, recorded in ``schema_version``. They run in one transaction under
``pg_advisory_xact_lock``: of two workers starting at once one migrates and the other waits,
then finds nothing to do. A schema newer than this botkit knows is refused
(:class:`SchemaTooNew`), never written to.

A server that cannot be reached (down, wrong host or port, gone mid-turn) is a
:class:`~botkit.errors.DatabaseUnavailable` (retry later: nothing was committed, or the write is
refused when tried again, never doubled); a refused login or a missing database is a
:class:`~botkit.errors.StorageError` that says what to fix. The DSN's password never appears in
a message or a repr.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from botkit.backends.postgres_migrations import MIGRATIONS, SchemaTooNew, migrate, schema_version
from botkit.errors import DatabaseUnavailable, StorageError
from botkit.store import CannedReply, ConflictError, StoredConversation, StoreError, like_pattern
from botkit.types import (
    Conversation,
    Escalation,
    Handoff,
    HistoryWindow,
    InboxItem,
    InboxState,
    IncomingMessage,
    Source,
    Status,
    Turn,
)

T = TypeVar("T")
Row = Mapping[str, Any]
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0  # a server gone silent mid-turn fails the turn after this, never hangs it

# What a lost connection looks like from asyncpg: the server went away, restarted, or refuses
# connections for now. The transaction it was in is rolled back by the server. An idle pooled
# connection whose server process was ended can also fail its next BEGIN with an
# InternalClientError ("another operation is in progress": the server's goodbye arrived unasked).
LOST = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
         asyncpg.InternalClientError, asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
         asyncpg.CrashShutdownError)


def where(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: never its password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "(a DSN that cannot be read)"
    return f"{host}:{port}/{parts.path.lstrip('/') or parts.username or '?'}"


def connect_error(exc: BaseException, dsn: str, source: str = "BOTKIT_DATABASE_URL") -> StorageError:
    """What a failed connection means for an operator, in one line; ``source``: where the DSN came from."""
    at = where(dsn)
    if isinstance(exc, socket.gaierror):
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {at}: the host name does not resolve ({exc}); "
                                   f"check the host in {source}")
    if isinstance(exc, ConnectionRefusedError | OSError):
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {at}: {exc.strerror or exc}; check that the server "
                                   f"runs and listens there (`pg_isready -h {at.split(':')[0]}`) and the host and port "
                                   f"in {source}")
    if isinstance(exc, asyncio.TimeoutError):
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {at}: no answer within {CONNECT_TIMEOUT_S:g} s; check "
                                   f"the host and port in {source} and any firewall between")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StorageError(f"PostgreSQL at {at}: {exc}; create it (`createdb`) or fix the database name in "
                            f"{source}")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        return StorageError(f"PostgreSQL at {at} refused the login: {exc}; check the user and password in "
                            f"{source}")
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return DatabaseUnavailable(f"PostgreSQL at {at} cannot take connections now: {exc}; try again in a moment")
    if isinstance(exc, asyncpg.PostgresError):
        return StorageError(f"PostgreSQL at {at}: {exc}")
    return StorageError(f"{source} is not a PostgreSQL DSN botkit can use ({type(exc).__name__}: {exc}); "
                        "write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE")


async def open_pool(dsn: str, schema: str, *, pool_size: int, source: str, what: str,
                    migrate_with: Callable[[asyncpg.Connection], Awaitable[object]],
                    explain_privileges: bool = False) -> asyncpg.Pool:
    """A pool of up to ``pool_size`` connections to ``dsn`` whose search_path is ``schema``, once
    ``migrate_with`` has brought ``what`` ("the conversation store") there up to date. A failure
    is an operator's one-line reason (:func:`connect_error`, or a StorageError for a failed
    migration; ``explain_privileges``: a refused CREATE says which grant is missing); the pool is
    closed then."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S, server_settings={"search_path": f'"{schema}"'})
    except Exception as exc:  # noqa: BLE001 - every way of failing to connect gets its one-line reason
        raise connect_error(exc, dsn, source) from exc
    try:
        async with pool.acquire() as conn:
            await migrate_with(conn)
    except BaseException as exc:
        await pool.close()
        if isinstance(exc, LOST):
            raise connect_error(exc, dsn, source) from exc
        at = where(dsn)
        if explain_privileges and isinstance(exc, asyncpg.InsufficientPrivilegeError):
            raise StorageError(
                f"PostgreSQL at {at}: cannot create or migrate {what} in schema "
                f"{schema!r} ({exc}); let this role create it (GRANT CREATE ON DATABASE, or create the schema "
                "owned by it), or start once with a role that may, then this one runs on it") from exc
        if isinstance(exc, asyncpg.PostgresError):
            raise StorageError(f"PostgreSQL at {at}: migrating {what} in schema "
                               f"{schema!r} failed, so nothing of it was changed: {exc}") from exc
        raise
    return pool


def _ts(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _dt(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _json(value: object) -> str:
    return json.dumps(value, default=str)


def _count(status: str) -> int:
    """The row count of a command status ('UPDATE 1', 'DELETE 3', 'INSERT 0 1')."""
    return int(status.rsplit(" ", 1)[-1])


def _conversation(row: Row) -> Conversation:
    return Conversation(row["id"], row["channel"], row["customer_id"], row["status"], _dt(row["started_at"]),  # type: ignore[arg-type]
                        json.loads(row["attributes"]), row["satisfaction"], row["assigned_agent"])


def _turn(row: Row) -> Turn:
    esc = json.loads(row["escalation"]) if row["escalation"] else None
    return Turn(
        conversation_id=row["conversation_id"], seq=row["seq"], role=row["role"], text=row["text"],
        at=_dt(row["at"]), action=row["action"], confidence=row["confidence"],  # type: ignore[arg-type]
        sources=tuple(Source(**s) for s in json.loads(row["sources"])), kb_version=row["kb_version"],
        resolved_query=row["resolved_query"], escalation=Escalation(**esc) if esc else None,
        author=row["author"], feedback=row["feedback"], meta=json.loads(row["meta"]),
    )


def _inbox_item(row: Row, new: bool = False) -> InboxItem:
    message = IncomingMessage(row["conversation_id"], row["text"], row["channel"], row["customer_id"],
                              json.loads(row["attributes"]), _dt(row["received_at"]))
    return InboxItem(message, row["message_id"], json.loads(row["meta"]), row["id"], row["state"], row["reply_seq"],
                     new)


def _handoff(row: Row) -> Handoff:
    return Handoff(row["id"], row["conversation_id"], row["reason"], row["rule"], row["detail"], row["summary"],
                   row["channel"], row["customer_id"], _dt(row["created_at"]), row["status"], row["agent"],  # type: ignore[arg-type]
                   _dt(row["closed_at"]), _dt(row["assigned_at"]))


def _canned(row: Row) -> CannedReply:
    return CannedReply(row["id"], row["shortcut"], row["text"], row["author"], _dt(row["updated_at"]))  # type: ignore[arg-type]


class PostgresConversationStore:
    """The conversation store in PostgreSQL schema ``schema`` of the database ``dsn`` names
    (``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``), over a pool of up to ``pool_size``
    connections."""

    def __init__(self, dsn: str, *, schema: str = "botkit", pool_size: int = 10, source: str = "BOTKIT_DATABASE_URL"):
        if not SCHEMA_NAME.match(schema):
            raise StorageError(f"storage.schema: {schema!r} is not a PostgreSQL schema name botkit uses "
                               "(lower-case letters, digits and _, at most 63, not starting with a digit)")
        self._dsn = dsn
        self.source = source  # where the DSN came from (an environment variable), named in errors
        self.schema = schema
        self.where = where(dsn)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresConversationStore({self.where}, schema={self.schema!r})"

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = await open_pool(self._dsn, self.schema, pool_size=self.pool_size, source=self.source,
                                     what="the conversation store",
                                     migrate_with=lambda conn: migrate(conn, self.schema), explain_privileges=True)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresConversationStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _lost(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"lost the connection to PostgreSQL at {self.where} ({type(exc).__name__}: {exc}); "
                                   "nothing of this operation was stored; it can be tried again once the server is "
                                   "back")

    async def _call(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, tx: bool, retry: bool) -> T:
        if self._pool is None:
            raise StoreError("the conversation store is not started; use `async with` or call start()")
        for attempt in (1, 2):
            began = False  # whether any of fn's statements may have reached the server
            try:
                async with self._pool.acquire() as conn:
                    if not tx:
                        began = True
                        return await fn(conn)
                    async with conn.transaction():
                        began = True
                        return await fn(conn)
            except LOST as exc:
                # lost before BEGIN was answered: nothing was sent, so trying again is always safe
                if (began and not retry) or attempt == 2:
                    raise self._lost(exc) from exc
        raise AssertionError("unreachable")

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """A read (or a single-statement write that is refused when repeated): tried again once on
        a fresh connection when the connection was lost."""
        return await self._call(fn, tx=False, retry=True)

    async def _tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, retry: bool = False) -> T:
        """One transaction; ``retry``: it is idempotent, so it is tried again once on a lost connection."""
        return await self._call(fn, tx=True, retry=retry)

    # -- conversations -----------------------------------------------------------------------
    async def get_or_create(self, conversation_id: str, channel: str, customer_id: str,
                            attributes: dict[str, object], now: datetime) -> Conversation:
        async def op(db: asyncpg.Connection) -> Conversation:
            await db.execute("INSERT INTO conversations (id, channel, customer_id, status, started_at, attributes) "
                             "VALUES ($1,$2,$3,'bot',$4,$5) ON CONFLICT (id) DO NOTHING",
                             conversation_id, channel, customer_id, _ts(now), _json(attributes))
            row = await db.fetchrow("SELECT * FROM conversations WHERE id=$1 FOR UPDATE", conversation_id)
            stored = json.loads(row["attributes"])
            if attributes and stored != {**stored, **attributes}:
                row = await db.fetchrow("UPDATE conversations SET attributes=$1 WHERE id=$2 RETURNING *",
                                        _json({**stored, **attributes}), conversation_id)
            return _conversation(row)

        return await self._tx(op, retry=True)

    async def get(self, conversation_id: str) -> Conversation | None:
        async def op(db: asyncpg.Connection) -> Conversation | None:
            row = await db.fetchrow("SELECT * FROM conversations WHERE id=$1", conversation_id)
            return _conversation(row) if row else None

        return await self._run(op)

    async def conversations(self, limit: int = 100) -> list[Conversation]:
        async def op(db: asyncpg.Connection) -> list[Conversation]:
            rows = await db.fetch("SELECT * FROM conversations ORDER BY started_at DESC LIMIT $1", limit)
            return [_conversation(r) for r in rows]

        return await self._run(op)

    async def turns(self, conversation_id: str, limit: int | None = None,
                    before: int | None = None) -> list[Turn]:
        """Turns oldest first: all of them, or the last ``limit`` (before turn ``before``, if given)."""
        bound = "" if before is None else " AND seq < $2"
        args: list[object] = [conversation_id] + ([] if before is None else [before])

        async def op(db: asyncpg.Connection) -> list[Turn]:
            if limit is None:
                rows = await db.fetch(f"SELECT * FROM turns WHERE conversation_id=$1{bound} ORDER BY seq", *args)
            else:
                rows = await db.fetch(f"SELECT * FROM (SELECT * FROM turns WHERE conversation_id=$1{bound} "
                                      f"ORDER BY seq DESC LIMIT ${len(args) + 1}) t ORDER BY seq", *args, limit)
            return [_turn(r) for r in rows]

        return await self._run(op)

    async def turn(self, conversation_id: str, seq: int) -> Turn | None:
        async def op(db: asyncpg.Connection) -> Turn | None:
            row = await db.fetchrow("SELECT * FROM turns WHERE conversation_id=$1 AND seq=$2", conversation_id, seq)
            return _turn(row) if row else None

        return await self._run(op)

    async def window(self, conversation_id: str, limit: int) -> HistoryWindow:
        """The last ``limit`` turns, the next seq, and the count and first of the customer turns before them."""

        async def op(db: asyncpg.Connection) -> HistoryWindow:
            rows = await db.fetch("SELECT * FROM (SELECT * FROM turns WHERE conversation_id=$1 ORDER BY seq DESC "
                                  "LIMIT $2) t ORDER BY seq", conversation_id, limit)
            turns = tuple(_turn(r) for r in rows)
            next_seq = (turns[-1].seq if turns else 0) + 1
            if not turns or turns[0].seq == 1:
                return HistoryWindow(turns, next_seq)
            start = turns[0].seq
            earlier = await db.fetchval("SELECT count(*) FROM turns WHERE conversation_id=$1 AND seq<$2 "
                                        "AND role='customer'", conversation_id, start)
            first = await db.fetchrow("SELECT * FROM turns WHERE conversation_id=$1 AND seq<$2 AND role='customer' "
                                      "ORDER BY seq LIMIT 1", conversation_id, start)
            return HistoryWindow(turns, next_seq, int(earlier), _turn(first) if first else None)

        return await self._run(op)

    async def next_seq(self, conversation_id: str) -> int:
        async def op(db: asyncpg.Connection) -> int:
            value = await db.fetchval("SELECT max(seq) FROM turns WHERE conversation_id=$1", conversation_id)
            return int(value or 0) + 1

        return await self._run(op)

    async def record(self, turns: Sequence[Turn], *, status: Status | None = None,
                     handoff: Handoff | None = None, answers: InboxItem | None = None) -> Handoff | None:
        """Store turns, a status change and a new hand-off together, or none of them. ``answers``:
        the accepted message these turns answer, marked answered in the same transaction (a
        message answered already raises ConflictError and nothing is stored)."""

        async def op(db: asyncpg.Connection) -> Handoff | None:
            if answers is not None:
                bot = next((t.seq for t in turns if t.role == "bot"), None)
                done = await db.execute("UPDATE inbox SET state='answered', reply_seq=$1 WHERE conversation_id=$2 "
                                        "AND message_id=$3 AND state='pending'",
                                        bot, answers.conversation_id, answers.message_id)
                if _count(done) != 1:
                    raise ConflictError(f"message {answers.message_id!r} of conversation {answers.conversation_id!r} "
                                        "is answered already, or was never accepted")
            try:
                await db.executemany(
                    "INSERT INTO turns (conversation_id, seq, role, text, at, action, confidence, sources, kb_version, "
                    "resolved_query, escalation, author, feedback, meta) "
                    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                    [(t.conversation_id, t.seq, t.role, t.text, _ts(t.at), t.action, t.confidence,
                      json.dumps([s.__dict__ for s in t.sources]), t.kb_version, t.resolved_query,
                      json.dumps(t.escalation.__dict__) if t.escalation else None, t.author, t.feedback,
                      _json(dict(t.meta))) for t in turns])
            except asyncpg.UniqueViolationError as exc:
                seqs = [t.seq for t in turns]
                raise StoreError(f"a turn of conversation {turns[0].conversation_id!r} with one of the numbers {seqs} "
                                 "exists already; nothing of this exchange was stored") from exc
            conversation_id = turns[0].conversation_id if turns else (handoff.conversation_id if handoff else None)
            if status is not None and conversation_id is not None:
                await db.execute("UPDATE conversations SET status=$1, assigned_agent=CASE WHEN $1='bot' THEN NULL "
                                 "ELSE assigned_agent END WHERE id=$2", status, conversation_id)
            if handoff is None:
                return None
            row = await db.fetchrow(
                "INSERT INTO handoffs (conversation_id, reason, rule, detail, summary, channel, customer_id, "
                "created_at, status) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'waiting') RETURNING *",
                handoff.conversation_id, handoff.reason, handoff.rule, handoff.detail, handoff.summary,
                handoff.channel, handoff.customer_id, _ts(handoff.created_at))
            return _handoff(row)

        return await self._tx(op)

    # -- the inbox: accepted customer messages ----------------------------------------------
    async def accept(self, item: InboxItem) -> InboxItem:
        """Store an accepted message (committed when this returns). An id accepted before is not
        stored again: the stored item comes back with ``new=False``."""
        m = item.message
        if m.at is None:
            raise ValueError("an accepted message needs its time (IncomingMessage.at)")
        received_at = _ts(m.at)

        async def op(db: asyncpg.Connection) -> InboxItem:
            row = await db.fetchrow(
                "INSERT INTO inbox (conversation_id, message_id, channel, customer_id, text, attributes, received_at, "
                "meta) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (conversation_id, message_id) DO NOTHING "
                "RETURNING *", m.conversation_id, item.message_id, m.channel, m.customer_id, m.text,
                _json(dict(m.attributes)), received_at, _json(dict(item.meta)))
            if row is not None:
                return _inbox_item(row, new=True)
            row = await db.fetchrow("SELECT * FROM inbox WHERE conversation_id=$1 AND message_id=$2",
                                    m.conversation_id, item.message_id)
            return _inbox_item(row)

        # idempotent: a retry after a lost connection finds the message stored (new=False), never twice
        return await self._tx(op, retry=True)

    async def inbox_item(self, conversation_id: str, message_id: str) -> InboxItem | None:
        async def op(db: asyncpg.Connection) -> InboxItem | None:
            row = await db.fetchrow("SELECT * FROM inbox WHERE conversation_id=$1 AND message_id=$2",
                                    conversation_id, message_id)
            return _inbox_item(row) if row else None

        return await self._run(op)

    async def pending(self, *, channel: str | None = None, conversation_id: str | None = None,
                      states: Sequence[InboxState] = ("pending",)) -> list[InboxItem]:
        """Accepted messages in ``states`` (default: not answered yet), in arrival order."""
        where_ = ["state = ANY($1::text[])"]
        args: list[object] = [list(states)]
        if channel is not None:
            args.append(channel)
            where_.append(f"channel=${len(args)}")
        if conversation_id is not None:
            args.append(conversation_id)
            where_.append(f"conversation_id=${len(args)}")

        async def op(db: asyncpg.Connection) -> list[InboxItem]:
            rows = await db.fetch(f"SELECT * FROM inbox WHERE {' AND '.join(where_)} ORDER BY id", *args)
            return [_inbox_item(r) for r in rows]

        return await self._run(op)

    async def mark_delivered(self, conversation_id: str, message_id: str, *, undeliverable: bool = False) -> None:
        """The channel sent the answer of an answered message, or (``undeliverable``) refused it for good."""
        state = "undeliverable" if undeliverable else "delivered"

        async def op(db: asyncpg.Connection) -> None:
            done = await db.execute("UPDATE inbox SET state=$1 WHERE conversation_id=$2 AND message_id=$3 "
                                    "AND state='answered'", state, conversation_id, message_id)
            if _count(done) != 1:
                raise StoreError(f"message {message_id!r} of conversation {conversation_id!r} is not answered")

        await self._tx(op)

    async def prune_inbox(self, before: datetime) -> int:
        """Forget inbox entries received before ``before`` that are no longer waiting for an
        answer; returns how many. A message still pending is never dropped, however old."""

        async def op(db: asyncpg.Connection) -> int:
            return _count(await db.execute("DELETE FROM inbox WHERE state != 'pending' AND received_at < $1",
                                           _ts(before)))

        return await self._tx(op)

    # -- hand-offs ---------------------------------------------------------------------------
    async def handoffs(self, status: str | None = None) -> list[Handoff]:
        async def op(db: asyncpg.Connection) -> list[Handoff]:
            if status is None:
                rows = await db.fetch("SELECT * FROM handoffs ORDER BY id")
            else:
                rows = await db.fetch("SELECT * FROM handoffs WHERE status=$1 ORDER BY id", status)
            return [_handoff(r) for r in rows]

        return await self._run(op)

    async def handoff_for(self, conversation_id: str) -> Handoff | None:
        """The open (waiting or assigned) hand-off of a conversation, if any."""

        async def op(db: asyncpg.Connection) -> Handoff | None:
            row = await db.fetchrow("SELECT * FROM handoffs WHERE conversation_id=$1 AND status IN "
                                    "('waiting','assigned') ORDER BY id DESC LIMIT 1", conversation_id)
            return _handoff(row) if row else None

        return await self._run(op)

    async def assign(self, conversation_id: str, agent: str, now: datetime) -> Handoff:
        """Give a waiting conversation to an agent. Exactly one of two racing agents wins."""

        async def op(db: asyncpg.Connection) -> Handoff:
            row = await db.fetchrow("UPDATE handoffs SET status='assigned', agent=$1, assigned_at=$2 "
                                    "WHERE conversation_id=$3 AND status='waiting' RETURNING *",
                                    agent, _ts(now), conversation_id)
            if row is None:
                last = await db.fetchrow("SELECT agent, status FROM handoffs WHERE conversation_id=$1 "
                                         "ORDER BY id DESC LIMIT 1", conversation_id)
                if last is None:
                    raise StoreError(f"conversation {conversation_id!r} has no hand-off to take")
                raise ConflictError(f"conversation {conversation_id!r} is {last['status']}"
                                    + (f" (agent {last['agent']})" if last["agent"] else ""))
            await db.execute("UPDATE conversations SET assigned_agent=$1 WHERE id=$2", agent, conversation_id)
            return _handoff(row)

        return await self._tx(op)

    async def release(self, conversation_id: str, agent: str, outcome: str, now: datetime) -> Handoff:
        """End an agent's hand-off: ``returned`` (to the bot) or ``closed``."""
        if outcome not in ("returned", "closed"):
            raise ValueError(f"outcome must be 'returned' or 'closed', not {outcome!r}")

        async def op(db: asyncpg.Connection) -> Handoff:
            row = await db.fetchrow("SELECT * FROM handoffs WHERE conversation_id=$1 AND status IN "
                                    "('waiting','assigned') ORDER BY id DESC LIMIT 1 FOR UPDATE", conversation_id)
            if row is None:
                raise ConflictError(f"conversation {conversation_id!r} is not handed off")
            if row["status"] == "assigned" and row["agent"] != agent:
                raise ConflictError(f"conversation {conversation_id!r} belongs to agent {row['agent']}, not {agent}")
            done = await db.fetchrow("UPDATE handoffs SET status=$1, agent=$2, closed_at=$3 WHERE id=$4 RETURNING *",
                                     outcome, agent, _ts(now), row["id"])
            await db.execute("UPDATE conversations SET status=$1, assigned_agent=NULL WHERE id=$2",
                             "bot" if outcome == "returned" else "closed", conversation_id)
            return _handoff(done)

        return await self._tx(op)

    async def reassign(self, conversation_id: str, from_agent: str, to_agent: str, now: datetime) -> Handoff:
        async def op(db: asyncpg.Connection) -> Handoff:
            row = await db.fetchrow("UPDATE handoffs SET agent=$1 WHERE conversation_id=$2 AND status='assigned' "
                                    "AND agent=$3 RETURNING *", to_agent, conversation_id, from_agent)
            if row is None:
                raise ConflictError(f"conversation {conversation_id!r} is not assigned to {from_agent}")
            await db.execute("UPDATE conversations SET assigned_agent=$1 WHERE id=$2", to_agent, conversation_id)
            return _handoff(row)

        return await self._tx(op)

    async def recent_pickups(self, limit: int) -> list[Handoff]:
        async def op(db: asyncpg.Connection) -> list[Handoff]:
            rows = await db.fetch("SELECT * FROM handoffs WHERE assigned_at IS NOT NULL ORDER BY assigned_at DESC, "
                                  "id DESC LIMIT $1", max(0, limit))
            return [_handoff(r) for r in rows]

        return await self._run(op)

    # -- labels, search, canned replies -------------------------------------------------------
    async def labels(self, conversation_id: str) -> list[str]:
        async def op(db: asyncpg.Connection) -> list[str]:
            return [r[0] for r in await db.fetch("SELECT label FROM conversation_labels WHERE conversation_id=$1 "
                                                 "ORDER BY lower(label)", conversation_id)]

        return await self._run(op)

    async def set_labels(self, conversation_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        async def op(db: asyncpg.Connection) -> list[str]:
            if await db.fetchval("SELECT 1 FROM conversations WHERE id=$1", conversation_id) is None:
                raise StoreError(f"no conversation {conversation_id!r}")
            if remove:
                await db.execute("DELETE FROM conversation_labels WHERE conversation_id=$1 AND "
                                 "lower(label) = ANY(SELECT lower(x) FROM unnest($2::text[]) x)",
                                 conversation_id, list(remove))
            for label in add:
                await db.execute("INSERT INTO conversation_labels (conversation_id, label) VALUES ($1,$2) "
                                 "ON CONFLICT DO NOTHING", conversation_id, label)
            return [r[0] for r in await db.fetch("SELECT label FROM conversation_labels WHERE conversation_id=$1 "
                                                 "ORDER BY lower(label)", conversation_id)]

        return await self._tx(op)

    async def search(self, text: str = "", *, label: str | None = None, limit: int = 20,
                     offset: int = 0) -> list[Conversation]:
        where_: list[str] = []
        args: list[object] = []
        if text:
            args.append(like_pattern(text))
            # jsonb's text form writes "José" as it is (no \u escapes): one pattern for all four
            where_.append("(c.id ILIKE $1 ESCAPE '\\' OR c.customer_id ILIKE $1 ESCAPE '\\' "
                          "OR c.attributes::text ILIKE $1 ESCAPE '\\' OR EXISTS (SELECT 1 FROM turns t WHERE "
                          "t.conversation_id=c.id AND t.role IN ('customer','bot','agent') "
                          "AND t.text ILIKE $1 ESCAPE '\\'))")
        if label:
            args.append(label)
            where_.append(f"EXISTS (SELECT 1 FROM conversation_labels l WHERE l.conversation_id=c.id "
                          f"AND lower(l.label)=lower(${len(args)}))")
        n = len(args)
        sql = ("SELECT c.* FROM conversations c" + (" WHERE " + " AND ".join(where_) if where_ else "")
               + f" ORDER BY c.started_at DESC, c.id LIMIT ${n + 1} OFFSET ${n + 2}")

        async def op(db: asyncpg.Connection) -> list[Conversation]:
            return [_conversation(r) for r in await db.fetch(sql, *args, max(0, limit), max(0, offset))]

        return await self._run(op)

    async def canned_replies(self) -> list[CannedReply]:
        async def op(db: asyncpg.Connection) -> list[CannedReply]:
            return [_canned(r) for r in await db.fetch("SELECT * FROM canned_replies ORDER BY lower(shortcut)")]

        return await self._run(op)

    async def save_canned_reply(self, shortcut: str, text: str, author: str, now: datetime,
                                reply_id: int | None = None) -> CannedReply:
        async def op(db: asyncpg.Connection) -> CannedReply:
            taken = await db.fetchval("SELECT id FROM canned_replies WHERE lower(shortcut)=lower($1)", shortcut)
            if taken is not None and taken != reply_id:
                raise ConflictError(f"a canned reply with the shortcut {shortcut!r} exists already")
            try:
                if reply_id is None:
                    row = await db.fetchrow("INSERT INTO canned_replies (shortcut, text, author, updated_at) "
                                            "VALUES ($1,$2,$3,$4) RETURNING *", shortcut, text, author, _ts(now))
                else:
                    row = await db.fetchrow("UPDATE canned_replies SET shortcut=$1, text=$2, author=$3, updated_at=$4 "
                                            "WHERE id=$5 RETURNING *", shortcut, text, author, _ts(now), reply_id)
                    if row is None:
                        raise StoreError(f"no canned reply {reply_id}")
            except asyncpg.UniqueViolationError as exc:  # another agent saved the same shortcut just now
                raise ConflictError(f"a canned reply with the shortcut {shortcut!r} exists already") from exc
            return _canned(row)

        return await self._tx(op)

    async def delete_canned_reply(self, reply_id: int) -> None:
        async def op(db: asyncpg.Connection) -> None:
            if _count(await db.execute("DELETE FROM canned_replies WHERE id=$1", reply_id)) != 1:
                raise StoreError(f"no canned reply {reply_id}")

        await self._tx(op)

    # -- feedback ----------------------------------------------------------------------------
    async def set_feedback(self, conversation_id: str, seq: int, value: int) -> None:
        if value not in (-1, 0, 1):
            raise ValueError("feedback is +1 (thumbs up), -1 (thumbs down) or 0 (none)")

        async def op(db: asyncpg.Connection) -> None:
            done = await db.execute("UPDATE turns SET feedback=$1 WHERE conversation_id=$2 AND seq=$3 AND role='bot'",
                                    value, conversation_id, seq)
            if _count(done) != 1:
                raise StoreError(f"conversation {conversation_id!r} has no bot reply number {seq}")

        await self._run(op)  # setting the same value again is harmless: retried once on a lost connection

    async def set_satisfaction(self, conversation_id: str, score: int) -> None:
        if not 1 <= score <= 5:
            raise ValueError(f"satisfaction is a score from 1 to 5, not {score}")

        async def op(db: asyncpg.Connection) -> None:
            done = await db.execute("UPDATE conversations SET satisfaction=$1 WHERE id=$2", score, conversation_id)
            if _count(done) != 1:
                raise StoreError(f"no conversation {conversation_id!r}")

        await self._run(op)

    async def stats(self) -> dict[str, Any]:
        async def op(db: asyncpg.Connection) -> dict[str, Any]:
            row = await db.fetchrow("SELECT (SELECT count(*) FROM conversations) AS conversations, "
                                    "(SELECT count(*) FROM turns) AS turns, "
                                    "(SELECT count(*) FROM handoffs WHERE status='waiting') AS handoffs_waiting")
            return {k: int(row[k]) for k in ("conversations", "turns", "handoffs_waiting")}

        return await self._run(op)

    # -- export ------------------------------------------------------------------------------
    async def stored_conversations(self, *, batch: int = 200) -> AsyncIterator[StoredConversation]:
        """Every conversation, oldest first (started_at, then id), with its turns and hand-offs,
        read ``batch`` conversations at a time, so a large store is never held in memory whole."""
        after: tuple[datetime, str] | None = None

        async def page(db: asyncpg.Connection) -> list[StoredConversation]:
            if after is None:
                rows = await db.fetch("SELECT * FROM conversations ORDER BY started_at, id LIMIT $1", batch)
            else:
                rows = await db.fetch("SELECT * FROM conversations WHERE (started_at, id) > ($1, $2) "
                                      "ORDER BY started_at, id LIMIT $3", *after, batch)
            ids = [r["id"] for r in rows]
            turns: dict[str, list[Turn]] = {i: [] for i in ids}
            handoffs: dict[str, list[Handoff]] = {i: [] for i in ids}
            if ids:
                for row in await db.fetch("SELECT * FROM turns WHERE conversation_id = ANY($1::text[]) "
                                          "ORDER BY conversation_id, seq", ids):
                    turns[row["conversation_id"]].append(_turn(row))
                for row in await db.fetch("SELECT * FROM handoffs WHERE conversation_id = ANY($1::text[]) "
                                          "ORDER BY id", ids):
                    handoffs[row["conversation_id"]].append(_handoff(row))
            return [StoredConversation(_conversation(r), tuple(turns[r["id"]]), tuple(handoffs[r["id"]]))
                    for r in rows]

        while True:
            records = await self._run(page)
            for record in records:
                yield record
            if len(records) < batch:
                return
            last = records[-1].conversation
            after = (_ts(last.started_at), last.id)


__all__ = ["LOST", "MIGRATIONS", "PostgresConversationStore", "SchemaTooNew", "connect_error", "migrate", "open_pool",
           "schema_version", "where"]
