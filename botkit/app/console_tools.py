"""The agent console's tools beyond the queue (mounted by :func:`botkit.app.console.setup_console`).

====================================================  ==========================================
``GET  /api/console/agents``                          the staff who can take conversations
``GET  /api/console/search?q=&label=&page=``          past conversations: text, customer, label
``GET  /api/console/canned``                          canned replies
``POST /api/console/canned``                          ``{"shortcut", "text"}``: a new one
``PUT  /api/console/canned/{rid}``                    change one
``DELETE /api/console/canned/{rid}``                  delete one
``POST /api/console/conversations/{id}/canned/{rid}`` the reply filled in for this conversation
``POST /api/console/conversations/{id}/labels``       ``{"add": [...], "remove": [...]}``
``POST /api/console/conversations/{id}/reassign``     ``{"agent": name}``: give it to a colleague
``POST /api/console/conversations/{id}/turns/{seq}/propose``  an agent's reply as a KB proposal
====================================================  ==========================================

Canned replies may use the placeholders in :data:`PLACEHOLDERS`; one that is not known is
refused when the reply is saved (400, naming the known ones), so an agent never sends a
customer "{custmer_name}". Search is bounded (:data:`MAX_QUERY_CHARS`, pages of
:data:`PAGE_SIZE`) and its text is taken literally (``%`` and ``_`` are not wildcards); an
agent sees only the matches they may open (the console's reading rule), an admin all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Any

from aiohttp import web

from botkit.app.accounts import Identity
from botkit.app.console import _handler, _json_body, conversation_json, handoff_json, owned, profile, readable
from botkit.app.http import Refused, api_json
from botkit.app.keys import AUTH, KB
from botkit.engine import Engine
from botkit.store import MAX_LABEL_CHARS, MAX_SEARCH_CHARS, CannedReply, ConflictError
from botkit.types import Conversation, Turn

log = logging.getLogger(__name__)
PLACEHOLDERS = {
    "customer_name": "the customer's name (\"there\" when the channel did not give one)",
    "customer_email": "the customer's e-mail address (empty when not given)",
    "agent_name": "your name",
    "conversation_id": "the conversation's id",
}
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_QUERY_CHARS = MAX_SEARCH_CHARS
PAGE_SIZE = 20
MAX_PAGES = 500
MAX_SHORTCUT_CHARS = 40
MAX_CANNED_CHARS = 4000
MAX_LABELS = 20
LABEL = re.compile(r"[\w][\w \-.:]*", re.UNICODE)
SHORTCUT = re.compile(r"[\w][\w\-.]*", re.UNICODE)


# -- the customer ------------------------------------------------------------------------------

def fill(template: str, conv: Conversation, agent: str) -> tuple[str, list[str]]:
    """The canned reply for this conversation, and the placeholders it had no value for."""
    who = profile(conv)
    values = {"customer_name": who["name"], "customer_email": who["email"], "agent_name": agent,
              "conversation_id": conv.id}
    missing: list[str] = []

    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            return m.group(0)  # checked on save; an old reply keeps what it cannot fill, visibly
        value = values[key]
        if not value:
            missing.append(key)
            return "there" if key == "customer_name" else ""
        return value

    return PLACEHOLDER.sub(one, template), missing


def _check_placeholders(text: str) -> None:
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(text)} - PLACEHOLDERS.keys())
    if unknown:
        known = ", ".join("{" + k + "}" for k in PLACEHOLDERS)
        raise Refused(400, f"unknown placeholder {', '.join('{' + u + '}' for u in unknown)}; the known ones are "
                      f"{known}", "text")


def canned_json(r: CannedReply) -> dict[str, Any]:
    return {"id": r.id, "shortcut": r.shortcut, "text": r.text, "author": r.author,
            "updated_at": r.updated_at.isoformat()}


def _canned_fields(body: dict[str, Any]) -> tuple[str, str]:
    shortcut, text = body.get("shortcut"), body.get("text")
    if not isinstance(shortcut, str) or not SHORTCUT.fullmatch(shortcut.strip()) \
            or len(shortcut.strip()) > MAX_SHORTCUT_CHARS:
        raise Refused(400, f"field 'shortcut': 1 to {MAX_SHORTCUT_CHARS} letters, digits, '-', '_' or '.' "
                      "(what you type after /)", "shortcut")
    if not isinstance(text, str) or not text.strip():
        raise Refused(400, "field 'text': write the reply (it is empty)", "text")
    if len(text) > MAX_CANNED_CHARS:
        raise Refused(400, f"field 'text': {len(text)} characters; the limit is {MAX_CANNED_CHARS}", "text")
    _check_placeholders(text)
    return shortcut.strip(), text.strip()


def _reply_id(request: web.Request) -> int:
    raw = request.match_info.get("rid", "")
    if not raw.isdigit() or len(raw) > 12:
        raise Refused(404, f"no canned reply {raw!r}")
    return int(raw)


# -- handlers ----------------------------------------------------------------------------------

@_handler
async def list_canned(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    return api_json({"canned": [canned_json(r) for r in await engine.store.canned_replies()],
                     "placeholders": PLACEHOLDERS})


@_handler
async def create_canned(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    shortcut, text = _canned_fields(await _json_body(request))
    try:
        saved = await engine.store.save_canned_reply(shortcut, text, ident.name, engine.clock())
    except ConflictError as exc:
        raise Refused(409, str(exc), "shortcut") from None
    return api_json({"canned": canned_json(saved)}, status=201)


@_handler
async def update_canned(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    rid = _reply_id(request)
    shortcut, text = _canned_fields(await _json_body(request))
    if rid not in {r.id for r in await engine.store.canned_replies()}:
        raise Refused(404, f"no canned reply {rid}")
    try:
        saved = await engine.store.save_canned_reply(shortcut, text, ident.name, engine.clock(), rid)
    except ConflictError as exc:
        raise Refused(409, str(exc), "shortcut") from None
    return api_json({"canned": canned_json(saved)})


@_handler
async def delete_canned(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    rid = _reply_id(request)
    if rid not in {r.id for r in await engine.store.canned_replies()}:
        raise Refused(404, f"no canned reply {rid}")
    await engine.store.delete_canned_reply(rid)
    return api_json({"deleted": rid})


@_handler
async def use_canned(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    conv, _ = await readable(engine, cid, ident)
    rid = _reply_id(request)
    reply = next((r for r in await engine.store.canned_replies() if r.id == rid), None)
    if reply is None:
        raise Refused(404, f"no canned reply {rid}")
    text, missing = fill(reply.text, conv, ident.name)
    return api_json({"text": text, "missing": missing})


def _labels(value: object, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise Refused(400, f"field '{field}': a list of labels", field)
    out = [" ".join(x.split()) for x in value]
    for x in out:
        if not LABEL.fullmatch(x) or len(x) > MAX_LABEL_CHARS:
            raise Refused(400, f"label {x[:60]!r}: 1 to {MAX_LABEL_CHARS} letters, digits, spaces, '-', '.' or ':'",
                          field)
    return out


@_handler
async def set_labels(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    body = await _json_body(request)
    add, remove = _labels(body.get("add"), "add"), _labels(body.get("remove"), "remove")
    await readable(engine, cid, ident)
    current = {x.lower() for x in await engine.store.labels(cid)}
    after = (current | {x.lower() for x in add}) - {x.lower() for x in remove}
    if len(after) > MAX_LABELS:
        raise Refused(400, f"a conversation has at most {MAX_LABELS} labels; remove one first", "add")
    labels = await engine.store.set_labels(cid, add, remove)
    log.info("agent %s labels conversation %s: %s", ident.name, cid, ", ".join(labels) or "(none)")
    return api_json({"labels": labels})


@_handler
async def list_agents(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    users = await asyncio.to_thread(request.app[AUTH].list_users)
    return api_json({"agents": [{"name": u.name, "role": u.role} for u in users
                                if not u.disabled and u.role in ("agent", "admin")]})


@_handler
async def reassign(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    body = await _json_body(request)
    target = body.get("agent")
    if not isinstance(target, str) or not target.strip():
        raise Refused(400, "field 'agent': the name of the colleague to give the conversation to", "agent")
    await owned(engine, cid, ident)
    user = await asyncio.to_thread(request.app[AUTH].get_user, target.strip())
    if user is None:
        raise Refused(404, f"there is no staff account {target.strip()[:60]!r}", "agent")
    if user.disabled or user.role not in ("agent", "admin"):
        raise Refused(400, f"{user.name} cannot take conversations (role {user.role}"
                      + (", disabled)" if user.disabled else ")"), "agent")
    if user.name.lower() == ident.name.lower():
        raise Refused(400, "the conversation is yours already", "agent")
    handoff = await engine.reassign(cid, ident.name, user.name)
    log.info("agent %s gave conversation %s to %s", ident.name, cid, user.name)
    return api_json({"handoff": handoff_json(handoff, engine.clock())})


@_handler
async def search(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    q = " ".join(request.query.get("q", "").split())
    label = request.query.get("label", "").strip() or None
    if len(q) > MAX_QUERY_CHARS:
        raise Refused(400, f"the search is {len(q)} characters; the limit is {MAX_QUERY_CHARS}", "q")
    if label is not None and len(label) > MAX_LABEL_CHARS:
        raise Refused(400, f"a label has at most {MAX_LABEL_CHARS} characters", "label")
    raw_page = request.query.get("page", "1")
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= MAX_PAGES:
        raise Refused(400, f"'page' is a page number from 1 to {MAX_PAGES}", "page")
    page = int(raw_page)
    found = await engine.store.search(q, label=label, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    more = len(found) > PAGE_SIZE
    results, hidden = [], 0
    for conv in found[:PAGE_SIZE]:
        try:
            await readable(engine, conv.id, ident)
        except Refused:
            hidden += 1  # with a colleague, or never handed to a person: not this agent's to read
            continue
        results.append({**conversation_json(conv), "profile": profile(conv),
                        "labels": await engine.store.labels(conv.id),
                        "snippet": await _snippet(engine, conv.id, q)})
    return api_json({"q": q, "label": label, "page": page, "more": more, "hidden": hidden, "results": results})


async def _snippet(engine: Engine, conv_id: str, q: str) -> str:
    """The first customer/agent/bot text that holds the query (else the first customer text), shortened."""
    turns = [t for t in await engine.store.turns(conv_id, limit=200) if t.role in ("customer", "agent", "bot")]
    needle = q.lower()
    hit = next((t for t in turns if needle and needle in t.text.lower()), None) \
        or next((t for t in turns if t.role == "customer"), None)
    if hit is None:
        return ""
    text = " ".join(hit.text.split())
    at = text.lower().find(needle) if needle else -1
    start = max(0, at - 60) if at >= 0 else 0
    return ("…" if start else "") + text[start:start + 160] + ("…" if len(text) > start + 160 else "")


@_handler
async def propose(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    """An agent's reply as a proposed FAQ entry (the question: the customer's message before it),
    for the KB editor's review; personal data is redacted as in gap proposals."""
    await readable(engine, cid, ident)
    raw = request.match_info.get("seq", "")
    if not raw.isdigit() or len(raw) > 15:
        raise Refused(404, f"no turn {raw!r}")
    seq = int(raw)
    turns = await engine.store.turns(cid, limit=200, before=seq + 1)
    reply = turns[-1] if turns and turns[-1].seq == seq else None
    if reply is None or reply.role != "agent":
        raise Refused(400, f"turn {seq} is not a reply an agent wrote; only those can become KB answers", "seq")
    question = next((t for t in reversed(turns) if t.role == "customer"), None)
    if question is None:
        raise Refused(400, "the customer asked nothing before this reply; there is no question to file it under")
    kb = request.app.get(KB)
    if kb is None or not hasattr(kb, "store"):
        raise Refused(503, "this server has no knowledge base to propose to")
    proposal, added = await asyncio.to_thread(_add_proposal, kb, cid, question, reply, ident.name)
    if not added:
        raise Refused(409, "this reply was proposed already; the KB editor has it under Proposals",
                      proposal_id=proposal["id"])
    log.info("agent %s proposed their reply %s of conversation %s for the KB (%s)", ident.name, seq, cid,
             proposal["id"])
    return api_json({"proposal": proposal, "review": "/kb#proposals"}, status=201)


