"""The agent console: ``/console`` and its JSON API under ``/api/console/`` (role ``agent``).

Routes (conversation ids are URL-encoded path segments):

====================================================  ==========================================
``GET  /console``                                     the page
``GET  /api/console/queue``                           waiting hand-offs, and the agent's own
``GET  /api/console/conversations/{id}``              the conversation, its hand-off, its turns
``POST /api/console/conversations/{id}/take``         take it (409 when someone else has it)
``POST /api/console/conversations/{id}/messages``     ``{"text": ...}`` to the customer
``POST /api/console/conversations/{id}/notes``        ``{"text": ...}`` internal, never shown to them
``POST /api/console/conversations/{id}/return``       back to the bot
``POST /api/console/conversations/{id}/close``        close it
``GET  /api/console/ws``                              live updates (websocket)
====================================================  ==========================================

An agent acts only on conversations assigned to them (403 when another agent has it, 409
when nobody has taken it yet); two agents never get the same one, because the store assigns
a waiting hand-off in one conditional UPDATE. An agent may read a waiting conversation
before taking it, and the ones they handled.

Live updates: the engine's events are put on a queue by a listener that never waits (the
engine calls listeners while it holds the conversation's lock), and one task fans them out:
queue changes to every console, new turns to the consoles that have that conversation open
or own it. Each socket has a bounded outbox; a console that cannot keep up is disconnected
and re-syncs from a fresh snapshot when its page reconnects.

Every open socket re-checks its credential (the session cookie or the API token it opened
with) before each batch it sends, and at least every ``server.console_recheck_s`` seconds
(default 5) when idle: once the session ended (sign-out, expiry, password change), the token
was revoked, the account was disabled or its role no longer allows the console, the socket
is closed (4401 or 4403, with the reason) and the queued messages are dropped unsent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from botkit.app.accounts import SESSION_COOKIE, Auth, Identity
from botkit.app.http import Refused, api_error, api_json, error_response, page_response, static_route
from botkit.app.keys import AUTH, ENGINE, PROJECT, USER
from botkit.app.signin import require, setup_auth
from botkit.engine import Engine, Event
from botkit.store import ConflictError, StoreError
from botkit.types import Conversation, Handoff, Turn

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
QUEUE_EVENTS = frozenset({"handoff", "assigned", "returned", "closed"})
OUTBOX_LIMIT = 500  # messages a slow console may fall behind before it is disconnected
MAX_WATCHED = 20
RECHECK_S = 5.0  # an idle socket re-checks its credential this often (server.console_recheck_s)
CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403


# -- JSON shapes -------------------------------------------------------------------------------

def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _plain(value: Any) -> Any:
    """JSON-safe copy of stored metadata (datetimes and other objects become strings)."""
    return json.loads(json.dumps(value, default=str))


def handoff_json(h: Handoff, now: datetime, customer_name: str | None = None) -> dict[str, Any]:
    return {
        "id": h.id, "conversation": h.conversation_id, "reason": h.reason, "rule": h.rule, "detail": h.detail,
        "summary": h.summary, "channel": h.channel, "customer": h.customer_id, "customer_name": customer_name,
        "status": h.status,
        "agent": h.agent, "created_at": _iso(h.created_at), "closed_at": _iso(h.closed_at),
        "waiting_seconds": max(0.0, round((now - h.created_at).total_seconds(), 1)),
    }


def turn_json(t: Turn) -> dict[str, Any]:
    kind = "note" if t.role == "system" and t.action == "note" else t.role
    candidate = t.meta.get("candidate")
    return {
        "seq": t.seq, "role": t.role, "kind": kind, "text": t.text, "at": _iso(t.at), "action": t.action,
        "author": t.author, "confidence": t.confidence, "kb_version": t.kb_version,
        "sources": [{"id": s.id, "title": s.title, "score": round(s.score, 4)} for s in t.sources],
        "escalation": None if t.escalation is None else {
            "reason": t.escalation.reason, "detail": t.escalation.detail, "summary": t.escalation.summary},
        "candidate": candidate if isinstance(candidate, str) else None,  # what the bot would have said
        # bot turns: which responder wrote it (extractive | local-lm | openai) and, when its own
        # text was replaced, why (a code: ungrounded, timeout, ...) and the readable detail
        "responder": t.responder, "fallback": t.fallback, "fallback_detail": t.fallback_detail,
    }


def conversation_json(c: Conversation) -> dict[str, Any]:
    return {"id": c.id, "channel": c.channel, "customer": c.customer_id, "status": c.status,
            "started_at": _iso(c.started_at), "attributes": _plain(dict(c.attributes)),
            "assigned_agent": c.assigned_agent, "satisfaction": c.satisfaction}


def profile(conv: Conversation) -> dict[str, Any]:
    """Who the customer is, from what the channel gave (Telegram: the user's name and
    username; web chat: the pre-chat form), for the console's customer panel."""
    a = conv.attributes

    def text(key: str) -> str | None:
        value = a.get(key)
        return value if isinstance(value, str) and value else None

    return {"name": text("customer_name"), "email": text("customer_email"),
            "username": text("telegram_username"), "language": text("language"),
            "channel": conv.channel, "user_id": conv.customer_id}


