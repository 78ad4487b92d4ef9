"""The dialogue engine: one customer message in, one reply out, everything stored.

Per message: validate → **accept**: store it in the durable inbox (committed; a channel
acknowledges the message only after this) → **answer**: (if a human has the conversation:
store it for them, stay silent) → resolve follow-ups and answers to clarifying questions →
retrieve → respond (an ``answer``, a ``clarify`` question, or a ``no_answer`` decline when
nothing clears the threshold; see docs/confidence.md) → escalation rules → store the customer
turn, the reply, any hand-off and "this inbox message is answered" in one transaction → tell
listeners (channels, the agent console).

Accepted means answered, even across a crash: a message is in the inbox before the channel
says "accepted", and it is marked answered in the transaction that stores its answer, so a
kill at any instant leaves it either pending (answered after the restart: channels call
:meth:`Engine.answer_pending` when they start) or answered (never twice: the same message id
accepted again gets the stored reply, ``Reply.repeat``).

History is windowed: the engine loads the last :data:`HISTORY_WINDOW_TURNS` turns (more if
``dialogue.history_turns`` asks), plus the count and the first of the customer turns before
them, never the whole conversation.

Ordering: messages of one conversation are processed strictly in arrival order (a FIFO
lock per conversation, :mod:`botkit.locks`); different conversations run concurrently.
Listeners get events through an event bus (:mod:`botkit.events`). Both are in-process by
default; other backends (several workers sharing one database) are passed in. CPU work
(embedding, search, local generation) runs in threads inside the retriever and responder,
so the event loop stays free. A failure while handling one message never escapes as a
crash of the loop: the customer gets a safe reply (the extractive one, or a hand-off) and
the error is logged with the conversation id.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, AsyncIterator, Literal

from botkit.config import DialogueConfig
from botkit.context import read_in_context, resolve_choice
from botkit.errors import BotkitError, MessageRejected
from botkit.escalation import Rule, evaluate
from botkit.events import Event, EventBus, EventKind, InProcessEventBus, Listener
from botkit.locks import ConversationLock, InProcessConversationLock
from botkit.responders.base import Responder, source_of
from botkit.responders.extractive import ExtractiveResponder
from botkit.seams import Retriever  # the protocol; importable from here as before
from botkit.store import ConversationStore
from botkit.types import (
    Action,
    Candidate,
    Conversation,
    ConversationState,
    Escalation,
    Handoff,
    Hit,
    InboxItem,
    InboxState,
    IncomingMessage,
    Reply,
    ResponderRequest,
    SearchResult,
    Source,
    Turn,
)

log = logging.getLogger(__name__)

# Turns loaded per message for follow-ups, the prompt and escalation rules (rules that look
# back, e.g. repeated questions or thumbs-down counts, see this many; turn counts are exact).
HISTORY_WINDOW_TURNS = 200

_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")
_CONTROL[0x7F] = None


Deliver = Callable[[InboxItem, Reply], Awaitable[None]]


def _stored_options(meta: Mapping[str, object]) -> list[Mapping[str, Any]]:
    """The options a clarifying bot turn offered, as its meta stores them (JSON: a list of
    ``{"id", "title", "score"}``); none when the turn offered none."""
    raw = meta.get("options")
    return [o for o in raw if isinstance(o, Mapping)] if isinstance(raw, list) else []


def _visible(text: str) -> bool:
    """Whether ``text`` has a character a person can see: not only separators (Z*), control
    (Cc) and format characters (Cf: zero-width space, BOM, bidi marks). Unassigned code points
    count as visible: they may be emoji newer than this Python's Unicode tables."""
    return any(not unicodedata.category(ch).startswith(("Z", "Cc", "Cf")) for ch in text)


