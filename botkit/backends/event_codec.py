"""Events as JSON, for a bus between processes: every field of the conversation, turn and
hand-off survives the trip (``decode(encode(e)) == e``), with no pickle (a shared Redis must
not be a way to run code in every worker).

Datetimes travel as ISO 8601 with their offset; tuples of sources stay tuples. The free-form
mappings (``attributes``, ``meta``) must be JSON already, as the stores keep them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from botkit.events import Event
from botkit.types import Conversation, Escalation, Handoff, Source, Turn

VERSION = 1


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _parse_required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _conversation(c: Conversation) -> dict[str, Any]:
    return {"id": c.id, "channel": c.channel, "customer_id": c.customer_id, "status": c.status,
            "started_at": _time(c.started_at), "attributes": dict(c.attributes),
            "satisfaction": c.satisfaction, "assigned_agent": c.assigned_agent}


def _source(s: Source) -> list[Any]:
    return [s.id, s.title, s.score]


def _turn(t: Turn) -> dict[str, Any]:
    e = t.escalation
    return {"conversation_id": t.conversation_id, "seq": t.seq, "role": t.role, "text": t.text,
            "at": _time(t.at), "action": t.action, "confidence": t.confidence,
            "sources": [_source(s) for s in t.sources], "kb_version": t.kb_version,
            "resolved_query": t.resolved_query,
            "escalation": None if e is None else [e.reason, e.rule, e.detail, e.summary],
            "author": t.author, "feedback": t.feedback, "meta": dict(t.meta)}


def _handoff(h: Handoff) -> dict[str, Any]:
    return {"id": h.id, "conversation_id": h.conversation_id, "reason": h.reason, "rule": h.rule,
            "detail": h.detail, "summary": h.summary, "channel": h.channel, "customer_id": h.customer_id,
            "created_at": _time(h.created_at), "status": h.status, "agent": h.agent,
            "closed_at": _time(h.closed_at), "assigned_at": _time(h.assigned_at)}


def encode(event: Event) -> str:
    """``event`` as one JSON text."""
    return json.dumps({
        "v": VERSION, "kind": event.kind, "conversation": _conversation(event.conversation),
        "turn": None if event.turn is None else _turn(event.turn),
        "handoff": None if event.handoff is None else _handoff(event.handoff),
    }, ensure_ascii=False, separators=(",", ":"))


def decode(text: str | bytes) -> Event:
    """The event :func:`encode` wrote; ValueError (with what was wrong) for anything else."""
    try:
        data = json.loads(text)
        if data.get("v") != VERSION:
            raise ValueError(f"event format version {data.get('v')!r}, this botkit reads {VERSION}")
        c = data["conversation"]
        conversation = Conversation(c["id"], c["channel"], c["customer_id"], c["status"],
                                    _parse_required_time(c["started_at"]), c["attributes"], c["satisfaction"],
                                    c["assigned_agent"])
        turn = None
        if (t := data["turn"]) is not None:
            e = t["escalation"]
            turn = Turn(t["conversation_id"], t["seq"], t["role"], t["text"], _parse_required_time(t["at"]),
                        action=t["action"], confidence=t["confidence"],
                        sources=tuple(Source(*s) for s in t["sources"]), kb_version=t["kb_version"],
                        resolved_query=t["resolved_query"],
                        escalation=None if e is None else Escalation(*e), author=t["author"],
                        feedback=t["feedback"], meta=t["meta"])
        handoff = None
        if (h := data["handoff"]) is not None:
            handoff = Handoff(h["id"], h["conversation_id"], h["reason"], h["rule"], h["detail"], h["summary"],
                              h["channel"], h["customer_id"], _parse_required_time(h["created_at"]), h["status"],
                              h["agent"], _parse_time(h["closed_at"]), _parse_time(h["assigned_at"]))
        return Event(data["kind"], conversation, turn, handoff)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a botkit event: {exc!r}") from exc
