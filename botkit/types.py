"""Boundary data of the dialogue core: frozen dataclasses that connectors, responders,
escalation rules and stores exchange. No vendor objects and no loose dicts cross these seams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Role = Literal["customer", "bot", "agent", "system"]
# ``no_answer``: the bot declined (nothing in the knowledge base cleared the threshold, or the
# search failed) and said so, citing nothing; see docs/confidence.md.
Action = Literal["answer", "no_answer", "clarify", "escalate", "handoff", "agent"]
Status = Literal["bot", "handed_off", "closed"]


def probability(value: float | None) -> float:
    """``value`` as a probability: clamped to [0, 1], 0 for NaN or None. A confidence shown to
    customers, agents and rules must read as "how likely this is right", never 1.2153."""
    if value is None or math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))


@dataclass(frozen=True)
class IncomingMessage:
    """A customer message as a connector hands it to the engine."""

    conversation_id: str
    text: str
    channel: str = "cli"
    customer_id: str = ""
    # e.g. {"vip": True, "plan": "pro"}, from the channel/CRM
    attributes: Mapping[str, object] = field(default_factory=dict)
    at: datetime | None = None  # when it was received; the engine fills in "now"


InboxState = Literal["pending", "answered", "delivered", "undeliverable"]


@dataclass(frozen=True)
class InboxItem:
    """A customer message as accepted: stored (committed) before the channel acknowledges it,
    answered exactly once. ``message_id`` is the channel's id for it (unique per conversation):
    the same id accepted again is a redelivery, not a new message.

    ``state``: ``pending`` (not answered yet), ``answered`` (the customer and bot turns are
    stored), ``delivered`` (a channel that sends replies itself, like Telegram, sent it),
    ``undeliverable`` (that channel refused it for good; not tried again)."""

    message: IncomingMessage  # ``at`` is when it was accepted
    message_id: str
    meta: Mapping[str, object] = field(default_factory=dict)  # the channel's own data (e.g. the client's frame id)
    order: int = 0  # arrival order, assigned by the store
    state: InboxState = "pending"
    reply_seq: int | None = None  # the bot turn that answered it (None: not yet, or the bot stayed silent)
    new: bool = True  # from accept(): False when this id had been accepted before

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id

    @property
    def answered(self) -> bool:
        return self.state != "pending"


@dataclass(frozen=True)
class Hit:
    """One article found for a query, with the passage that matched best."""

    article_id: str
    title: str
    kind: Literal["faq", "article"]
    score: float  # what the threshold is compared with
    dense_score: float  # cosine similarity of the best chunk
    lexical_score: float  # normalised BM25 of the best chunk, 0 when hybrid is off
    chunk_id: int
    heading: str
    passage: str  # the matching passage, or the FAQ answer for a matched question


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: tuple[Hit, ...]
    kb_version: int
    threshold: float
    latency_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    # P(the best hit answers the query), calibrated per KB (knowledge/confidence.py); None when
    # whoever built the result did not compute one (then the threshold decides, as before)
    confidence: float | None = None
    min_confidence: float = 0.5
    # the query's language (botkit/language.py; "" = not detected) and whether the KB has entries in it;
    # False: the hits are in the KB's other languages, and the reply says so (docs/languages.md)
    language: str = ""
    in_language: bool = True
    kb_languages: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        """True when the best hit is likely enough to answer: calibrated confidence >= min_confidence
        (without a confidence: the best hit's score >= threshold)."""
        if not self.hits:
            return False
        if self.confidence is not None:
            return self.confidence >= self.min_confidence
        return self.hits[0].score >= self.threshold

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None


def confidence_of(result: SearchResult | None) -> float:
    """How likely ``result``'s best hit answers the query, in [0, 1], for ``Candidate.confidence``:
    its calibrated ``confidence`` when the retriever computed one, else the best hit's score
    clamped to [0, 1] (a raw score is no probability; see docs/confidence.md); 0 without hits."""
    if result is None or not result.hits:
        return 0.0
    return probability(result.confidence if result.confidence is not None else result.hits[0].score)


@dataclass(frozen=True)
class Source:
    """A knowledge-base entry a reply was grounded in."""

    id: str
    title: str
    score: float


# Why a reply is not the configured responder's own text (``Candidate.fallback``, stored in
# the bot turn's meta, ``fallback`` in ``ask --json``, the console and the web chat):
FALLBACK_CODES: dict[str, str] = {
    "ungrounded": "the generated reply was not grounded in the knowledge base",
    "timeout": "the model ran past its time bound",
    "prompt_too_long": "the prompt did not fit the model",
    "not_started": "the model was not started",
    "error": "generation (or the responder) failed",
    "retrieval_failed": "the knowledge base search failed",
}


def responder_kind(name: str) -> str | None:
    """What kind of responder a name belongs to: ``local-lm:tiny`` -> ``local-lm``; ``""`` -> None."""
    return (name.split(":", 1)[0] or None) if name else None


def fallback_from_note(note: str) -> str | None:
    """The fallback code of a turn stored before codes existed, from its readable note."""
    if not note:
        return None
    if note.startswith("generated reply not grounded"):
        return "ungrounded"
    if note.startswith("retrieval failed"):
        return "retrieval_failed"
    if "max_time_s" in note or "timeout_s" in note:
        return "timeout"
    return "error" if note.startswith(("generation failed", "responder failed")) else None


@dataclass(frozen=True)
class Candidate:
    """What a responder proposes before escalation rules have their say."""

    action: Literal["answer", "no_answer", "clarify"]  # no_answer: declined, says so, cites nothing
    text: str
    confidence: float  # how likely the reply is right, in [0, 1] (clamped: a raw score may exceed 1)
    sources: tuple[Source, ...] = ()
    grounded: bool = True  # False when nothing cleared the threshold ("I don't know")
    responder: str = "extractive"
    options: tuple[Source, ...] = ()  # for clarify: the candidates the customer chooses between
    note: str = ""  # why a generated reply was replaced, etc. (readable detail)
    fallback: str | None = None  # a FALLBACK_CODES code when the responder's own text was replaced

    def __post_init__(self) -> None:
        object.__setattr__(self, "confidence", probability(self.confidence))


@dataclass(frozen=True)
class Escalation:
    """A rule's decision to hand the conversation to a human."""

    reason: str  # a stable code: "asked_for_human", "frustration", "low_confidence", ...
    rule: str  # which configured rule fired (its type and position)
    detail: str  # the evidence, readable: "matched 'talk to a person' in turn 4"
    summary: str = ""  # a short summary of the conversation for the agent


@dataclass(frozen=True)
class Turn:
    """One stored message of a conversation, with everything needed to explain it later."""

    conversation_id: str
    seq: int  # 1, 2, 3, ... within the conversation
    role: Role
    text: str
    at: datetime
    action: str = ""  # for bot turns: answer | no_answer | clarify | escalate | agent ...
    confidence: float | None = None
    sources: tuple[Source, ...] = ()
    kb_version: int | None = None
    resolved_query: str = ""  # the customer text after follow-up resolution
    escalation: Escalation | None = None
    author: str = ""  # agent name for agent turns, responder name for bot turns
    feedback: int = 0  # +1 / -1 thumbs on a bot turn, 0 none
    meta: Mapping[str, object] = field(default_factory=dict)

    @property
    def responder(self) -> str | None:
        """For bot turns, the kind of responder that wrote the reply: extractive, local-lm, openai."""
        return responder_kind(self.author) if self.role == "bot" else None

    @property
    def fallback(self) -> str | None:
        """For bot turns, why the responder's own text was replaced (a FALLBACK_CODES code), or None."""
        if self.role != "bot":
            return None
        code = self.meta.get("fallback")
        return str(code) if code else fallback_from_note(str(self.meta.get("note") or ""))

    @property
    def fallback_detail(self) -> str | None:
        """The readable reason behind :attr:`fallback`."""
        return (str(self.meta.get("note") or "") or None) if self.fallback else None


@dataclass(frozen=True)
class HistoryWindow:
    """The recent end of a conversation, and what the engine needs to know about the rest."""

    turns: tuple[Turn, ...]  # the last turns, oldest first
    next_seq: int  # the seq of the next turn to store
    earlier_customer_turns: int = 0  # customer turns before ``turns[0]``
    first_customer: Turn | None = None  # the conversation's first customer turn, when it lies before the window


@dataclass(frozen=True)
class Conversation:
    id: str
    channel: str
    customer_id: str
    status: Status
    started_at: datetime
    attributes: Mapping[str, object] = field(default_factory=dict)
    satisfaction: int | None = None  # 1-5, when the customer rated it
    assigned_agent: str | None = None


@dataclass(frozen=True)
class ConversationState:
    """What an escalation rule sees: the conversation so far, the new message, the proposal."""

    conversation: Conversation
    turns: tuple[Turn, ...]  # history, oldest first, including the new customer turn
    message: IncomingMessage
    candidate: Candidate
    now: datetime
    # The engine passes a window of recent turns, not the whole history: these tell rules
    # what lies before it (``turns`` is then the window).
    earlier_customer_turns: int = 0  # customer turns before the first turn in ``turns``
    first_customer_text: str | None = None  # the conversation's first customer message, when before the window

    @property
    def customer_turn_count(self) -> int:
        """Customer turns in the whole conversation, the new one included."""
        return self.earlier_customer_turns + len(self.customer_turns)

    @property
    def customer_turns(self) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.role == "customer")

    @property
    def bot_turns(self) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.role == "bot")


