"""The web chat wire protocol: JSON text frames over one websocket (docs/webchat-protocol.md).

This module is pure: it parses what a browser sends into typed frames (or a
:class:`ProtocolError` naming the problem) and turns botkit's boundary data into the frames
the browser is sent. No I/O, so every rule here is unit-testable.

Client → server: ``hello``, ``message``, ``feedback``, ``rate``, ``ping``.
Server → client: ``welcome``, ``ack``, ``typing``, ``delta``, ``reply``, ``customer``, ``agent``,
``bot``, ``event``, ``error``, ``pong``.

Text travels raw (customer, agent and knowledge-base text may contain ``<script>``): the
page must insert it as text, never as HTML. The widget does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from botkit.channels import OutgoingMessage
from botkit.types import Reply, Source, Turn, responder_kind

PROTOCOL = 1
MAX_ID_CHARS = 64
WELCOME_TURNS = 50  # the welcome carries the last turns; older ones come with "history" requests
MAX_HISTORY_TURNS = 200  # per "history" request
_MAX_SAFE_INT = 2**53 - 1  # what a JavaScript number holds exactly
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")  # as the engine strips them
_CONTROL[0x7F] = None
# An unpaired UTF-16 surrogate: JSON may spell one (\ud800, from a browser's cut emoji) but UTF-8
# cannot encode it, so it would fail later, in SQLite or on the way back out of the socket.
_SURROGATE = re.compile("[\ud800-\udfff]")
VISIBLE_ROLES = ("customer", "bot", "agent")  # "system" turns are agents' internal notes: never shown

# code -> what it means (docs/webchat-protocol.md lists the same)
ERROR_CODES = {
    "bad_json": "the frame is not a JSON object",
    "bad_frame": "binary frames are not accepted; send JSON text",
    "unknown_type": "the frame's type is missing or unknown",
    "bad_request": "a field is missing or has a bad value",
    "not_allowed": "not possible now (no hello yet, hello twice, nothing to rate yet)",
    "empty": "the message has no text",
    "too_long": "the message is longer than the limit",
    "rejected": "the bot refused the message",
    "not_found": "no such bot reply in this conversation",
    "rate_limited": "too many messages; wait retry_after seconds",
    "too_many_connections": "too many open chats from this address",
    "server_error": "something failed on the server; try again",
}

UrlFor = Callable[[str], "str | None"]


class ProtocolError(Exception):
    """A client frame that cannot be accepted; becomes an ``error`` frame."""

    def __init__(self, code: str, message: str, id: str | int | None = None, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.extra = extra

    def frame(self) -> dict[str, Any]:
        return error(self.code, self.message, self.id, **self.extra)


# -- client -> server ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    session: str | None


@dataclass(frozen=True)
class SendMessage:
    id: str | int | None
    text: str  # control characters removed, surrounding space stripped


@dataclass(frozen=True)
class Feedback:
    turn: int
    value: int  # +1 or -1
    id: str | int | None = None


@dataclass(frozen=True)
class Rate:
    score: int  # 1..5
    id: str | int | None = None


@dataclass(frozen=True)
class Profile:
    """What the pre-chat form asked: the customer's name and e-mail (either may be empty)."""

    name: str
    email: str
    id: str | int | None = None


MAX_NAME_CHARS = 100
MAX_EMAIL_CHARS = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True)
class Ping:
    data: Any = None  # echoed in the pong (e.g. a client timestamp)


@dataclass(frozen=True)
class HistoryRequest:
    before: int  # turns before this one
    limit: int = 50
    id: str | int | None = None  # echoed in the answer (and in an error), so a client can match them


ClientFrame = Hello | SendMessage | Feedback | Rate | Ping | HistoryRequest | Profile


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _turn(value: object) -> int | None:
    """A turn number: 1 up to what JavaScript and SQLite hold (a bigger int made SQLite raise OverflowError)."""
    n = _int(value)
    return n if n is not None and 1 <= n <= _MAX_SAFE_INT else None


def _client_id(frame: Mapping[str, Any]) -> str | int | None:
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS and not _SURROGATE.search(value):
        return value
    if _int(value) is not None and abs(value) <= _MAX_SAFE_INT:
        return value
    raise ProtocolError("bad_request", f"'id' must be a string of at most {MAX_ID_CHARS} characters "
                        "(no unpaired surrogates) or an integer")


