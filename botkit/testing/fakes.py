"""Fakes of botkit's seams for fast tests: no disk, no models, no network.

- :class:`InMemoryConversationStore`: the whole :class:`~botkit.store.ConversationStore`
  protocol in dictionaries, with the SQLite store's semantics (it passes the same
  :class:`~botkit.testing.ConversationStoreContract`): one ``record`` is applied whole or
  not at all, a message is answered once (:class:`~botkit.store.ConflictError`), one of two
  racing agents wins. Values go through JSON as in SQLite, so what comes back is what a real
  store gives back (a tuple in ``meta`` returns as a list). The data outlive ``close()``:
  a new engine on the same store object is a restart that finds what the last one left.
- :class:`StaticRetriever`: fixed hits per query (a :class:`~botkit.engine.Retriever`).
- :class:`ScriptedResponder`: scripted candidates in order, streamed word by word by
  ``respond_stream`` (a :class:`~botkit.responders.extractive.StreamingResponder`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, AsyncIterator

from botkit.errors import BotkitError
from botkit.store import CannedReply, ConflictError, StoredConversation, StoreError
from botkit.types import (
    Candidate,
    Conversation,
    Escalation,
    Handoff,
    HistoryWindow,
    Hit,
    InboxItem,
    InboxState,
    IncomingMessage,
    ResponderRequest,
    SearchResult,
    Source,
    Status,
    Turn,
)


def _json(value: Mapping[str, object]) -> dict[str, Any]:
    """What SQLite's JSON columns give back for ``value``."""
    return json.loads(json.dumps(dict(value), default=str))


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _stored_turn(t: Turn) -> Turn:
    return replace(t, at=_utc(t.at), meta=_json(t.meta),
                   sources=tuple(Source(**_json(s.__dict__)) for s in t.sources),
                   escalation=Escalation(**_json(t.escalation.__dict__)) if t.escalation else None)