@dataclass(frozen=True)
class Handoff:
    id: int
    conversation_id: str
    reason: str
    rule: str
    detail: str
    summary: str
    channel: str
    customer_id: str
    created_at: datetime
    status: Literal["waiting", "assigned", "returned", "closed"] = "waiting"
    agent: str | None = None
    closed_at: datetime | None = None
    assigned_at: datetime | None = None  # when an agent picked it up (for expected-wait estimates)


@dataclass(frozen=True)
class Reply:
    """The engine's answer to one customer message."""

    conversation_id: str
    action: Action
    text: str
    confidence: float | None = None
    sources: tuple[Source, ...] = ()
    kb_version: int | None = None
    escalation: Escalation | None = None
    turn_seq: int | None = None  # the stored bot turn (for feedback); None when the bot stayed silent
    resolved_query: str = ""
    responder: str = ""  # the responder's full name ("local-lm:my-model"); to_json gives its kind
    options: tuple[Source, ...] = field(default=())
    fallback: str | None = None  # see FALLBACK_CODES
    fallback_detail: str = ""
    repeat: bool = False  # the message had been answered before: this is the stored reply, not a new one
    channel: str = ""  # the conversation's channel ("webchat", "telegram"); "" where unknown

    def __post_init__(self) -> None:
        if self.confidence is not None:  # a turn stored before clamping may hold 1.2153
            object.__setattr__(self, "confidence", probability(self.confidence))

    def to_json(self) -> dict[str, object]:
        return {
            "conversation": self.conversation_id,
            "action": self.action,
            "text": self.text,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "sources": [{"id": s.id, "title": s.title, "score": round(s.score, 4)} for s in self.sources],
            "kb_version": self.kb_version,
            "escalation": None if self.escalation is None else {
                "reason": self.escalation.reason, "summary": self.escalation.summary,
                "rule": self.escalation.rule, "detail": self.escalation.detail},
            "turn": self.turn_seq,
            "resolved_query": self.resolved_query,
            "responder": responder_kind(self.responder),  # extractive | local-lm | openai (null: bot silent)
            "responder_name": self.responder or None,
            "fallback": self.fallback,  # null, or why the generated text was replaced (FALLBACK_CODES)
            "fallback_detail": (self.fallback_detail or None) if self.fallback else None,
        }


@dataclass(frozen=True)
class ResponderRequest:
    query: str  # the customer's message after follow-up resolution
    message: IncomingMessage
    history: tuple[Turn, ...]  # earlier turns of the conversation, oldest first
    retrieval: SearchResult
    bot_name: str = "botkit"
