"""Conversation storage: conversations, turns, hand-offs and feedback.

:class:`ConversationStore` is the seam (botkit/backends/postgres.py implements it on PostgreSQL);
:class:`SQLiteConversationStore` is the default. SQLite work runs in a thread so the event
loop never waits on the disk, and one exchange (the customer's turn, the bot's reply, a
hand-off and the status change) is written in one transaction: never half of it.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from botkit.errors import BotkitError
from botkit.sqlite import AsyncSQLite
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


class StoreError(BotkitError):
    """A conversation-store operation failed or was refused."""


class ConflictError(StoreError):
    """The operation lost a race (e.g. another agent took the conversation first)."""


@dataclass(frozen=True)
class StoredConversation:
    """One conversation with everything stored about it: what exports and training read."""

    conversation: Conversation
    turns: tuple[Turn, ...]  # by seq
    handoffs: tuple[Handoff, ...]  # oldest first, closed and returned ones too


MAX_LABEL_CHARS = 40
MAX_SEARCH_CHARS = 200


@dataclass(frozen=True)
class CannedReply:
    """A saved answer agents insert into the reply box; ``text`` may hold placeholders
    (``{customer_name}``, ``{agent_name}``), filled in by the console."""

    id: int
    shortcut: str  # what an agent types after "/" to find it
    text: str
    author: str
    updated_at: datetime


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its ``%``, ``_`` and ``\\`` taken literally (ESCAPE '\\')."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class ConversationStore(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def get_or_create(self, conversation_id: str, channel: str, customer_id: str,
                            attributes: dict[str, object], now: datetime) -> Conversation: ...
    async def get(self, conversation_id: str) -> Conversation | None: ...
    async def turns(self, conversation_id: str, limit: int | None = None,
                    before: int | None = None) -> list[Turn]: ...
    async def turn(self, conversation_id: str, seq: int) -> Turn | None: ...
    async def window(self, conversation_id: str, limit: int) -> HistoryWindow: ...
    async def record(self, turns: Sequence[Turn], *, status: Status | None = None,
                     handoff: Handoff | None = None, answers: InboxItem | None = None) -> Handoff | None: ...
    async def accept(self, item: InboxItem) -> InboxItem: ...
    async def inbox_item(self, conversation_id: str, message_id: str) -> InboxItem | None: ...
    async def pending(self, *, channel: str | None = None, conversation_id: str | None = None,
                      states: Sequence[InboxState] = ("pending",)) -> list[InboxItem]: ...
    async def mark_delivered(self, conversation_id: str, message_id: str, *, undeliverable: bool = False) -> None: ...
    async def prune_inbox(self, before: datetime) -> int: ...
    async def handoffs(self, status: str | None = None) -> list[Handoff]: ...
    async def handoff_for(self, conversation_id: str) -> Handoff | None: ...
    async def assign(self, conversation_id: str, agent: str, now: datetime) -> Handoff: ...
    async def release(self, conversation_id: str, agent: str, outcome: str, now: datetime) -> Handoff: ...
    async def reassign(self, conversation_id: str, from_agent: str, to_agent: str, now: datetime) -> Handoff:
        """Hand an assigned conversation from its agent to another (ConflictError if it is not ``from_agent``'s)."""
        ...
    async def recent_pickups(self, limit: int) -> list[Handoff]:
        """The last ``limit`` hand-offs an agent picked up (``assigned_at`` set), newest pick-up first."""
        ...
    async def labels(self, conversation_id: str) -> list[str]: ...
    async def set_labels(self, conversation_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        """Add and remove labels of a conversation; returns its labels, sorted (StoreError: no conversation)."""
        ...
    async def search(self, text: str = "", *, label: str | None = None, limit: int = 20,
                     offset: int = 0) -> list[Conversation]:
        """Conversations (newest first) whose turns, id, customer or attributes contain ``text``
        (case-insensitive, taken literally) and that carry ``label``, one page."""
        ...
    async def canned_replies(self) -> list[CannedReply]: ...
    async def save_canned_reply(self, shortcut: str, text: str, author: str, now: datetime,
                                reply_id: int | None = None) -> CannedReply:
        """Create (``reply_id`` None) or update one; ConflictError when the shortcut is taken, StoreError when
        ``reply_id`` does not exist."""
        ...
    async def delete_canned_reply(self, reply_id: int) -> None: ...
    async def set_feedback(self, conversation_id: str, seq: int, value: int) -> None: ...
    async def set_satisfaction(self, conversation_id: str, score: int) -> None: ...
    async def stats(self) -> dict[str, Any]:
        """Counts for /healthz and /metrics: ``conversations``, ``turns``, ``handoffs_waiting``."""
        ...
    def stored_conversations(self) -> AsyncIterator[StoredConversation]:
        """Every conversation, oldest first (started_at, then id), with its turns and hand-offs;
        open ones too (its status and hand-offs say whether it is finished)."""
        ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, channel TEXT NOT NULL, customer_id TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT NOT NULL, attributes TEXT NOT NULL, satisfaction INTEGER, assigned_agent TEXT);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    at TEXT NOT NULL, action TEXT NOT NULL, confidence REAL, sources TEXT NOT NULL, kb_version INTEGER,
    resolved_query TEXT NOT NULL, escalation TEXT, author TEXT NOT NULL, feedback INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL, PRIMARY KEY (conversation_id, seq));