async def queue_snapshot(engine: Engine) -> tuple[list[Handoff], list[Handoff], dict[str, str]]:
    """(waiting, assigned) hand-offs, oldest first, and the customers' names where known."""
    waiting, assigned = await engine.store.handoffs("waiting"), await engine.store.handoffs("assigned")
    names: dict[str, str] = {}
    for h in (*waiting, *assigned):
        conv = await engine.store.get(h.conversation_id)
        name = profile(conv)["name"] if conv is not None else None
        if name:
            names[h.conversation_id] = name
    return waiting, assigned, names


def queue_json(waiting: list[Handoff], assigned: list[Handoff], agent: str, now: datetime,
               names: dict[str, str] | None = None) -> dict[str, Any]:
    names = names or {}
    return {"agent": agent, "now": _iso(now),
            "waiting": [handoff_json(h, now, names.get(h.conversation_id)) for h in waiting],
            "mine": [handoff_json(h, now, names.get(h.conversation_id)) for h in assigned if h.agent == agent],
            "assigned_to_others": sum(1 for h in assigned if h.agent != agent)}


# -- live updates ------------------------------------------------------------------------------

@dataclass(eq=False)
class Client:
    """One open console socket."""

    ident: Identity
    ws: web.WebSocketResponse
    credential: str = ""  # the session token (ident.via == "session") or the API token it opened with
    watching: set[str] = field(default_factory=set)
    outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT))

    def push(self, payload: dict[str, Any]) -> None:
        try:
            self.outbox.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("console of %s fell %d messages behind; disconnecting it", self.ident.name, OUTBOX_LIMIT)
            asyncio.get_running_loop().create_task(self.ws.close(code=4408, message=b"too slow"))