def _add_proposal(kb: Any, cid: str, question: Turn, reply: Turn, agent: str) -> tuple[dict[str, Any], bool]:
    from training.gaps import Proposal, default_redact, proposals_for

    redact = default_redact()
    q, a = redact(question.text).strip(), redact(reply.text).strip()
    pid = "p-agent-" + hashlib.sha256(f"{cid}\x00{reply.seq}".encode()).hexdigest()[:12]
    title = q.rstrip("?!. ")[:200] or "Proposed FAQ entry"
    proposal = Proposal(pid, title, (q,), a, 1, (cid,), "proposed", note=f"from a reply by {agent}")
    with proposals_for(kb.store) as store:
        added = bool(store.add([proposal]))
        return store.get(pid).to_json(), added


def setup_console_tools(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/console/agents", list_agents)
    r.add_get("/api/console/search", search)
    r.add_get("/api/console/canned", list_canned)
    r.add_post("/api/console/canned", create_canned)
    r.add_put("/api/console/canned/{rid}", update_canned)
    r.add_delete("/api/console/canned/{rid}", delete_canned)
    base = "/api/console/conversations/{cid}"
    r.add_post(base + "/canned/{rid}", use_canned)
    r.add_post(base + "/labels", set_labels)
    r.add_post(base + "/reassign", reassign)
    r.add_post(base + "/turns/{seq}/propose", propose)


__all__ = ["PLACEHOLDERS", "fill", "profile", "setup_console_tools"]