CREATE TABLE IF NOT EXISTS handoffs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL, reason TEXT NOT NULL,
    rule TEXT NOT NULL, detail TEXT NOT NULL, summary TEXT NOT NULL, channel TEXT NOT NULL,
    customer_id TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL, agent TEXT, closed_at TEXT);
CREATE INDEX IF NOT EXISTS handoffs_by_conversation ON handoffs (conversation_id, status);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL, message_id TEXT NOT NULL,
    channel TEXT NOT NULL, customer_id TEXT NOT NULL, text TEXT NOT NULL, attributes TEXT NOT NULL,
    received_at TEXT NOT NULL, meta TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', reply_seq INTEGER,
    UNIQUE (conversation_id, message_id));
CREATE INDEX IF NOT EXISTS inbox_by_state ON inbox (state, channel);
CREATE TABLE IF NOT EXISTS conversation_labels (
    conversation_id TEXT NOT NULL, label TEXT NOT NULL COLLATE NOCASE, PRIMARY KEY (conversation_id, label));
CREATE INDEX IF NOT EXISTS labels_by_label ON conversation_labels (label);
CREATE TABLE IF NOT EXISTS canned_replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT, shortcut TEXT NOT NULL UNIQUE COLLATE NOCASE, text TEXT NOT NULL,
    author TEXT NOT NULL, updated_at TEXT NOT NULL);