def clean_text(text: str) -> str:
    """Control characters removed, unpaired surrogates replaced by U+FFFD, surrounding space stripped."""
    return _SURROGATE.sub("\ufffd", text.translate(_CONTROL)).strip()


def _echoable(value: object) -> bool:
    """A ping's data that can go back out as strict JSON in UTF-8: no NaN or infinity, no surrogate."""
    if isinstance(value, float):
        return math.isfinite(value) and len(repr(value)) <= MAX_ID_CHARS
    if isinstance(value, int):  # bool included; json.loads keeps ints under 4300 digits, so str() works
        return len(str(value)) <= MAX_ID_CHARS
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS and not _SURROGATE.search(value)


def parse(data: str, max_message_chars: int) -> ClientFrame:
    """One text frame from the browser. Raises ProtocolError (with the client's id when known)."""
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError("bad_json", "a frame must be a JSON object with a 'type'")
    kind = frame.get("type")
    if kind == "message":
        cid = _client_id(frame)
        text = frame.get("text")
        if not isinstance(text, str):
            raise ProtocolError("bad_request", "a message needs 'text' (a string)", cid)
        text = clean_text(text)
        if not text:
            raise ProtocolError("empty", "the message is empty: there is nothing to answer", cid)
        if len(text) > max_message_chars:
            raise ProtocolError("too_long", f"the message is {len(text)} characters long; the limit is "
                                f"{max_message_chars}", cid, limit=max_message_chars)
        return SendMessage(cid, text)
    if kind == "hello":
        session = frame.get("session")
        if session is not None and (not isinstance(session, str) or _SURROGATE.search(session)):
            raise ProtocolError("bad_request", "'session' must be a session token (a string) or null")
        return Hello(session or None)
    if kind == "feedback":
        cid = _client_id(frame)
        turn, value = _turn(frame.get("turn")), _int(frame.get("value"))
        if turn is None:
            raise ProtocolError("bad_request", "'turn' must be the number of a bot reply", cid)
        if value not in (1, -1):
            raise ProtocolError("bad_request", "'value' must be 1 (thumbs up) or -1 (thumbs down)", cid)
        return Feedback(turn, value, cid)
    if kind == "rate":
        cid = _client_id(frame)
        score = _int(frame.get("score"))
        if score is None or not 1 <= score <= 5:
            raise ProtocolError("bad_request", "'score' must be a whole number from 1 to 5", cid)
        return Rate(score, cid)
    if kind == "history":
        cid = _client_id(frame)
        before, limit = _turn(frame.get("before")), frame.get("limit", WELCOME_TURNS)
        if before is None:
            raise ProtocolError("bad_request", "'before' must be a turn number (the welcome's 'before')", cid)
        if _int(limit) is None or not 1 <= limit <= MAX_HISTORY_TURNS:
            raise ProtocolError("bad_request", f"'limit' must be a whole number from 1 to {MAX_HISTORY_TURNS}", cid)
        return HistoryRequest(before, limit, cid)
    if kind == "profile":
        cid = _client_id(frame)
        name, email = frame.get("name", ""), frame.get("email", "")
        if not isinstance(name, str) or not isinstance(email, str):
            raise ProtocolError("bad_request", "'name' and 'email' must be strings", cid)
        name, email = " ".join(clean_text(name).split()), clean_text(email)
        if len(name) > MAX_NAME_CHARS:
            raise ProtocolError("bad_request", f"the name is longer than {MAX_NAME_CHARS} characters", cid)
        if email and (len(email) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(email)):
            raise ProtocolError("bad_request", "that e-mail address does not look right (name@example.com)", cid)
        if not name and not email:
            raise ProtocolError("bad_request", "give a name or an e-mail address (or skip the form)", cid)
        return Profile(name, email, cid)
    if kind == "ping":
        payload = frame.get("data")
        return Ping(payload if _echoable(payload) else None)
    if isinstance(kind, str) and kind:
        problem = f"unknown frame type {kind[:40]!r}"
    else:
        problem = "a frame needs a 'type'"
    raise ProtocolError("unknown_type", f"{problem}; expected hello, message, feedback, rate, history, profile or ping",
                        _client_id_or_none(frame))


def _client_id_or_none(frame: Mapping[str, Any]) -> str | int | None:
    try:
        return _client_id(frame)
    except ProtocolError:
        return None