def _searchable(text: str) -> bool:
    """Whether ``text`` has a letter or digit to search for (in any script): "???" or "👍"
    has none, and a search on it returns whatever is nearest to nothing."""
    return any(ch.isalnum() for ch in text)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    def __init__(self, *, retriever: Retriever, responder: Responder, store: ConversationStore,
                 rules: Sequence[tuple[str, Rule]] = (), config: DialogueConfig | None = None,
                 bot_name: str = "botkit", clock: Callable[[], datetime] = utcnow,
                 summarize: Callable[[ConversationState], str] | None = None,
                 bus: EventBus | None = None, locks: ConversationLock | None = None):
        self.retriever = retriever
        self.responder = responder
        self.store = store
        self.rules = list(rules)
        self.config = config or DialogueConfig()
        self.bot_name = bot_name
        self.clock = clock
        self.summarize = summarize
        self.fallback = ExtractiveResponder(self.config.clarify_margin)
        self.bus: EventBus = bus if bus is not None else InProcessEventBus()
        self.locks: ConversationLock = locks if locks is not None else InProcessConversationLock()
        self.turn_observers: list[Callable[[Reply, float], None]] = []  # (reply, seconds): metrics
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store and load the models. A bad model path fails here, not on a customer."""
        if self._started:
            return
        await self.store.start()
        pruned = await self.store.prune_inbox(self.clock() - timedelta(days=self.config.inbox_retention_days))
        if pruned:
            log.info("inbox: forgot %d answered messages older than %d days", pruned, self.config.inbox_retention_days)
        await self.locks.start()
        await self.bus.start()
        await self.retriever.start()
        await self.responder.start()
        self._started = True

    async def close(self) -> None:
        for closer in (self.responder.close, self.retriever.close, self.bus.close, self.locks.close, self.store.close):
            try:
                await closer()
            except Exception:  # noqa: BLE001 - closing everything matters more than the first error
                log.exception("error while closing")
        self._started = False

    async def __aenter__(self) -> "Engine":
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns a function that unsubscribes."""
        return self.bus.subscribe(listener)

    async def _emit(self, event: Event) -> None:
        await self.bus.publish(event)

    def _conversation_lock(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """FIFO per conversation (see :class:`~botkit.locks.ConversationLock`)."""
        return self.locks.hold(conversation_id)

    # Public: channels that read a conversation's history and then follow its events (a
    # resuming web chat tab) hold this so no turn is seen twice or missed.
    conversation_lock = _conversation_lock

    # -- customer messages ---------------------------------------------------------------------
    def validate(self, message: IncomingMessage) -> IncomingMessage:
        """Refuse what cannot be a customer message, before anything is stored."""
        if not isinstance(message.text, str):
            raise MessageRejected(f"a message must be text, got {type(message.text).__name__}")
        if not isinstance(message.conversation_id, str) or not message.conversation_id.strip() \
                or len(message.conversation_id) > 200:
            raise MessageRejected("a message needs a conversation id (1 to 200 characters)")
        text = message.text.translate(_CONTROL).strip()
        if not _visible(text):  # "" or only spaces and invisible marks (zero-width space, BOM, ...)
            raise MessageRejected("empty message: there is nothing to answer")
        limit = self.config.max_message_chars
        if len(text) > limit:
            raise MessageRejected(f"message is {len(text)} characters; the limit is {limit} "
                                  "(dialogue.max_message_chars in bot.yaml)")
        return replace(message, text=text, at=message.at or self.clock())

    async def accept(self, message: IncomingMessage, message_id: str | None = None,
                     meta: dict[str, object] | None = None) -> InboxItem:
        """Validate a customer message and store it in the inbox (committed when this returns):
        from here on it will be answered, even after a crash. A channel acknowledges a message
        only after this. ``message_id``: the channel's id for it, unique in the conversation
        (a redelivery with the same id comes back as the stored item, ``new=False``); None:
        a fresh id (no redelivery to recognise)."""
        message = self.validate(message)
        return await self.store.accept(InboxItem(message, message_id or uuid.uuid4().hex, dict(meta or {})))

    async def handle(self, message: IncomingMessage, message_id: str | None = None) -> Reply:
        """Accept and answer one customer message (in order within its conversation: the
        conversation's place is taken before the first ``await``, so calls are answered in call order)."""
        message = self.validate(message)
        async with self._conversation_lock(message.conversation_id):
            return await self._answer(await self.accept(message, message_id), fresh=True)

    async def answer(self, item: InboxItem) -> Reply:
        """Answer an accepted message; one answered before gets its stored reply (``repeat``)."""
        async with self._conversation_lock(item.conversation_id):
            return await self._answer(item)

    async def _answer(self, item: InboxItem, on_delta: Callable[[str], None] | None = None, *,
                      fresh: bool = False) -> Reply:
        """The lock is held. Re-reads the item: another task may have answered it meanwhile.
        ``fresh``: ``item`` is what ``accept`` read back under this same hold of the lock, so
        nothing can have answered it since (one store round trip less per turn)."""
        started = time.perf_counter()
        current = item if fresh else await self.store.inbox_item(item.conversation_id, item.message_id)
        if current is None:
            raise BotkitError(f"message {item.message_id!r} of conversation {item.conversation_id!r} was never "
                              "accepted; call Engine.accept first")
        if current.answered:
            return await self._stored_reply(current)
        reply = await self._handle(current, on_delta)
        self._observe(reply, time.perf_counter() - started)
        return reply

    def _observe(self, reply: Reply, seconds: float) -> None:
        for observer in self.turn_observers:
            try:
                observer(reply, seconds)
            except Exception:  # noqa: BLE001 - metrics must never cost a reply
                log.exception("turn observer failed")

    async def handle_stream(self, message: IncomingMessage, message_id: str | None = None
                            ) -> AsyncIterator[str | Reply]:
        """Like :meth:`handle`, yielding text deltas as a generative responder writes them,
        then exactly one final :class:`Reply`. The final reply is what was stored and is
        authoritative: if the generation was ungrounded or a rule escalated, its text differs
        from the deltas and a channel should replace what it showed."""
        message = self.validate(message)

        async def accept_and_answer(on_delta: Callable[[str], None]) -> Reply:
            return await self._answer(await self.accept(message, message_id), on_delta, fresh=True)

        async for part in self._stream(message.conversation_id, accept_and_answer):
            yield part

    async def answer_stream(self, item: InboxItem) -> AsyncIterator[str | Reply]:
        """:meth:`answer`, streamed like :meth:`handle_stream` (no deltas for a repeat)."""
        async for part in self._stream(item.conversation_id, lambda on_delta: self._answer(item, on_delta)):
            yield part

    async def _stream(self, conversation_id: str, run: Callable[[Callable[[str], None]], Awaitable[Reply]]
                      ) -> AsyncIterator[str | Reply]:
        queue: asyncio.Queue[str | Reply | BaseException] = asyncio.Queue()

        async def work() -> None:
            try:
                async with self._conversation_lock(conversation_id):
                    reply = await run(queue.put_nowait)
                await queue.put(reply)
            except BaseException as exc:  # handed to the consumer, raised there
                await queue.put(exc)

        task = asyncio.create_task(work())
        try:
            while True:
                part = await queue.get()
                if isinstance(part, BaseException):
                    raise part
                yield part
                if isinstance(part, Reply):
                    return
        finally:
            if not task.done():  # the consumer went away: the turn still completes and is stored
                await asyncio.shield(task)

    async def pending(self, channel: str | None = None, *, conversation_id: str | None = None,
                      undelivered: bool = False) -> list[InboxItem]:
        """Accepted messages not answered yet (``undelivered``: or answered, not delivered), oldest first."""
        states: tuple[InboxState, ...] = ("pending", "answered") if undelivered else ("pending",)
        return await self.store.pending(channel=channel, conversation_id=conversation_id, states=states)

    async def answer_pending(self, conversation_id: str, deliver: Deliver, *, undelivered: bool = False) -> int:
        """Answer a conversation's pending messages in order, calling ``deliver(item, reply)``
        for each (``undelivered``: also answered ones the channel has not delivered; their reply
        is the stored one). The conversation's lock is held throughout, so a message accepted
        meanwhile is answered after these. Returns how many were delivered."""
        states: tuple[InboxState, ...] = ("pending", "answered") if undelivered else ("pending",)
        done = 0
        async with self._conversation_lock(conversation_id):
            for item in await self.store.pending(conversation_id=conversation_id, states=states):
                try:
                    reply = await self._answer(item)
                except MessageRejected as exc:  # accepted under other limits: stored, never answerable
                    log.warning("conversation %s: accepted message %s can no longer be answered: %s",
                                conversation_id, item.message_id, exc)
                    continue
                await deliver(item, reply)
                done += 1
        return done

    async def mark_delivered(self, item: InboxItem, *, undeliverable: bool = False) -> None:
        """A channel that sends replies itself sent this message's answer (``undeliverable``: the
        channel refused it for good, e.g. the customer blocked the bot; it is not tried again)."""
        await self.store.mark_delivered(item.conversation_id, item.message_id, undeliverable=undeliverable)

    async def _stored_reply(self, item: InboxItem) -> Reply:
        """The reply an answered message got, rebuilt from its stored bot turn."""
        conv_id = item.conversation_id
        turn = await self.store.turn(conv_id, item.reply_seq) if item.reply_seq is not None else None
        if turn is None:  # the bot stayed silent: a human had the conversation
            return Reply(conv_id, "handoff", "", turn_seq=None, repeat=True)
        options = tuple(Source(str(o["id"]), str(o["title"]), float(o["score"])) for o in _stored_options(turn.meta))
        return Reply(conv_id, turn.action, turn.text, turn.confidence, turn.sources, turn.kb_version,  # type: ignore[arg-type]
                     turn.escalation, turn.seq, turn.resolved_query, turn.author, options, fallback=turn.fallback,
                     fallback_detail=turn.fallback_detail or "", repeat=True)

    async def _handle(self, item: InboxItem, on_delta: Callable[[str], None] | None = None) -> Reply:
        message = item.message
        now = message.at or self.clock()
        conv = await self.store.get_or_create(message.conversation_id, message.channel, message.customer_id,
                                              dict(message.attributes), now)
        window = await self.store.window(conv.id, max(HISTORY_WINDOW_TURNS, 2 * self.config.history_turns))
        history = list(window.turns)
        seq = window.next_seq
        if conv.status == "handed_off":  # a human has it: store for them, the bot stays silent
            turn = Turn(conv.id, seq, "customer", message.text, now)
            await self.store.record([turn], answers=item)
            await self._emit(Event("customer", conv, turn))
            return Reply(conv.id, "handoff", "", turn_seq=None, channel=conv.channel)
        if conv.status == "closed":  # a closed conversation that the customer writes to again reopens
            conv = replace(conv, status="bot")

        candidate, retrieval, query = await self._candidate(message, history, on_delta)
        customer = Turn(conv.id, seq, "customer", message.text, now, resolved_query=query)
        state = ConversationState(conv, (*history, customer), message, candidate, now,
                                  earlier_customer_turns=window.earlier_customer_turns,
                                  first_customer_text=window.first_customer.text if window.first_customer else None)
        escalation = self._escalate(state)

        meta: dict[str, object] = {"grounded": candidate.grounded}
        if candidate.note:
            meta["note"] = candidate.note
        if candidate.fallback:
            meta["fallback"] = candidate.fallback  # why the responder's own text was replaced (a code)
        # A hand-off replaces the bot's reply: its clarify options ("did you mean ...?") would
        # follow the hand-off message as buttons on every channel, so they go with the reply.
        options = candidate.options if escalation is None else ()
        if options:
            meta["options"] = [{"id": o.id, "title": o.title, "score": o.score} for o in options]
        handoff = None
        action: Action
        if escalation is not None:
            offline = escalation.reason == "outside_business_hours"
            text = self.config.handoff_offline_message if offline else self.config.handoff_message
            action = "escalate"
            meta["candidate"] = candidate.text  # what the bot would have said: helps the agent
            handoff = Handoff(0, conv.id, escalation.reason, escalation.rule, escalation.detail, escalation.summary,
                              conv.channel, conv.customer_id, now)
        else:
            text, action = candidate.text, candidate.action
        bot = Turn(conv.id, seq + 1, "bot", text, now, action=action, confidence=candidate.confidence,
                   sources=candidate.sources if escalation is None else (),
                   kb_version=retrieval.kb_version if retrieval else None, resolved_query=query,
                   escalation=escalation, author=candidate.responder, meta=meta)
        stored = await self.store.record([customer, bot], status="handed_off" if escalation else "bot",
                                         handoff=handoff, answers=item)
        conv = replace(conv, status="handed_off" if escalation else "bot")
        await self._emit(Event("customer", conv, customer))
        await self._emit(Event("bot", conv, bot))
        if stored is not None:
            await self._emit(Event("handoff", conv, handoff=stored))
        return Reply(conv.id, action, text, candidate.confidence, bot.sources, bot.kb_version, escalation,
                     bot.seq, query, candidate.responder, options, fallback=candidate.fallback,
                     fallback_detail=candidate.note if candidate.fallback else "", channel=conv.channel)

    async def _candidate(self, message: IncomingMessage, history: list[Turn],
                         on_delta: Callable[[str], None] | None = None) -> tuple[Candidate, SearchResult | None, str]:
        last_bot = next((t for t in reversed(history) if t.role == "bot"), None)
        options = _stored_options(last_bot.meta) if last_bot and last_bot.action == "clarify" else []
        choice = resolve_choice(message.text, options) if options else None
        query = str(choice["title"]) if choice else message.text
        if choice is None and not _searchable(query):  # only punctuation or symbols: decline, don't guess
            return replace(self.fallback.decline(None), note="no letters or digits to search for"), None, query
        try:
            if choice is None:  # alone, or with the previous question when that retrieves more clearly
                query, retrieval = await read_in_context(query, history, self.retriever.search,
                                                         max_words=self.config.followup_max_words,
                                                         unclear_margin=self.config.clarify_margin)
            else:
                retrieval = await self.retriever.search(query)
        except BotkitError as exc:
            log.warning("retrieval failed for conversation %s: %s", message.conversation_id, exc)
            return (replace(self.fallback.decline(None), fallback="retrieval_failed", note=f"retrieval failed: {exc}"),
                    None, query)
        if choice is not None:  # the customer picked an option: answer with that article
            hit = next((h for h in retrieval.hits if h.article_id == choice["id"]), None)
            if hit is not None:
                return self.fallback.answer_with(hit), retrieval, query
        request = ResponderRequest(query, message, tuple(history[-2 * self.config.history_turns:]) if
                                   self.config.history_turns else (), retrieval, self.bot_name)
        try:
            stream = getattr(self.responder, "respond_stream", None)
            if on_delta is not None and stream is not None:
                candidate = None
                async for item in stream(request):
                    if isinstance(item, str):
                        on_delta(item)
                    else:
                        candidate = item
                if candidate is None:
                    raise RuntimeError("the responder's stream ended without a final candidate")
            else:
                candidate = await self.responder.respond(request)
        except Exception as exc:  # noqa: BLE001 - a responder bug must not cost the customer a reply
            log.exception("responder %s failed for conversation %s", self.responder.name, message.conversation_id)
            candidate = replace(await self.fallback.respond(request), fallback="error",
                                note=f"responder failed: {type(exc).__name__}")
        return candidate, retrieval, query

    def _escalate(self, state: ConversationState) -> Escalation | None:
        return evaluate(self.rules, state, self.summarize)  # a broken rule is logged and skipped

    # -- the human side --------------------------------------------------------------------------
    async def _conversation(self, conversation_id: str) -> Conversation:
        conv = await self.store.get(conversation_id)
        if conv is None:
            raise BotkitError(f"no conversation {conversation_id!r}")
        return conv

    async def take(self, conversation_id: str, agent: str) -> Handoff:
        """An agent takes a waiting conversation; a second agent gets ConflictError."""
        async with self._conversation_lock(conversation_id):
            handoff = await self.store.assign(conversation_id, agent, self.clock())
            conv = await self._conversation(conversation_id)
            await self._emit(Event("assigned", conv, handoff=handoff))
            return handoff

    async def reassign(self, conversation_id: str, from_agent: str, to_agent: str) -> Handoff:
        """Hand an assigned conversation to another agent (an ``assigned`` event: the customer is
        told who joined); ConflictError when it is not ``from_agent``'s."""
        async with self._conversation_lock(conversation_id):
            handoff = await self.store.reassign(conversation_id, from_agent, to_agent, self.clock())
            conv = await self._conversation(conversation_id)
            await self._emit(Event("assigned", conv, handoff=handoff))
            return handoff

    async def agent_message(self, conversation_id: str, agent: str, text: str, *, internal: bool = False) -> Turn:
        """An agent writes to the customer (or an internal note, which the customer never sees)."""
        text = self.validate(IncomingMessage(conversation_id, text)).text
        async with self._conversation_lock(conversation_id):
            conv = await self._conversation(conversation_id)
            handoff = await self.store.handoff_for(conversation_id)
            if handoff is None or handoff.status != "assigned" or handoff.agent != agent:
                from botkit.store import ConflictError

                owner = f"agent {handoff.agent}" if handoff and handoff.agent else "nobody"
                raise ConflictError(f"conversation {conversation_id!r} is not assigned to {agent} "
                                    f"(it is with {owner}); take it first")
            turns = await self.store.turns(conversation_id, limit=1)
            seq = (turns[-1].seq if turns else 0) + 1
            role = "system" if internal else "agent"
            turn = Turn(conversation_id, seq, role, text, self.clock(), action="note" if internal else "agent",  # type: ignore[arg-type]
                        author=agent)
            await self.store.record([turn])
            await self._emit(Event("note" if internal else "agent", conv, turn))
            return turn

    async def release(self, conversation_id: str, agent: str, outcome: Literal["returned", "closed"]) -> Handoff:
        """Return the conversation to the bot, or close it."""
        async with self._conversation_lock(conversation_id):
            handoff = await self.store.release(conversation_id, agent, outcome, self.clock())
            conv = await self._conversation(conversation_id)
            if outcome == "returned":
                turns = await self.store.turns(conversation_id, limit=1)
                seq = (turns[-1].seq if turns else 0) + 1
                turn = Turn(conversation_id, seq, "bot", self.config.returned_message, self.clock(), action="returned",
                            author="system")
                await self.store.record([turn])
                await self._emit(Event("bot", conv, turn))
            await self._emit(Event(outcome, conv, handoff=handoff))
            return handoff

    # -- feedback ------------------------------------------------------------------------------
    async def feedback(self, conversation_id: str, turn_seq: int, value: int) -> None:
        await self.store.set_feedback(conversation_id, turn_seq, value)

    async def rate(self, conversation_id: str, score: int) -> None:
        await self.store.set_satisfaction(conversation_id, score)

    async def history(self, conversation_id: str, limit: int | None = None, before: int | None = None) -> list[Turn]:
        """Stored turns oldest first: all, or the last ``limit`` (before turn ``before``)."""
        return await self.store.turns(conversation_id, limit, before)


__all__ = ["Engine", "Event", "EventKind", "Listener", "Retriever", "Rule", "Hit", "Source", "source_of"]