"""

# Columns added after the first release: (table, column, definition), added to older files on start.
MIGRATIONS = (("handoffs", "assigned_at", "TEXT"),)


def _migrate(db: sqlite3.Connection) -> None:
    for table, column, definition in MIGRATIONS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(row["id"], row["channel"], row["customer_id"], row["status"], _dt(row["started_at"]),  # type: ignore[arg-type]
                        json.loads(row["attributes"]), row["satisfaction"], row["assigned_agent"])


def _turn(row: sqlite3.Row) -> Turn:
    esc = json.loads(row["escalation"]) if row["escalation"] else None
    return Turn(
        conversation_id=row["conversation_id"], seq=row["seq"], role=row["role"], text=row["text"],
        at=_dt(row["at"]), action=row["action"], confidence=row["confidence"],  # type: ignore[arg-type]
        sources=tuple(Source(**s) for s in json.loads(row["sources"])), kb_version=row["kb_version"],
        resolved_query=row["resolved_query"], escalation=Escalation(**esc) if esc else None,
        author=row["author"], feedback=row["feedback"], meta=json.loads(row["meta"]),
    )


def _inbox_item(row: sqlite3.Row, new: bool = False) -> InboxItem:
    message = IncomingMessage(row["conversation_id"], row["text"], row["channel"], row["customer_id"],
                              json.loads(row["attributes"]), _dt(row["received_at"]))
    return InboxItem(message, row["message_id"], json.loads(row["meta"]), row["id"], row["state"], row["reply_seq"],
                     new)


def _handoff(row: sqlite3.Row) -> Handoff:
    return Handoff(row["id"], row["conversation_id"], row["reason"], row["rule"], row["detail"], row["summary"],
                   row["channel"], row["customer_id"], _dt(row["created_at"]), row["status"], row["agent"],  # type: ignore[arg-type]
                   _dt(row["closed_at"]), _dt(row["assigned_at"]) if "assigned_at" in row.keys() else None)


def _canned(row: sqlite3.Row) -> CannedReply:
    return CannedReply(row["id"], row["shortcut"], row["text"], row["author"], _dt(row["updated_at"]))  # type: ignore[arg-type]


class SQLiteConversationStore:
    """The default store: one SQLite file (WAL), operations run in a worker thread.

    ``read_only``: open an existing store file without changing it (no schema, no mode or
    journal change; every write fails), e.g. to read another bot's conversations for training.

    ``group_commit`` (default off; ``storage.sqlite_group_commit`` turns it on): the writes of
    concurrent conversations that arrive while a commit is in progress are committed together,
    one fsync for all of them, each returning only once its own write is committed
    (``botkit.sqlite.AsyncSQLite``); reads run on their own connections, never queued behind a
    commit. Off: one connection under one lock, a commit (and an fsync) per write, as before.
    """

    def __init__(self, path: Path | str, *, read_only: bool = False, group_commit: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._sql = AsyncSQLite(self.path, SCHEMA, what="the conversation store", durable=True, read_only=read_only,
                                group_commit=group_commit)

    async def start(self) -> None:
        await self._sql.start()
        if not self.read_only:
            await self._sql.tx(_migrate)

    async def close(self) -> None:
        await self._sql.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._sql.started:
            raise StoreError("the conversation store is not started; use `async with` or call start()")
        return await self._sql.run(fn)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._sql.started:
            raise StoreError("the conversation store is not started; use `async with` or call start()")
        return await self._sql.tx(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read-only ``fn``: on a read connection with group commit (one snapshot), else as _run."""
        if not self._sql.started:
            raise StoreError("the conversation store is not started; use `async with` or call start()")
        return await self._sql.read(fn)

    # -- conversations -----------------------------------------------------------------------
    async def get_or_create(self, conversation_id: str, channel: str, customer_id: str,
                            attributes: dict[str, object], now: datetime) -> Conversation:
        def op(db: sqlite3.Connection) -> Conversation:
            row = db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO conversations (id, channel, customer_id, status, started_at, attributes) "
                    "VALUES (?,?,?,?,?,?)",
                    (conversation_id, channel, customer_id, "bot", _ts(now), json.dumps(attributes, default=str)),
                )
                row = db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            elif attributes and json.loads(row["attributes"]) != {**json.loads(row["attributes"]), **attributes}:
                merged = {**json.loads(row["attributes"]), **attributes}
                db.execute("UPDATE conversations SET attributes=? WHERE id=?",
                           (json.dumps(merged, default=str), conversation_id))
                row = db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            return _conversation(row)

        def unchanged(db: sqlite3.Connection) -> Conversation | None:
            row = db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            if row is None or (attributes and json.loads(row["attributes"]) != {**json.loads(row["attributes"]),
                                                                                  **attributes}):
                return None
            return _conversation(row)

        # most turns find their conversation as it is: a read, not a place in the writer's queue
        found = await self._read(unchanged)
        return found if found is not None else await self._tx(op)

    async def get(self, conversation_id: str) -> Conversation | None:
        def op(db: sqlite3.Connection) -> Conversation | None:
            row = db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
            return _conversation(row) if row else None

        return await self._read(op)

    async def conversations(self, limit: int = 100) -> list[Conversation]:
        def op(db: sqlite3.Connection) -> list[Conversation]:
            rows = db.execute("SELECT * FROM conversations ORDER BY started_at DESC LIMIT ?", (limit,)).fetchall()
            return [_conversation(r) for r in rows]

        return await self._read(op)

    async def turns(self, conversation_id: str, limit: int | None = None,
                    before: int | None = None) -> list[Turn]:
        """Turns oldest first: all of them, or the last ``limit`` (before turn ``before``, if given)."""

        def op(db: sqlite3.Connection) -> list[Turn]:
            bound = before if before is not None else 2**62
            if limit is None:
                rows = db.execute("SELECT * FROM turns WHERE conversation_id=? AND seq<? ORDER BY seq",
                                  (conversation_id, bound)).fetchall()
            else:
                rows = db.execute("SELECT * FROM (SELECT * FROM turns WHERE conversation_id=? AND seq<? "
                                  "ORDER BY seq DESC LIMIT ?) ORDER BY seq", (conversation_id, bound, limit)).fetchall()
            return [_turn(r) for r in rows]

        return await self._read(op)

    async def turn(self, conversation_id: str, seq: int) -> Turn | None:
        def op(db: sqlite3.Connection) -> Turn | None:
            row = db.execute("SELECT * FROM turns WHERE conversation_id=? AND seq=?", (conversation_id, seq)).fetchone()
            return _turn(row) if row else None

        return await self._read(op)

    async def window(self, conversation_id: str, limit: int) -> HistoryWindow:
        """The last ``limit`` turns, the next seq, and the count and first of the customer turns before them."""

        def op(db: sqlite3.Connection) -> HistoryWindow:
            rows = db.execute("SELECT * FROM (SELECT * FROM turns WHERE conversation_id=? ORDER BY seq DESC LIMIT ?) "
                              "ORDER BY seq", (conversation_id, limit)).fetchall()
            turns = tuple(_turn(r) for r in rows)
            next_seq = (turns[-1].seq if turns else 0) + 1
            if not turns or turns[0].seq == 1:
                return HistoryWindow(turns, next_seq)
            start = turns[0].seq
            earlier = db.execute("SELECT count(*) FROM turns WHERE conversation_id=? AND seq<? AND role='customer'",
                                 (conversation_id, start)).fetchone()[0]
            first = db.execute("SELECT * FROM turns WHERE conversation_id=? AND seq<? AND role='customer' "
                               "ORDER BY seq LIMIT 1", (conversation_id, start)).fetchone()
            return HistoryWindow(turns, next_seq, earlier, _turn(first) if first else None)

        return await self._read(op)

    async def next_seq(self, conversation_id: str) -> int:
        def op(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT max(seq) FROM turns WHERE conversation_id=?", (conversation_id,)).fetchone()
            return (row[0] or 0) + 1

        return await self._read(op)

    async def record(self, turns: Sequence[Turn], *, status: Status | None = None,
                     handoff: Handoff | None = None, answers: InboxItem | None = None) -> Handoff | None:
        """Store turns, a status change and a new hand-off together, or none of them. ``answers``:
        the accepted message these turns answer, marked answered in the same transaction (a
        message answered already raises ConflictError and nothing is stored)."""

        def op(db: sqlite3.Connection) -> Handoff | None:
            if answers is not None:
                bot = next((t.seq for t in turns if t.role == "bot"), None)
                cur = db.execute("UPDATE inbox SET state='answered', reply_seq=? WHERE conversation_id=? "
                                 "AND message_id=? AND state='pending'",
                                 (bot, answers.conversation_id, answers.message_id))
                if cur.rowcount != 1:
                    raise ConflictError(f"message {answers.message_id!r} of conversation {answers.conversation_id!r} "
                                        "is answered already, or was never accepted")
            for t in turns:
                db.execute(
                    "INSERT INTO turns (conversation_id, seq, role, text, at, action, confidence, sources, kb_version, "
                    "resolved_query, escalation, author, feedback, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (t.conversation_id, t.seq, t.role, t.text, _ts(t.at), t.action, t.confidence,
                     json.dumps([s.__dict__ for s in t.sources]), t.kb_version, t.resolved_query,
                     json.dumps(t.escalation.__dict__) if t.escalation else None, t.author, t.feedback,
                     json.dumps(dict(t.meta), default=str)),
                )
            conversation_id = turns[0].conversation_id if turns else (handoff.conversation_id if handoff else None)
            if status is not None and conversation_id is not None:
                db.execute("UPDATE conversations SET status=?, assigned_agent=CASE WHEN ?='bot' THEN NULL "
                           "ELSE assigned_agent END WHERE id=?", (status, status, conversation_id))
            if handoff is None:
                return None
            cur = db.execute(
                "INSERT INTO handoffs (conversation_id, reason, rule, detail, summary, channel, customer_id, "
                "created_at, status) VALUES (?,?,?,?,?,?,?,?,?)",
                (handoff.conversation_id, handoff.reason, handoff.rule, handoff.detail, handoff.summary,
                 handoff.channel, handoff.customer_id, _ts(handoff.created_at), "waiting"),
            )
            return _handoff(db.execute("SELECT * FROM handoffs WHERE id=?", (cur.lastrowid,)).fetchone())

        return await self._tx(op)

    # -- the inbox: accepted customer messages ----------------------------------------------
    async def accept(self, item: InboxItem) -> InboxItem:
        """Store an accepted message (committed when this returns). An id accepted before is not
        stored again: the stored item comes back with ``new=False``."""
        m = item.message
        if m.at is None:
            raise ValueError("an accepted message needs its time (IncomingMessage.at)")
        received_at = _ts(m.at)

        def op(db: sqlite3.Connection) -> InboxItem:
            cur = db.execute(
                "INSERT OR IGNORE INTO inbox (conversation_id, message_id, channel, customer_id, text, attributes, "
                "received_at, meta) VALUES (?,?,?,?,?,?,?,?)",
                (m.conversation_id, item.message_id, m.channel, m.customer_id, m.text,
                 json.dumps(dict(m.attributes), default=str), received_at, json.dumps(dict(item.meta), default=str)))
            row = db.execute("SELECT * FROM inbox WHERE conversation_id=? AND message_id=?",
                             (m.conversation_id, item.message_id)).fetchone()
            return _inbox_item(row, new=cur.rowcount == 1)

        return await self._tx(op)

    async def inbox_item(self, conversation_id: str, message_id: str) -> InboxItem | None:
        def op(db: sqlite3.Connection) -> InboxItem | None:
            row = db.execute("SELECT * FROM inbox WHERE conversation_id=? AND message_id=?",
                             (conversation_id, message_id)).fetchone()
            return _inbox_item(row) if row else None

        return await self._read(op)

    async def pending(self, *, channel: str | None = None, conversation_id: str | None = None,
                      states: Sequence[InboxState] = ("pending",)) -> list[InboxItem]:
        """Accepted messages in ``states`` (default: not answered yet), in arrival order."""
        where = [f"state IN ({','.join('?' * len(states))})"]
        args: list[object] = list(states)
        if channel is not None:
            where.append("channel=?")
            args.append(channel)
        if conversation_id is not None:
            where.append("conversation_id=?")
            args.append(conversation_id)

        def op(db: sqlite3.Connection) -> list[InboxItem]:
            rows = db.execute(f"SELECT * FROM inbox WHERE {' AND '.join(where)} ORDER BY id", args).fetchall()
            return [_inbox_item(r) for r in rows]

        return await self._read(op)

    async def mark_delivered(self, conversation_id: str, message_id: str, *, undeliverable: bool = False) -> None:
        """The channel sent the answer of an answered message (channels that send replies
        themselves), or (``undeliverable``) refused it for good: either way it is not sent again."""
        state = "undeliverable" if undeliverable else "delivered"

        def op(db: sqlite3.Connection) -> None:
            cur = db.execute("UPDATE inbox SET state=? WHERE conversation_id=? AND message_id=? "
                             "AND state='answered'", (state, conversation_id, message_id))
            if cur.rowcount != 1:
                raise StoreError(f"message {message_id!r} of conversation {conversation_id!r} is not answered")

        await self._tx(op)

    async def prune_inbox(self, before: datetime) -> int:
        """Forget inbox entries received before ``before`` that are no longer waiting for an
        answer (their turns stay in the conversation); returns how many. A message still
        pending is never dropped, however old."""

        def op(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM inbox WHERE state != 'pending' AND received_at < ?",
                              (_ts(before),)).rowcount

        return await self._tx(op)

    # -- hand-offs ---------------------------------------------------------------------------
    async def handoffs(self, status: str | None = None) -> list[Handoff]:
        def op(db: sqlite3.Connection) -> list[Handoff]:
            if status is None:
                rows = db.execute("SELECT * FROM handoffs ORDER BY id").fetchall()
            else:
                rows = db.execute("SELECT * FROM handoffs WHERE status=? ORDER BY id", (status,)).fetchall()
            return [_handoff(r) for r in rows]

        return await self._read(op)

    async def handoff_for(self, conversation_id: str) -> Handoff | None:
        """The open (waiting or assigned) hand-off of a conversation, if any."""

        def op(db: sqlite3.Connection) -> Handoff | None:
            row = db.execute("SELECT * FROM handoffs WHERE conversation_id=? AND status IN ('waiting','assigned') "
                             "ORDER BY id DESC LIMIT 1", (conversation_id,)).fetchone()
            return _handoff(row) if row else None

        return await self._read(op)

    async def assign(self, conversation_id: str, agent: str, now: datetime) -> Handoff:
        """Give a waiting conversation to an agent. Exactly one of two racing agents wins."""

        def op(db: sqlite3.Connection) -> Handoff:
            cur = db.execute("UPDATE handoffs SET status='assigned', agent=?, assigned_at=? "
                             "WHERE conversation_id=? AND status='waiting'", (agent, _ts(now), conversation_id))
            if cur.rowcount != 1:
                row = db.execute("SELECT agent, status FROM handoffs WHERE conversation_id=? ORDER BY id DESC LIMIT 1",
                                 (conversation_id,)).fetchone()
                if row is None:
                    raise StoreError(f"conversation {conversation_id!r} has no hand-off to take")
                raise ConflictError(f"conversation {conversation_id!r} is {row['status']}"
                                    + (f" (agent {row['agent']})" if row["agent"] else ""))
            db.execute("UPDATE conversations SET assigned_agent=? WHERE id=?", (agent, conversation_id))
            row = db.execute("SELECT * FROM handoffs WHERE conversation_id=? AND status='assigned' "
                             "ORDER BY id DESC LIMIT 1", (conversation_id,)).fetchone()
            return _handoff(row)

        return await self._tx(op)

    async def release(self, conversation_id: str, agent: str, outcome: str, now: datetime) -> Handoff:
        """End an agent's hand-off: ``returned`` (to the bot) or ``closed``."""
        if outcome not in ("returned", "closed"):
            raise ValueError(f"outcome must be 'returned' or 'closed', not {outcome!r}")

        def op(db: sqlite3.Connection) -> Handoff:
            row = db.execute("SELECT * FROM handoffs WHERE conversation_id=? AND status IN ('waiting','assigned') "
                             "ORDER BY id DESC LIMIT 1", (conversation_id,)).fetchone()
            if row is None:
                raise ConflictError(f"conversation {conversation_id!r} is not handed off")
            if row["status"] == "assigned" and row["agent"] != agent:
                raise ConflictError(f"conversation {conversation_id!r} belongs to agent {row['agent']}, not {agent}")
            db.execute("UPDATE handoffs SET status=?, agent=?, closed_at=? WHERE id=?",
                       (outcome, agent, _ts(now), row["id"]))
            db.execute("UPDATE conversations SET status=?, assigned_agent=NULL WHERE id=?",
                       ("bot" if outcome == "returned" else "closed", conversation_id))
            return _handoff(db.execute("SELECT * FROM handoffs WHERE id=?", (row["id"],)).fetchone())

        return await self._tx(op)

    async def reassign(self, conversation_id: str, from_agent: str, to_agent: str, now: datetime) -> Handoff:
        def op(db: sqlite3.Connection) -> Handoff:
            cur = db.execute("UPDATE handoffs SET agent=? WHERE conversation_id=? AND status='assigned' AND agent=?",
                             (to_agent, conversation_id, from_agent))
            if cur.rowcount != 1:
                raise ConflictError(f"conversation {conversation_id!r} is not assigned to {from_agent}")
            db.execute("UPDATE conversations SET assigned_agent=? WHERE id=?", (to_agent, conversation_id))
            return _handoff(db.execute("SELECT * FROM handoffs WHERE conversation_id=? AND status='assigned' "
                                       "ORDER BY id DESC LIMIT 1", (conversation_id,)).fetchone())

        return await self._tx(op)

    async def recent_pickups(self, limit: int) -> list[Handoff]:
        def op(db: sqlite3.Connection) -> list[Handoff]:
            rows = db.execute("SELECT * FROM handoffs WHERE assigned_at IS NOT NULL ORDER BY assigned_at DESC, id DESC "
                              "LIMIT ?", (max(0, limit),)).fetchall()
            return [_handoff(r) for r in rows]

        return await self._read(op)

    # -- labels, search, canned replies -------------------------------------------------------
    async def labels(self, conversation_id: str) -> list[str]:
        def op(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT label FROM conversation_labels WHERE conversation_id=? "
                                             "ORDER BY label", (conversation_id,))]

        return await self._read(op)

    async def set_labels(self, conversation_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        def op(db: sqlite3.Connection) -> list[str]:
            if db.execute("SELECT 1 FROM conversations WHERE id=?", (conversation_id,)).fetchone() is None:
                raise StoreError(f"no conversation {conversation_id!r}")
            db.executemany("DELETE FROM conversation_labels WHERE conversation_id=? AND label=?",
                           [(conversation_id, x) for x in remove])
            db.executemany("INSERT OR IGNORE INTO conversation_labels (conversation_id, label) VALUES (?,?)",
                           [(conversation_id, x) for x in add])
            return [r[0] for r in db.execute("SELECT label FROM conversation_labels WHERE conversation_id=? "
                                             "ORDER BY label", (conversation_id,))]

        return await self._tx(op)

    async def search(self, text: str = "", *, label: str | None = None, limit: int = 20,
                     offset: int = 0) -> list[Conversation]:
        where: list[str] = []
        args: list[object] = []
        if text:
            pattern = like_pattern(text)
            # attributes are stored as JSON with \\u escapes: "José" is found there as "Jos\\u00e9"
            in_json = like_pattern(json.dumps(text)[1:-1])
            where.append("(c.id LIKE ? ESCAPE '\\' OR c.customer_id LIKE ? ESCAPE '\\' "
                         "OR c.attributes LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM turns t WHERE "
                         "t.conversation_id=c.id AND t.role IN ('customer','bot','agent') "
                         "AND t.text LIKE ? ESCAPE '\\'))")
            args += [pattern, pattern, in_json, pattern]
        if label:
            where.append("EXISTS (SELECT 1 FROM conversation_labels l WHERE l.conversation_id=c.id AND l.label=?)")
            args.append(label)
        sql = ("SELECT c.* FROM conversations c" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY c.started_at DESC, c.id LIMIT ? OFFSET ?")

        def op(db: sqlite3.Connection) -> list[Conversation]:
            return [_conversation(r) for r in db.execute(sql, (*args, max(0, limit), max(0, offset)))]

        return await self._read(op)

    async def canned_replies(self) -> list[CannedReply]:
        def op(db: sqlite3.Connection) -> list[CannedReply]:
            return [_canned(r) for r in db.execute("SELECT * FROM canned_replies ORDER BY shortcut")]

        return await self._read(op)

    async def save_canned_reply(self, shortcut: str, text: str, author: str, now: datetime,
                                reply_id: int | None = None) -> CannedReply:
        def op(db: sqlite3.Connection) -> CannedReply:
            taken = db.execute("SELECT id FROM canned_replies WHERE shortcut=?", (shortcut,)).fetchone()
            if taken is not None and taken[0] != reply_id:
                raise ConflictError(f"a canned reply with the shortcut {shortcut!r} exists already")
            if reply_id is None:
                cur = db.execute("INSERT INTO canned_replies (shortcut, text, author, updated_at) VALUES (?,?,?,?)",
                                 (shortcut, text, author, _ts(now)))
                reply_id_ = cur.lastrowid
            else:
                cur = db.execute("UPDATE canned_replies SET shortcut=?, text=?, author=?, updated_at=? WHERE id=?",
                                 (shortcut, text, author, _ts(now), reply_id))
                if cur.rowcount != 1:
                    raise StoreError(f"no canned reply {reply_id}")
                reply_id_ = reply_id
            return _canned(db.execute("SELECT * FROM canned_replies WHERE id=?", (reply_id_,)).fetchone())

        return await self._tx(op)

    async def delete_canned_reply(self, reply_id: int) -> None:
        def op(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM canned_replies WHERE id=?", (reply_id,)).rowcount != 1:
                raise StoreError(f"no canned reply {reply_id}")

        await self._tx(op)

    # -- feedback ----------------------------------------------------------------------------
    async def set_feedback(self, conversation_id: str, seq: int, value: int) -> None:
        if value not in (-1, 0, 1):
            raise ValueError("feedback is +1 (thumbs up), -1 (thumbs down) or 0 (none)")

        def op(db: sqlite3.Connection) -> None:
            cur = db.execute("UPDATE turns SET feedback=? WHERE conversation_id=? AND seq=? AND role='bot'",
                             (value, conversation_id, seq))
            if cur.rowcount != 1:
                raise StoreError(f"conversation {conversation_id!r} has no bot reply number {seq}")

        await self._tx(op)

    async def set_satisfaction(self, conversation_id: str, score: int) -> None:
        if not 1 <= score <= 5:
            raise ValueError(f"satisfaction is a score from 1 to 5, not {score}")

        def op(db: sqlite3.Connection) -> None:
            cur = db.execute("UPDATE conversations SET satisfaction=? WHERE id=?", (score, conversation_id))
            if cur.rowcount != 1:
                raise StoreError(f"no conversation {conversation_id!r}")

        await self._tx(op)

    async def stats(self) -> dict[str, Any]:
        def op(db: sqlite3.Connection) -> dict[str, Any]:
            return {
                "conversations": db.execute("SELECT count(*) FROM conversations").fetchone()[0],
                "turns": db.execute("SELECT count(*) FROM turns").fetchone()[0],
                "handoffs_waiting": db.execute("SELECT count(*) FROM handoffs WHERE status='waiting'").fetchone()[0],
            }

        return await self._read(op)

    # -- export ------------------------------------------------------------------------------
    async def stored_conversations(self, *, batch: int = 200) -> AsyncIterator[StoredConversation]:
        """Every conversation, oldest first (started_at, then id), with its turns and hand-offs,
        read ``batch`` conversations at a time (one worker-thread call each), so a large store
        is never held in memory whole."""
        after: tuple[str, str] | None = None  # the (started_at, id) key of the last one yielded
        while True:
            page, last = await self._read(functools.partial(_conversation_page, after=after, batch=batch))
            for record in page:
                yield record
            if len(page) < batch or last is None:
                return
            after = last


def _conversation_page(db: sqlite3.Connection, after: tuple[str, str] | None,
                       batch: int) -> tuple[list[StoredConversation], tuple[str, str] | None]:
    """Up to ``batch`` conversations after the ``(started_at, id)`` key ``after``, and the key of the last."""
    if after is None:
        rows = db.execute("SELECT * FROM conversations ORDER BY started_at, id LIMIT ?", (batch,)).fetchall()
    else:
        rows = db.execute("SELECT * FROM conversations WHERE (started_at, id) > (?, ?) ORDER BY started_at, id "
                          "LIMIT ?", (*after, batch)).fetchall()
    if not rows:
        return [], None
    ids = [r["id"] for r in rows]
    marks = ",".join("?" * len(ids))
    turns: dict[str, list[Turn]] = {i: [] for i in ids}
    for row in db.execute(f"SELECT * FROM turns WHERE conversation_id IN ({marks}) ORDER BY conversation_id, seq",
                          ids):
        turns[row["conversation_id"]].append(_turn(row))
    handoffs: dict[str, list[Handoff]] = {i: [] for i in ids}
    for row in db.execute(f"SELECT * FROM handoffs WHERE conversation_id IN ({marks}) ORDER BY id", ids):
        handoffs[row["conversation_id"]].append(_handoff(row))
    page = [StoredConversation(_conversation(r), tuple(turns[r["id"]]), tuple(handoffs[r["id"]])) for r in rows]
    return page, (rows[-1]["started_at"], rows[-1]["id"])