# -- server -> client ---------------------------------------------------------------------------

OWN_ARTICLE_URL = "/help/articles/{id}"
"""Where `botkit serve` publishes each knowledge-base entry (botkit/app/help_pages.py): what a
source links to when ``source_url_template`` is not set (the widget resolves it on the bot's origin)."""


def url_template(template: str | None) -> UrlFor:
    """A function from article id to link (the id URL-quoted), or to None when there is no template."""
    if template is None:
        return lambda _id: None
    return lambda article_id: template.format(id=quote(article_id, safe=""))


def sources(items: Iterable[Source], url_for: UrlFor) -> list[dict[str, Any]]:
    out = []
    for s in items:
        item: dict[str, Any] = {"id": s.id, "title": s.title}
        url = url_for(s.id)
        if url:
            item["url"] = url
        out.append(item)
    return out


def history_item(turn: Turn, url_for: UrlFor) -> dict[str, Any]:
    item: dict[str, Any] = {"role": turn.role, "text": turn.text, "turn": turn.seq,
                            "at": turn.at.isoformat(timespec="seconds")}
    if turn.role == "bot":
        item.update(action=turn.action, sources=sources(turn.sources, url_for), feedback=turn.feedback)
    elif turn.role == "agent":
        item["name"] = turn.author
    return item


def before_cursor(turns: Sequence[Turn]) -> int | None:
    """The ``before`` of a history page: its first turn when older turns exist, else None."""
    return turns[0].seq if turns and turns[0].seq > 1 else None


def welcome(*, session: str, conversation: str, resumed: bool, history: Sequence[Turn], url_for: UrlFor,
            title: str, greeting: str, status: str, agent: str | None, max_message_chars: int,
            prechat: bool = False) -> dict[str, Any]:
    return {"type": "welcome", "protocol": PROTOCOL, "session": session, "conversation": conversation,
            "resumed": resumed, "status": status, "agent": agent, "title": title, "greeting": greeting,
            "max_message_chars": max_message_chars, "prechat": prechat,
            "history": [history_item(t, url_for) for t in history if t.role in VISIBLE_ROLES],
            "before": before_cursor(history)}


def history_page(turns: Sequence[Turn], url_for: UrlFor, request: HistoryRequest | None = None) -> dict[str, Any]:
    """The answer to a ``history`` request: older turns, oldest first, and the next cursor
    (with the request's ``id`` and the ``for_before`` it asked for, to match them up)."""
    page: dict[str, Any] = {"type": "history",
                            "history": [history_item(t, url_for) for t in turns if t.role in VISIBLE_ROLES],
                            "before": before_cursor(turns)}
    if request is not None:
        page["for_before"] = request.before
        if request.id is not None:
            page["id"] = request.id
    return page


def reply(result: Reply, client_id: str | int | None, url_for: UrlFor) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "reply", "id": client_id, "action": result.action, "text": result.text,
        "sources": sources(result.sources, url_for), "turn": result.turn_seq,
        "escalation": result.escalation.reason if result.escalation else None,
        # extractive | local-lm | openai (null when the bot stayed silent), and null or the code of
        # why a generated text was replaced (ungrounded, timeout, ...); the readable detail stays
        # with staff (agent console, `botkit ask --json`): it can name models and servers
        "responder": responder_kind(result.responder), "fallback": result.fallback}
    if result.options:
        frame["options"] = [{"id": o.id, "title": o.title} for o in result.options]
    return frame


def outgoing(message: OutgoingMessage, url_for: UrlFor) -> dict[str, Any]:
    """A message from :meth:`Connector.send`: an agent's words, a hand-off event or a bot message."""
    if message.event:
        return {**message.data, "type": "event", "event": message.event, "text": message.text,
                "name": message.author or None}
    if message.kind == "agent":
        return {"type": "agent", "name": message.author, "text": message.text}
    if message.kind == "system":
        return {"type": "event", "event": "notice", "text": message.text, "name": None}
    frame: dict[str, Any] = {"type": "bot", "text": message.text, "sources": sources(message.sources, url_for)}
    if message.quick_replies:
        frame["quick_replies"] = list(message.quick_replies)
    return frame


def error(code: str, message: str, client_id: str | int | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "id": client_id, **extra}


def dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