class InMemoryConversationStore:
    """A ConversationStore in memory, with the same semantics as :class:`~botkit.store.SQLiteConversationStore`."""

    def __init__(self) -> None:
        self._started = False
        self._conversations: dict[str, Conversation] = {}
        self._turns: dict[str, dict[int, Turn]] = {}
        self._handoffs: list[Handoff] = []
        self._inbox: dict[tuple[str, str], InboxItem] = {}
        self._next_order = 1
        self._labels: dict[str, set[str]] = {}
        self._canned: dict[int, CannedReply] = {}
        self._next_canned = 1

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        self._started = False

    async def _ready(self) -> None:
        if not self._started:
            raise StoreError("the conversation store is not started; use `async with` or call start()")
        await asyncio.sleep(0)  # a real store yields to the loop on every call; so does this one

    # -- conversations -----------------------------------------------------------------------
    async def get_or_create(self, conversation_id: str, channel: str, customer_id: str,
                            attributes: dict[str, object], now: datetime) -> Conversation:
        await self._ready()
        conv = self._conversations.get(conversation_id)
        if conv is None:
            conv = Conversation(conversation_id, channel, customer_id, "bot", _utc(now), _json(attributes))
        elif attributes:
            conv = replace(conv, attributes={**conv.attributes, **_json(attributes)})
        self._conversations[conversation_id] = conv
        return conv

    async def get(self, conversation_id: str) -> Conversation | None:
        await self._ready()
        return self._conversations.get(conversation_id)

    async def conversations(self, limit: int = 100) -> list[Conversation]:
        await self._ready()
        return sorted(self._conversations.values(), key=lambda c: c.started_at, reverse=True)[:limit]

    def _ordered(self, conversation_id: str) -> list[Turn]:
        turns = self._turns.get(conversation_id, {})
        return [turns[seq] for seq in sorted(turns)]

    async def turns(self, conversation_id: str, limit: int | None = None,
                    before: int | None = None) -> list[Turn]:
        """Turns oldest first: all of them, or the last ``limit`` (before turn ``before``, if given)."""
        await self._ready()
        turns = [t for t in self._ordered(conversation_id) if before is None or t.seq < before]
        return turns if limit is None else turns[max(len(turns) - limit, 0):]

    async def turn(self, conversation_id: str, seq: int) -> Turn | None:
        await self._ready()
        return self._turns.get(conversation_id, {}).get(seq)

    async def window(self, conversation_id: str, limit: int) -> HistoryWindow:
        """The last ``limit`` turns, the next seq, and the count and first of the customer turns before them."""
        await self._ready()
        every = self._ordered(conversation_id)
        turns = tuple(every[max(len(every) - limit, 0):])
        next_seq = (turns[-1].seq if turns else 0) + 1
        if not turns or turns[0].seq == 1:
            return HistoryWindow(turns, next_seq)
        earlier = [t for t in every if t.seq < turns[0].seq and t.role == "customer"]
        return HistoryWindow(turns, next_seq, len(earlier), earlier[0] if earlier else None)

    async def next_seq(self, conversation_id: str) -> int:
        await self._ready()
        return max(self._turns.get(conversation_id, {}), default=0) + 1

    async def record(self, turns: Sequence[Turn], *, status: Status | None = None,
                     handoff: Handoff | None = None, answers: InboxItem | None = None) -> Handoff | None:
        """Store turns, a status change and a new hand-off together, or none of them (every
        check runs before the first change). ``answers``: the accepted message these turns
        answer; one answered already raises ConflictError and nothing is stored."""
        await self._ready()
        answered = self._inbox.get((answers.conversation_id, answers.message_id)) if answers else None
        if answers is not None and (answered is None or answered.state != "pending"):
            raise ConflictError(f"message {answers.message_id!r} of conversation {answers.conversation_id!r} "
                                "is answered already, or was never accepted")
        seen: set[tuple[str, int]] = set()
        for t in turns:
            key = (t.conversation_id, t.seq)
            if key in seen or t.seq in self._turns.get(t.conversation_id, {}):
                raise StoreError(f"turn {t.seq} of conversation {t.conversation_id!r} exists already; "
                                 "nothing was stored")
            seen.add(key)
        # -- nothing below can fail --
        if answered is not None:
            bot = next((t.seq for t in turns if t.role == "bot"), None)
            self._inbox[(answered.conversation_id, answered.message_id)] = replace(answered, state="answered",
                                                                                   reply_seq=bot)
        for t in turns:
            self._turns.setdefault(t.conversation_id, {})[t.seq] = _stored_turn(t)
        conversation_id = turns[0].conversation_id if turns else (handoff.conversation_id if handoff else None)
        conv = self._conversations.get(conversation_id) if conversation_id is not None else None
        if status is not None and conv is not None:
            self._conversations[conv.id] = replace(conv, status=status,
                                                   assigned_agent=None if status == "bot" else conv.assigned_agent)
        if handoff is None:
            return None
        stored = replace(handoff, id=len(self._handoffs) + 1, created_at=_utc(handoff.created_at), status="waiting",
                         agent=None, closed_at=None, assigned_at=None)
        self._handoffs.append(stored)
        return stored

    # -- the inbox: accepted customer messages ----------------------------------------------
    async def accept(self, item: InboxItem) -> InboxItem:
        """Store an accepted message. An id accepted before is not stored again: the stored
        item comes back with ``new=False``."""
        m = item.message
        if m.at is None:
            raise ValueError("an accepted message needs its time (IncomingMessage.at)")
        await self._ready()
        key = (m.conversation_id, item.message_id)
        stored = self._inbox.get(key)
        if stored is not None:
            return replace(stored, new=False)
        message = IncomingMessage(m.conversation_id, m.text, m.channel, m.customer_id, _json(m.attributes), _utc(m.at))
        stored = InboxItem(message, item.message_id, _json(item.meta), self._next_order, "pending", None, False)
        self._next_order += 1
        self._inbox[key] = stored
        return replace(stored, new=True)

    async def inbox_item(self, conversation_id: str, message_id: str) -> InboxItem | None:
        await self._ready()
        return self._inbox.get((conversation_id, message_id))

    async def pending(self, *, channel: str | None = None, conversation_id: str | None = None,
                      states: Sequence[InboxState] = ("pending",)) -> list[InboxItem]:
        """Accepted messages in ``states`` (default: not answered yet), in arrival order."""
        await self._ready()
        return sorted((i for i in self._inbox.values() if i.state in states
                       and (channel is None or i.message.channel == channel)
                       and (conversation_id is None or i.conversation_id == conversation_id)),
                      key=lambda i: i.order)

    async def mark_delivered(self, conversation_id: str, message_id: str, *, undeliverable: bool = False) -> None:
        """The channel sent the answer of an answered message, or (``undeliverable``) refused it for good."""
        await self._ready()
        item = self._inbox.get((conversation_id, message_id))
        if item is None or item.state != "answered":
            raise StoreError(f"message {message_id!r} of conversation {conversation_id!r} is not answered")
        self._inbox[(conversation_id, message_id)] = replace(item, state="undeliverable" if undeliverable
                                                             else "delivered")

    async def prune_inbox(self, before: datetime) -> int:
        """Forget inbox entries received before ``before`` that are no longer pending; returns how many."""
        await self._ready()
        old = [key for key, i in self._inbox.items()
               if i.state != "pending" and i.message.at is not None and i.message.at < _utc(before)]
        for key in old:
            del self._inbox[key]
        return len(old)

    # -- hand-offs ---------------------------------------------------------------------------
    async def handoffs(self, status: str | None = None) -> list[Handoff]:
        await self._ready()
        return [h for h in self._handoffs if status is None or h.status == status]

    def _latest(self, conversation_id: str, statuses: Sequence[str] | None = None) -> Handoff | None:
        return next((h for h in reversed(self._handoffs) if h.conversation_id == conversation_id
                     and (statuses is None or h.status in statuses)), None)

    def _put(self, handoff: Handoff) -> Handoff:
        self._handoffs[handoff.id - 1] = handoff
        return handoff

    async def handoff_for(self, conversation_id: str) -> Handoff | None:
        """The open (waiting or assigned) hand-off of a conversation, if any."""
        await self._ready()
        return self._latest(conversation_id, ("waiting", "assigned"))

    async def assign(self, conversation_id: str, agent: str, now: datetime) -> Handoff:
        """Give a waiting conversation to an agent. Exactly one of two racing agents wins."""
        await self._ready()
        waiting = [h for h in self._handoffs if h.conversation_id == conversation_id and h.status == "waiting"]
        if len(waiting) != 1:
            latest = self._latest(conversation_id)
            if latest is None:
                raise StoreError(f"conversation {conversation_id!r} has no hand-off to take")
            raise ConflictError(f"conversation {conversation_id!r} is {latest.status}"
                                + (f" (agent {latest.agent})" if latest.agent else ""))
        conv = self._conversations.get(conversation_id)
        if conv is not None:
            self._conversations[conversation_id] = replace(conv, assigned_agent=agent)
        return self._put(replace(waiting[0], status="assigned", agent=agent, assigned_at=_utc(now)))

    async def reassign(self, conversation_id: str, from_agent: str, to_agent: str, now: datetime) -> Handoff:
        await self._ready()
        handoff = self._latest(conversation_id, ("assigned",))
        if handoff is None or handoff.agent != from_agent:
            raise ConflictError(f"conversation {conversation_id!r} is not assigned to {from_agent}")
        conv = self._conversations.get(conversation_id)
        if conv is not None:
            self._conversations[conversation_id] = replace(conv, assigned_agent=to_agent)
        return self._put(replace(handoff, agent=to_agent))

    async def recent_pickups(self, limit: int) -> list[Handoff]:
        await self._ready()
        picked = [h for h in self._handoffs if h.assigned_at is not None]
        picked.sort(key=lambda h: (h.assigned_at, h.id), reverse=True)
        return picked[:max(0, limit)]

    # -- labels, search, canned replies -------------------------------------------------------
    async def labels(self, conversation_id: str) -> list[str]:
        await self._ready()
        return sorted(self._labels.get(conversation_id, ()), key=str.lower)

    async def set_labels(self, conversation_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        await self._ready()
        if conversation_id not in self._conversations:
            raise StoreError(f"no conversation {conversation_id!r}")
        drop = {x.lower() for x in remove}
        labels = {x for x in self._labels.get(conversation_id, set()) if x.lower() not in drop}
        for x in add:
            if x.lower() not in {y.lower() for y in labels}:
                labels.add(x)
        self._labels[conversation_id] = labels
        return sorted(labels, key=str.lower)

    async def search(self, text: str = "", *, label: str | None = None, limit: int = 20,
                     offset: int = 0) -> list[Conversation]:
        await self._ready()
        needle = text.lower()

        def matches(c: Conversation) -> bool:
            if label and label.lower() not in {x.lower() for x in self._labels.get(c.id, ())}:
                return False
            if not needle:
                return True
            texts = [c.id, c.customer_id, json.dumps(dict(c.attributes), default=str, ensure_ascii=False)]
            texts += [t.text for t in self._ordered(c.id) if t.role in ("customer", "bot", "agent")]
            return any(needle in x.lower() for x in texts)

        found = sorted((c for c in self._conversations.values() if matches(c)), key=lambda c: c.id)
        found.sort(key=lambda c: c.started_at, reverse=True)
        return found[max(0, offset):max(0, offset) + max(0, limit)]

    async def canned_replies(self) -> list[CannedReply]:
        await self._ready()
        return sorted(self._canned.values(), key=lambda r: r.shortcut.lower())

    async def save_canned_reply(self, shortcut: str, text: str, author: str, now: datetime,
                                reply_id: int | None = None) -> CannedReply:
        await self._ready()
        if any(r.shortcut.lower() == shortcut.lower() and r.id != reply_id for r in self._canned.values()):
            raise ConflictError(f"a canned reply with the shortcut {shortcut!r} exists already")
        if reply_id is not None and reply_id not in self._canned:
            raise StoreError(f"no canned reply {reply_id}")
        rid = reply_id if reply_id is not None else self._next_canned
        if reply_id is None:
            self._next_canned += 1
        self._canned[rid] = CannedReply(rid, shortcut, text, author, _utc(now))
        return self._canned[rid]

    async def delete_canned_reply(self, reply_id: int) -> None:
        await self._ready()
        if self._canned.pop(reply_id, None) is None:
            raise StoreError(f"no canned reply {reply_id}")

    async def release(self, conversation_id: str, agent: str, outcome: str, now: datetime) -> Handoff:
        """End an agent's hand-off: ``returned`` (to the bot) or ``closed``."""
        if outcome not in ("returned", "closed"):
            raise ValueError(f"outcome must be 'returned' or 'closed', not {outcome!r}")
        await self._ready()
        handoff = self._latest(conversation_id, ("waiting", "assigned"))
        if handoff is None:
            raise ConflictError(f"conversation {conversation_id!r} is not handed off")
        if handoff.status == "assigned" and handoff.agent != agent:
            raise ConflictError(f"conversation {conversation_id!r} belongs to agent {handoff.agent}, not {agent}")
        conv = self._conversations.get(conversation_id)
        if conv is not None:
            self._conversations[conversation_id] = replace(conv, status="bot" if outcome == "returned" else "closed",
                                                           assigned_agent=None)
        return self._put(replace(handoff, status=outcome, agent=agent, closed_at=_utc(now)))  # type: ignore[arg-type]

    # -- feedback ----------------------------------------------------------------------------
    async def set_feedback(self, conversation_id: str, seq: int, value: int) -> None:
        if value not in (-1, 0, 1):
            raise ValueError("feedback is +1 (thumbs up), -1 (thumbs down) or 0 (none)")
        await self._ready()
        turn = self._turns.get(conversation_id, {}).get(seq)
        if turn is None or turn.role != "bot":
            raise StoreError(f"conversation {conversation_id!r} has no bot reply number {seq}")
        self._turns[conversation_id][seq] = replace(turn, feedback=value)

    async def set_satisfaction(self, conversation_id: str, score: int) -> None:
        if not 1 <= score <= 5:
            raise ValueError(f"satisfaction is a score from 1 to 5, not {score}")
        await self._ready()
        conv = self._conversations.get(conversation_id)
        if conv is None:
            raise StoreError(f"no conversation {conversation_id!r}")
        self._conversations[conversation_id] = replace(conv, satisfaction=score)

    async def stats(self) -> dict[str, Any]:
        await self._ready()
        return {"conversations": len(self._conversations), "turns": sum(len(t) for t in self._turns.values()),
                "handoffs_waiting": sum(h.status == "waiting" for h in self._handoffs)}

    async def stored_conversations(self) -> AsyncIterator[StoredConversation]:
        """Every conversation, oldest first (started_at, then id), with its turns and hand-offs
        (as they were when the iteration started)."""
        await self._ready()
        records = [StoredConversation(conv, tuple(self._ordered(conv.id)),
                                      tuple(h for h in self._handoffs if h.conversation_id == conv.id))
                   for conv in sorted(self._conversations.values(), key=lambda c: (c.started_at, c.id))]
        for record in records:
            yield record
            await asyncio.sleep(0)


def hit(article_id: str, passage: str, score: float = 0.9, *, title: str | None = None,
        kind: str = "article") -> Hit:
    """A retrieval hit for :class:`StaticRetriever`: ``score`` is what the threshold is compared with."""
    return Hit(article_id, title or article_id.replace("-", " ").capitalize(), kind, score, score, 0.0,  # type: ignore[arg-type]
               0, "", passage)


class StaticRetriever:
    """A Retriever with fixed hits per query (compared case- and space-insensitively); any
    other query finds nothing. ``errors``: queries whose search raises the given error (a
    BotkitError is what the engine expects of a failing knowledge base). Every query searched
    is kept in ``queries``."""

    def __init__(self, answers: Mapping[str, Sequence[Hit] | SearchResult] | None = None, *,
                 threshold: float = 0.5, kb_version: int = 1, errors: Mapping[str, BotkitError] | None = None):
        self.threshold = threshold
        self.kb_version = kb_version
        self._answers = {self._key(q): a for q, a in (answers or {}).items()}
        self._errors = {self._key(q): e for q, e in (errors or {}).items()}
        self.queries: list[str] = []
        self.started = False

    @staticmethod
    def _key(query: str) -> str:
        return " ".join(query.casefold().split())

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    async def search(self, query: str, k: int | None = None) -> SearchResult:
        self.queries.append(query)
        await asyncio.sleep(0)
        error = self._errors.get(self._key(query))
        if error is not None:
            raise error
        found = self._answers.get(self._key(query), ())
        if isinstance(found, SearchResult):
            return replace(found, hits=found.hits[:k]) if k is not None else found
        hits = tuple(sorted(found, key=lambda h: h.score, reverse=True))
        return SearchResult(query, hits[:k] if k is not None else hits, self.kb_version, self.threshold)


@dataclass(frozen=True)
class Streamed:
    """A scripted reply streamed as exactly these ``deltas``, then ``candidate`` (which may
    differ, as a generative responder's fallback does)."""

    deltas: tuple[str, ...]
    candidate: Candidate


ScriptItem = Candidate | str | Streamed | BaseException


def words(text: str) -> Iterator[str]:
    """``text`` in deltas of one word each (with the space that follows it), as a model streams."""
    yield from re.findall(r"\S+\s*|\s+", text)


class ScriptedResponder:
    """A Responder that replies with ``script``, one item per request, in order: a Candidate,
    a plain text (an answer citing the request's best hit, if any), a :class:`Streamed`, or
    an exception to raise (the engine's responder-failure path). ``script`` may instead be a
    function of the request. Every request is kept in ``requests``; a script that runs out
    raises an error that says so (the engine then falls back to the extractive reply)."""

    def __init__(self, script: Sequence[ScriptItem] | Callable[[ResponderRequest], ScriptItem] = (), *,
                 name: str = "scripted"):
        self.name = name
        self._script = script
        self.requests: list[ResponderRequest] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def _next(self, request: ResponderRequest) -> ScriptItem:
        self.requests.append(request)
        if callable(self._script):
            return self._script(request)
        if len(self.requests) > len(self._script):
            raise RuntimeError(f"ScriptedResponder has {len(self._script)} replies and got request "
                               f"{len(self.requests)} ({request.query!r}); script more replies")
        return self._script[len(self.requests) - 1]

    def _candidate(self, item: str | Candidate, request: ResponderRequest) -> Candidate:
        if isinstance(item, Candidate):
            return item
        best = request.retrieval.best
        return Candidate("answer", item, float(best.score) if best else 0.0,
                         (Source(best.article_id, best.title, float(best.score)),) if best else (),
                         responder=self.name)

    async def respond(self, request: ResponderRequest) -> Candidate:
        item = self._next(request)
        await asyncio.sleep(0)
        if isinstance(item, BaseException):
            raise item
        return self._candidate(item.candidate if isinstance(item, Streamed) else item, request)

    async def respond_stream(self, request: ResponderRequest) -> AsyncIterator[str | Candidate]:
        """Text deltas (word by word, or a :class:`Streamed` item's own), then the final candidate."""
        item = self._next(request)
        if isinstance(item, BaseException):
            raise item
        candidate = self._candidate(item.candidate if isinstance(item, Streamed) else item, request)
        for delta in item.deltas if isinstance(item, Streamed) else words(candidate.text):
            await asyncio.sleep(0)
            yield delta
        yield candidate


__all__ = ["InMemoryConversationStore", "ScriptedResponder", "StaticRetriever", "Streamed", "hit", "words"]