class ConsoleHub:
    """Fans engine events out to open consoles (see the module docstring)."""

    def __init__(self, engine: Engine, recheck_s: float = RECHECK_S):
        self.engine = engine
        self.recheck_s = recheck_s
        self.clients: set[Client] = set()
        self._events: asyncio.Queue[Event] | None = None

    async def listener(self, event: Event) -> None:
        # Called with the conversation's lock held: never wait here.
        if self._events is not None and self.clients:
            self._events.put_nowait(event)

    async def run(self) -> None:
        assert self._events is not None
        while True:
            event = await self._events.get()
            try:
                await self.dispatch(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop live updates
                log.exception("console update failed for %s event of conversation %s", event.kind,
                              event.conversation.id)

    async def dispatch(self, event: Event) -> None:
        clients = list(self.clients)
        if not clients:
            return
        conv = event.conversation
        now = self.engine.clock()
        if event.kind in QUEUE_EVENTS:
            waiting, assigned, names = await queue_snapshot(self.engine)
            changed = handoff_json(event.handoff, now) if event.handoff is not None else None
            for c in clients:
                c.push({"type": "queue", "event": event.kind, "conversation": conv.id, "handoff": changed,
                        **queue_json(waiting, assigned, c.ident.name, now, names)})
        if event.turn is not None:
            payload = {"type": "turn", "conversation": conv.id, "status": conv.status, "turn": turn_json(event.turn)}
            for c in clients:
                if conv.id in c.watching or (conv.assigned_agent and conv.assigned_agent == c.ident.name):
                    c.push(payload)

    async def snapshot_for(self, client: Client) -> dict[str, Any]:
        waiting, assigned, names = await queue_snapshot(self.engine)
        return {"type": "queue", "event": "snapshot", "conversation": None, "handoff": None,
                **queue_json(waiting, assigned, client.ident.name, self.engine.clock(), names)}

    async def ctx(self, app: web.Application) -> AsyncIterator[None]:
        self._events = asyncio.Queue()
        task = asyncio.create_task(self.run(), name="console-hub")
        unsubscribe = self.engine.subscribe(self.listener)
        try:
            yield
        finally:
            unsubscribe()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.close_all()

    async def close_all(self, _app: web.Application | None = None) -> None:
        await asyncio.gather(*(c.ws.close(code=1001, message=b"server shutting down") for c in list(self.clients)),
                             return_exceptions=True)


HUB = web.AppKey("console_hub", ConsoleHub)


# -- access checks -----------------------------------------------------------------------------

async def _conversation(engine: Engine, conv_id: str) -> Conversation:
    conv = await engine.store.get(conv_id)
    if conv is None:
        raise Refused(404, f"no conversation {conv_id!r}")
    return conv


async def readable(engine: Engine, conv_id: str, ident: Identity) -> tuple[Conversation, Handoff | None]:
    """An agent reads waiting conversations (to decide), their own, and ones they handled."""
    conv = await _conversation(engine, conv_id)
    handoff = await engine.store.handoff_for(conv_id)
    if ident.role == "admin" or (handoff is not None and (handoff.status == "waiting" or handoff.agent == ident.name)):
        return conv, handoff
    # Past hand-offs: scanned only on this rare path (a closed conversation re-opened in the page).
    if any(h.conversation_id == conv_id and h.agent == ident.name for h in await engine.store.handoffs()):
        return conv, handoff
    if handoff is not None and handoff.agent:
        raise Refused(403, f"conversation {conv_id!r} is with agent {handoff.agent}")
    raise Refused(403, f"conversation {conv_id!r} is not handed off to you")


async def owned(engine: Engine, conv_id: str, ident: Identity) -> Handoff:
    """The conversation's hand-off, if it is assigned to this agent; Refused otherwise."""
    await _conversation(engine, conv_id)
    handoff = await engine.store.handoff_for(conv_id)
    if handoff is None:
        raise Refused(409, f"conversation {conv_id!r} is not handed off (it is with the bot, or closed)")
    if handoff.status == "waiting":
        raise Refused(409, f"conversation {conv_id!r} is waiting in the queue: take it first")
    if handoff.agent != ident.name:
        raise Refused(403, f"conversation {conv_id!r} is assigned to agent {handoff.agent}, not to you")
    return handoff


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request body must be a JSON object")
    return body


def _text(body: dict[str, Any]) -> str:
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Refused(400, "field 'text': write a message (it is empty)")
    return text


# -- handlers ----------------------------------------------------------------------------------

def _handler(fn: Any) -> Any:
    """Agent-only API handler; Refused and engine errors become JSON answers (botkit.app.http.error_response)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request, request.app[ENGINE], request[USER], request.match_info.get("cid", ""))
        except Exception as exc:  # noqa: BLE001 - error_response answers what it knows, re-raised otherwise
            answer = error_response(exc, request)
            if answer is None:
                raise
            return answer

    wrapped.__name__ = fn.__name__
    return require("agent")(wrapped)


@require("agent")
async def console_page(request: web.Request) -> web.StreamResponse:
    return page_response(request, STATIC / "console.html")


@_handler
async def get_queue(request: web.Request, engine: Engine, ident: Identity, _cid: str) -> web.StreamResponse:
    waiting, assigned, names = await queue_snapshot(engine)
    return api_json(queue_json(waiting, assigned, ident.name, engine.clock(), names))


@_handler
async def get_conversation(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    conv, handoff = await readable(engine, cid, ident)
    turns = await engine.history(cid)
    return api_json({"conversation": conversation_json(conv), "profile": profile(conv),
                     "labels": await engine.store.labels(cid),
                     "handoff": handoff_json(handoff, engine.clock()) if handoff else None,
                     "mine": bool(handoff and handoff.status == "assigned" and handoff.agent == ident.name),
                     "turns": [turn_json(t) for t in turns]})


@_handler
async def take(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    await _conversation(engine, cid)
    try:
        handoff = await engine.take(cid, ident.name)
    except (ConflictError, StoreError):
        current = await engine.store.handoff_for(cid)
        if current is not None and current.status == "assigned" and current.agent == ident.name:
            handoff = current  # a double click: it is already yours
        elif current is not None and current.agent:
            return api_error(409, f"{current.agent} has already taken this conversation", agent=current.agent)
        else:
            return api_error(409, "this conversation is not waiting for an agent "
                                  "(it is with the bot, or closed)")
    log.info("agent %s took conversation %s", ident.name, cid)
    return api_json({"handoff": handoff_json(handoff, engine.clock())})


@_handler
async def send_message(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    text = _text(await _json_body(request))
    await owned(engine, cid, ident)
    turn = await engine.agent_message(cid, ident.name, text)
    return api_json({"turn": turn_json(turn)})


@_handler
async def add_note(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    text = _text(await _json_body(request))
    await owned(engine, cid, ident)
    turn = await engine.agent_message(cid, ident.name, text, internal=True)
    return api_json({"turn": turn_json(turn)})


async def _release(engine: Engine, ident: Identity, cid: str, outcome: str) -> web.StreamResponse:
    await owned(engine, cid, ident)
    handoff = await engine.release(cid, ident.name, outcome)  # type: ignore[arg-type]
    log.info("agent %s %s conversation %s", ident.name, outcome, cid)
    return api_json({"handoff": handoff_json(handoff, engine.clock())})


@_handler
async def return_to_bot(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    return await _release(engine, ident, cid, "returned")


@_handler
async def close(request: web.Request, engine: Engine, ident: Identity, cid: str) -> web.StreamResponse:
    return await _release(engine, ident, cid, "closed")


async def websocket(request: web.Request) -> web.StreamResponse:
    """Live updates. Session cookie (with an Origin of this server) or a bearer API token."""
    auth = request.app[AUTH]
    ident = await auth.identify(request)
    if ident is None:
        return api_error(401, "sign in first", signin="/signin")
    if not ident.can("agent"):
        return api_error(403, f"this needs the agent role; {ident.name} is {ident.role}")
    if ident.via == "session" and not auth.origin_ok(request, required=True):
        log.warning("console websocket refused: Origin %r is not this server", request.headers.get("Origin"))
        return api_error(403, "cross-site websocket refused (Origin is not this server)")
    hub = request.app[HUB]
    engine = request.app[ENGINE]
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024)
    await ws.prepare(request)
    client = Client(ident, ws, _credential(request, ident))
    hub.clients.add(client)
    client.push({"type": "hello", "agent": ident.name, "role": ident.role})
    client.push(await hub.snapshot_for(client))
    pump = asyncio.create_task(_pump(request.app, client))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                kind, cid = data.get("type"), data.get("conversation")
            except (json.JSONDecodeError, AttributeError):
                client.push({"type": "error", "error": "send JSON objects"})
                continue
            if kind == "watch" and isinstance(cid, str):
                try:
                    await readable(engine, cid, client.ident)
                except Refused as exc:
                    client.push({"type": "error", "conversation": cid, "status": exc.status, "error": exc.message})
                    continue
                if len(client.watching) >= MAX_WATCHED:
                    client.watching.pop()
                client.watching.add(cid)
                client.push({"type": "watching", "conversation": cid})
            elif kind == "unwatch" and isinstance(cid, str):
                client.watching.discard(cid)
            elif kind == "ping":
                client.push({"type": "pong"})
    finally:
        hub.clients.discard(client)
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
    return ws


def _credential(request: web.Request, ident: Identity) -> str:
    """The secret that identified the socket's request, to re-check it later."""
    if ident.via == "session":
        return request.cookies.get(SESSION_COOKIE, "")
    return request.headers.get("Authorization", "")[7:].strip()


async def _refusal(auth: Auth, client: Client) -> tuple[int, str] | None:
    """Why the socket may no longer receive anything (close code, reason), or None."""
    current = await asyncio.to_thread(auth.recheck, client.ident.via, client.credential)
    if current is None:
        what = "session ended (signed out or expired)" if client.ident.via == "session" else "API token revoked"
        return CLOSE_SIGNED_OUT, f"{what} or account disabled: sign in again"
    if not current.can("agent"):
        return CLOSE_FORBIDDEN, f"{current.name} is now {current.role}; the console needs the agent role"
    client.ident = current  # a changed role (admin -> agent) applies from now on
    return None


async def _pump(app: web.Application, client: Client) -> None:
    """Send a socket's outbox in order, each batch only after its credential was re-checked;
    close the socket once it no longer passes."""
    auth, every = app[AUTH], app[HUB].recheck_s
    try:
        while True:
            try:
                batch = [await asyncio.wait_for(client.outbox.get(), timeout=every)]
            except TimeoutError:
                batch = []  # idle: re-check anyway
            while not client.outbox.empty():
                batch.append(client.outbox.get_nowait())
            refused = await _refusal(auth, client)
            if refused is not None:
                code, reason = refused
                log.info("console socket of %s closed: %s", client.ident.name, reason)
                await client.ws.close(code=code, message=reason.encode("utf-8")[:120])
                return
            for payload in batch:
                await client.ws.send_json(payload)
    except (ConnectionError, RuntimeError):  # the socket closed under us
        return


def setup_console(app: web.Application) -> None:
    """Mount the agent console (and the shared sign-in pages) on the server's app."""
    setup_auth(app)
    if HUB in app:
        return
    project = app.get(PROJECT)
    hub = ConsoleHub(app[ENGINE], project.config.server.console_recheck_s if project is not None else RECHECK_S)
    app[HUB] = hub
    r = app.router
    r.add_get("/console", console_page)
    static_route(app, "/static/console", STATIC, {"console.js", "console.css"})
    r.add_get("/api/console/queue", get_queue)
    r.add_get("/api/console/ws", websocket)
    base = "/api/console/conversations/{cid}"
    r.add_get(base, get_conversation)
    r.add_post(base + "/take", take)
    r.add_post(base + "/messages", send_message)
    r.add_post(base + "/notes", add_note)
    r.add_post(base + "/return", return_to_bot)
    r.add_post(base + "/close", close)
    app.cleanup_ctx.append(hub.ctx)
    app.on_shutdown.append(hub.close_all)


__all__ = ["ConsoleHub", "HUB", "setup_console", "turn_json", "handoff_json"]
