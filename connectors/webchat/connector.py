"""The web chat connector: a websocket per browser tab, the widget's static files, a demo page.

Routes (an aiohttp sub-app under ``/channels/webchat/``, plus the demo page)::

    GET /channels/webchat/ws          the chat socket (protocol: docs/webchat-protocol.md)
    GET /channels/webchat/widget.js   the widget: one <script> tag on any page
    GET /channels/webchat/widget.css  its styles (loaded by the widget)
    GET /chat                         a demo help-centre page embedding the widget

One socket, three tasks' worth of work, none of which can block another conversation:

* the **reader** (the request handler) parses frames, enforces the limits and answers
  cheap frames at once; a message is stored in the engine's durable inbox (committed),
  *then* acknowledged (``ack``) and queued;
* the **worker** runs the socket's queued messages through the engine one after another
  (the engine also orders messages of one conversation across tabs). It outlives the
  socket: a message that was acknowledged is answered and stored even if the customer
  closed the tab, and the reply shows up in the history when the session resumes. If the
  server dies first, the message is still in the inbox: :meth:`WebChatConnector.start`
  answers what is pending (and so does a resuming tab's ``hello``), each message exactly
  once: a retransmission (same id, same text) is acknowledged again, never answered twice;
* the **writer** sends the socket's outbox in order. Everything that reaches a customer
  (replies, an agent's words from :meth:`WebChatConnector.send`) is only *queued* for a
  socket, so a slow or stuck browser never holds up the engine; one that lets its outbox
  grow past ``MAX_OUTBOX`` frames is disconnected.

Limits: a token bucket per session and one per client address for messages, one per socket
for all frames; a socket that keeps sending into an empty bucket is closed (1008). Frames
over the size limit are closed by aiohttp (1009); everything else that is wrong gets an
``error`` frame and the socket keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib.resources import files
from typing import Any

from aiohttp import WSMsgType, web

import connectors.webchat.protocol as proto
from botkit import net, waiting
from botkit.channels import ConnectorContext, OutgoingMessage
from botkit.errors import MessageRejected
from botkit.store import StoreError
from botkit.types import Conversation, InboxItem, IncomingMessage, Reply
from connectors.webchat.config import WebChatConfig
from connectors.webchat.limits import RATE_LIMITER, Limit, LocalRateLimiter, TokenBucket
from connectors.webchat.sessions import SESSION_STORE_FACTORY, SESSIONS_DB, SessionStore, WebChatSessions

log = logging.getLogger(__name__)

PREFIX = "/channels/webchat"
DEMO_PAGE = "/chat"
HELLO_TIMEOUT_S = 15.0  # a socket that does not say hello by then is closed
HEARTBEAT_S = 30.0  # websocket pings; a browser that stops answering is dropped
MAX_OUTBOX = 500  # frames queued for one socket before it counts as stuck
FRAME_BURST = 3  # the per-socket frame bucket is this many times the session's message bucket
CLOSE_POLICY = 1008
MIN_FRAME_BYTES = 64 * 1024
STATIC = {"widget.js": "text/javascript", "widget.css": "text/css", "chat.html": "text/html",
          "chat.js": "text/javascript"}  # chat.js: the demo page's search box and topic cards


class _Client:
    """One open chat socket."""

    def __init__(self, ws: web.WebSocketResponse, ip: str, frames: TokenBucket, strikes: TokenBucket):
        self.ws = ws
        self.ip = ip
        self.frames = frames  # every frame costs a token: pings and junk included
        self.strikes = strikes  # every refused frame costs one; empty = sustained flood, the socket is closed
        self.conversation_id: str | None = None
        self.welcome_seq = 0  # turns up to this one were in the welcome's history: never sent again
        self.inbox: deque[tuple[InboxItem, str | int | None]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[bool] | None = None
        self.closed = False

    def post(self, frame: dict[str, Any] | str, turn: int | None = None) -> None:
        """Queue a frame for this socket (never waits). ``turn``: skip it if the welcome had it."""
        if self.closed or (turn is not None and turn <= self.welcome_seq):
            return
        if self.outbox.qsize() >= MAX_OUTBOX:
            log.warning("webchat: a socket of conversation %s stopped reading; disconnecting it", self.conversation_id)
            self.closed = True
            self.outbox.put_nowait(None)
            self.closer = asyncio.get_running_loop().create_task(
                self.ws.close(code=CLOSE_POLICY, message=b"not reading"))  # the reader then cleans up
            return
        self.outbox.put_nowait(frame if isinstance(frame, str) else proto.dumps(frame))

    async def write_loop(self) -> None:
        while True:
            text = await self.outbox.get()
            if text is None:
                return
            try:
                await self.ws.send_str(text)
            except Exception:  # noqa: BLE001 - the peer is gone; the reader notices and cleans up
                self.closed = True
                return


class WebChatConnector:
    """The ``webchat`` channel (see the module docstring)."""

    #: It sends to the browser tabs connected to this process, so with several workers (a Redis
    #: bus) it takes the events of the others too: an agent's reply committed on another worker
    #: reaches a tab open here. A channel that sends through an outside API (Telegram) leaves
    #: this False, and only the worker that published an event sends it: once.
    follows_other_workers = True

    def __init__(self, ctx: ConnectorContext, config: WebChatConfig):
        self.name = ctx.name
        self.ctx = ctx
        self.config = config
        self.engine = ctx.engine
        self.project = ctx.project
        server = ctx.project.config.server
        self.behind_proxy = server.behind_proxy
        self.shutdown_timeout = server.shutdown_timeout_s
        self.public_url = ctx.public_url
        self.title = config.title or ctx.project.config.name
        self.url_for = proto.url_template(config.source_url_template or proto.OWN_ARTICLE_URL)
        # Frames up to this size are read and, if their text is too long, refused with an error
        # (the socket lives on); bigger ones make aiohttp close the socket (1009) unread.
        self.max_frame_bytes = max(MIN_FRAME_BYTES, config.max_message_chars * 6 + 4096)  # "\u2028" is 6 bytes
        # The app hands over a shared store's factory when one is switched on (PostgreSQL), else SQLite here.
        ttl, make_sessions = timedelta(days=config.session_days), ctx.extra.get(SESSION_STORE_FACTORY)
        self.sessions: WebChatSessions = (make_sessions(ttl) if make_sessions is not None
                                          else SessionStore(ctx.project.state_dir / SESSIONS_DB, ttl))
        per_session, per_ip = config.rate_limit_per_session, config.rate_limit_per_ip
        self._session_limit = Limit("webchat-session", per_session.messages, per_session.seconds)
        self._ip_limit = Limit("webchat-ip", per_ip.messages, per_ip.seconds)
        # Shared by the workers when the app passes a Redis limiter (BOTKIT_REDIS_URL); the app starts it.
        self._limiter = ctx.app.get(RATE_LIMITER) or LocalRateLimiter()
        self._by_conversation: dict[str, set[_Client]] = {}
        self._connections: dict[str, int] = {}  # open sockets per client address
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # workers: awaited on stop, so no accepted message is lost
        self._static: dict[str, tuple[bytes, str]] = {}  # name -> (body, etag)
        self._page_styles: list[str] = []
        self._stopping = False

        sub = web.Application()
        sub.router.add_get("/ws", self.websocket)
        sub.router.add_get("/widget.js", self.static_file)
        sub.router.add_get("/widget.css", self.static_file)
        sub.router.add_get("/chat.js", self.static_file)
        ctx.app.add_subapp(PREFIX, sub)
        ctx.app.router.add_get(DEMO_PAGE, self.demo_page)
        ctx.app.on_shutdown.append(self._on_shutdown)  # before aiohttp waits for open handlers

    def __repr__(self) -> str:
        return f"WebChatConnector(name={self.name!r}, title={self.title!r})"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.sessions.start()
        root = files("connectors.webchat") / "static"
        for name in STATIC:
            body = (root / name).read_bytes()
            if name == "chat.html":
                text = body.decode("utf-8").replace("{{title}}", html.escape(self.title, quote=True))
                self._page_styles = [_csp_hash(s) for s in re.findall(r"<style>(.*?)</style>", text, re.DOTALL)]
                body = text.encode("utf-8")
            self._static[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
        await self._recover()
        log.info("webchat: serving %s/ws (origins: %s)", PREFIX,
                 ", ".join(self.config.allowed_origins) or "same origin")

    async def _recover(self) -> None:
        """Answer the messages accepted before a crash (or a shutdown that ran out of time).
        One task per conversation, started before the server listens: each holds its
        conversation's turn, so a message accepted after the restart is answered after these."""
        pending = await self.engine.pending(self.name)
        conversations = list(dict.fromkeys(item.conversation_id for item in pending))
        if conversations:
            log.info("webchat: answering %d messages of %d conversations accepted before the restart", len(pending),
                     len(conversations))
        for conv_id in conversations:
            self._spawn(self._answer_pending(conv_id))

    async def _answer_pending(self, conversation_id: str) -> None:
        try:
            await self.engine.answer_pending(conversation_id, self._deliver_answer)
        except Exception:  # noqa: BLE001 - still pending: the next start or resume tries again
            log.exception("webchat: failed to answer pending messages of conversation %s", conversation_id)

    async def _deliver_answer(self, item: InboxItem, result: Reply) -> None:
        """An answer made outside a socket's worker: every open tab sees the question and the reply."""
        if result.repeat:  # answered meanwhile by the worker that accepted it, which delivered it
            return
        client_id = item.meta.get("client_id")
        seq = result.turn_seq
        customer_seq = seq - 1 if seq is not None else None
        self._broadcast(item.conversation_id, {"type": "customer", "id": client_id, "text": item.message.text,
                                               "turn": customer_seq}, customer_seq)
        self._broadcast(item.conversation_id, proto.reply(result, client_id, self.url_for), seq)  # type: ignore[arg-type]

    async def stop(self) -> None:
        """Close the sockets (1001: the widget reconnects), finish accepted messages, close the store."""
        self._stopping = True
        await self._close_all()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.shutdown_timeout)
            if late:
                log.warning("webchat: %d conversations still had messages in flight at shutdown", len(late))
        await self.sessions.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping = True
        await self._close_all()

    async def _close_all(self) -> None:
        clients = list(self._clients)
        for c in clients:
            c.closed = True
            c.outbox.put_nowait(None)
        if clients:
            await asyncio.gather(*(c.ws.close(code=1001, message=b"server restarting") for c in clients),
                                 return_exceptions=True)

    # -- outbound: what the engine's listener delivers -------------------------------------------
    async def send(self, conversation: Conversation, message: OutgoingMessage) -> None:
        """Queue an agent message, a hand-off event or a bot message for every open tab of the
        conversation. None open: nothing to do; the turn is in the history, shown on resume."""
        clients = self._by_conversation.get(conversation.id)
        if not clients:
            return
        frame = proto.dumps(proto.outgoing(message, self.url_for))
        for client in list(clients):
            client.post(frame, message.turn)  # a turn the tab's welcome history had is not shown twice

    def _broadcast(self, conversation_id: str, frame: dict[str, Any] | str, turn: int | None = None,
                   skip: _Client | None = None) -> None:
        text = frame if isinstance(frame, str) else proto.dumps(frame)
        for client in list(self._by_conversation.get(conversation_id, ())):
            if client is not skip:
                client.post(text, turn)

    # -- the socket ----------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            raise web.HTTPServiceUnavailable(text="the chat is restarting; try again in a moment")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            log.info("webchat: refused a socket from origin %.100s", origin)
            raise web.HTTPForbidden(text="this page's origin may not open the chat (channels.webchat.allowed_origins)")
        ip = self._client_ip(request)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=self.max_frame_bytes)
        await ws.prepare(request)
        if self._connections.get(ip, 0) >= self.config.max_connections_per_ip:
            await ws.send_str(proto.dumps(proto.error(
                "too_many_connections", "Too many chats are open from your network. Close one and try again.")))
            await ws.close(code=CLOSE_POLICY, message=b"too many connections")
            return ws
        now = time.monotonic()
        per = self.config.rate_limit_per_session
        client = _Client(ws, ip, TokenBucket(FRAME_BURST * per.messages, FRAME_BURST * per.per_second, now),
                         TokenBucket(2 * per.messages, per.per_second, now))
        self._connections[ip] = self._connections.get(ip, 0) + 1
        self._clients.add(client)
        client.writer = asyncio.create_task(client.write_loop())
        try:
            await self._read_loop(client)
        finally:
            self._clients.discard(client)
            self._connections[ip] -= 1
            if not self._connections[ip]:
                del self._connections[ip]
            if client.conversation_id is not None:
                tabs = self._by_conversation.get(client.conversation_id)
                if tabs is not None:
                    tabs.discard(client)
                    if not tabs:
                        del self._by_conversation[client.conversation_id]
            client.closed = True
            client.outbox.put_nowait(None)
            await client.writer
            if not ws.closed:
                await ws.close()
        return ws

    async def _read_loop(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        hello_by = loop.time() + HELLO_TIMEOUT_S
        while not client.closed:
            timeout = None if client.conversation_id else max(0.01, hello_by - loop.time())
            try:
                msg = await client.ws.receive(timeout=timeout)
            except TimeoutError:
                await self._close(client, proto.error("not_allowed", "Say hello first (no hello within "
                                                      f"{HELLO_TIMEOUT_S:g} seconds)."), "no hello")
                return
            if msg.type == WSMsgType.TEXT:
                try:
                    keep = await self._on_text(client, msg.data)
                except Exception:  # noqa: BLE001 - one bad frame never takes the socket (or the server) down
                    log.exception("webchat: failed on a frame of conversation %s", client.conversation_id)
                    client.post(proto.error("server_error", "Something went wrong on our side. Please try again."))
                    keep = True
                if not keep:
                    return
            elif msg.type == WSMsgType.BINARY:
                if not self._refuse(client, proto.error("bad_frame", "Binary frames are not accepted; "
                                                        "send JSON text frames.")):
                    await self._close_flood(client)
                    return
            elif msg.type == WSMsgType.ERROR:
                log.info("webchat: socket of conversation %s closed: %s", client.conversation_id, msg.data)
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    def _refuse(self, client: _Client, frame: dict[str, Any]) -> bool:
        """Send an error for a refused frame; False when this socket has refused too many (flood)."""
        client.post(frame)
        return client.strikes.take(time.monotonic()) == 0.0

    async def _close_flood(self, client: _Client) -> None:
        log.warning("webchat: closing a flooding socket of conversation %s (%s)", client.conversation_id, client.ip)
        await self._close(client, proto.error("rate_limited", "Too many messages; the chat was disconnected. "
                                              "Reload the page to continue."), "too many messages")

    async def _close(self, client: _Client, frame: dict[str, Any], reason: str) -> None:
        """Send ``frame`` after everything queued, then close with 1008."""
        client.post(frame)
        client.closed = True
        client.outbox.put_nowait(None)
        if client.writer is not None:  # the error goes out before the close frame
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(client.writer), 5)
        await client.ws.close(code=CLOSE_POLICY, message=reason.encode())

    async def _on_text(self, client: _Client, data: str) -> bool:
        """Handle one text frame; False when the socket is to be closed."""
        now = time.monotonic()
        wait = client.frames.take(now)
        if wait:
            return self._limited(client, None, wait) or await self._flooded(client)
        try:
            frame = proto.parse(data, self.config.max_message_chars)
        except proto.ProtocolError as exc:
            return self._refuse(client, exc.frame()) or await self._flooded(client)
        if isinstance(frame, proto.Ping):
            client.post({"type": "pong", "data": frame.data})
        elif isinstance(frame, proto.Hello):
            await self._hello(client, frame)
        elif client.conversation_id is None:
            client.post(proto.error("not_allowed", "Say hello first: {\"type\": \"hello\", \"session\": null}.",
                                    getattr(frame, "id", None)))
        elif isinstance(frame, proto.SendMessage):
            return await self._accept(client, frame, now) or await self._flooded(client)
        elif isinstance(frame, proto.HistoryRequest):
            turns = await self.engine.history(client.conversation_id, frame.limit, frame.before)
            client.post(proto.history_page(turns, self.url_for, frame))
        elif isinstance(frame, proto.Feedback):
            await self._feedback(client, frame)
        elif isinstance(frame, proto.Rate):
            await self._rate(client, frame)
        elif isinstance(frame, proto.Profile):
            await self._profile(client, frame)
        return True

    async def _flooded(self, client: _Client) -> bool:
        await self._close_flood(client)
        return False

    def _limited(self, client: _Client, client_id: str | int | None, wait: float) -> bool:
        retry = round(max(wait, 0.1), 1)
        return self._refuse(client, proto.error("rate_limited", f"You're sending messages too quickly. Please wait "
                                                f"{retry:g} seconds.", client_id, retry_after=retry))

    # -- frames ---------------------------------------------------------------------------------
    async def _hello(self, client: _Client, frame: proto.Hello) -> None:
        if client.conversation_id is not None:
            client.post(proto.error("not_allowed", "This socket has already said hello."))
            return
        # A new session costs the client address a message token (resuming one is free), so a
        # script cannot fill the session table by reconnecting in a loop.
        ip_bucket = [(self._ip_limit, client.ip)]
        wait = await self._limiter.take(ip_bucket, peek=True)
        session = await self.sessions.open(frame.session, create=wait == 0.0)
        if session is None:
            self._limited(client, None, wait)
            return
        if not session.resumed:
            await self._limiter.take(ip_bucket)
        conv_id = session.conversation_id
        # Under the engine's per-conversation lock, no agent message or reply of this
        # conversation can be stored between reading the history and joining the tab set: the
        # tab sees each turn once, in the welcome's history or as a frame after it.
        async with self._conversation_guard(conv_id):
            history = await self.engine.history(conv_id, proto.WELCOME_TURNS) if session.resumed else []
            conv = await self.engine.store.get(conv_id) if session.resumed else None
            client.conversation_id = conv_id
            client.welcome_seq = history[-1].seq if history else 0
            self._by_conversation.setdefault(conv_id, set()).add(client)
            client.post(proto.welcome(
                session=session.token, conversation=conv_id, resumed=session.resumed, history=history,
                url_for=self.url_for, title=self.title, greeting=self.config.greeting,
                status=conv.status if conv else "bot", agent=conv.assigned_agent if conv else None,
                max_message_chars=self.config.max_message_chars,
                prechat=self.config.prechat and not (conv and _has_profile(conv))))
        log.info("webchat: conversation %s %s (%d tabs)", conv_id, "resumed" if session.resumed else "started",
                 len(self._by_conversation[conv_id]))
        if conv is not None and conv.status == "handed_off" and not conv.assigned_agent:
            place = await waiting.place_of(self.engine.store, conv_id, self.engine.clock())
            if place is not None:  # a resumed tab of a waiting customer: the queue line at once
                client.post(proto.outgoing(OutgoingMessage(conv_id, place.text, "system", event="queue",
                                                           data=place.data(False)), self.url_for))
        if session.resumed and await self.engine.pending(conversation_id=conv_id):
            self._spawn(self._answer_pending(conv_id))  # accepted, not answered: before a crash, say

    @contextlib.asynccontextmanager
    async def _conversation_guard(self, conversation_id: str) -> AsyncIterator[None]:
        # Reading the history under the engine's per-conversation lock means a turn stored in
        # that very instant is neither shown twice nor missed.
        async with self.engine.conversation_lock(conversation_id):
            yield

    async def _accept(self, client: _Client, frame: proto.SendMessage, now: float) -> bool:
        """Store the message (committed), then acknowledge it: an ack is a promise to answer."""
        conv_id = client.conversation_id
        assert conv_id is not None
        wait = await self._limiter.take([(self._session_limit, conv_id), (self._ip_limit, client.ip)])
        if wait:
            return self._limited(client, frame.id, wait)
        try:
            item = await self.engine.accept(IncomingMessage(conv_id, frame.text, self.name, conv_id),
                                            _message_key(frame), {"client_id": frame.id})
        except MessageRejected as exc:
            return self._refuse(client, proto.error("rejected", str(exc), frame.id))
        except StoreError:
            log.exception("webchat: could not store a message of conversation %s", conv_id)
            client.post(proto.error("server_error", "We could not take your message just now. Please send it "
                                    "again in a moment.", frame.id))
            return True
        client.post({"type": "ack", "for": "message", "id": frame.id})
        client.inbox.append((item, frame.id))
        if client.worker is None or client.worker.done():
            client.worker = self._spawn(self._work(client))
        return True

    async def _feedback(self, client: _Client, frame: proto.Feedback) -> None:
        assert client.conversation_id is not None
        try:
            await self.engine.feedback(client.conversation_id, frame.turn, frame.value)
        except (StoreError, ValueError):
            client.post(proto.error("not_found", f"There is no bot reply number {frame.turn} in this conversation.",
                                    frame.id))
            return
        client.post({"type": "ack", "for": "feedback", "id": frame.id, "turn": frame.turn, "value": frame.value})

    async def _rate(self, client: _Client, frame: proto.Rate) -> None:
        assert client.conversation_id is not None
        try:
            await self.engine.rate(client.conversation_id, frame.score)
        except (StoreError, ValueError):
            client.post(proto.error("not_allowed", "There is nothing to rate yet: send a message first.", frame.id))
            return
        client.post({"type": "ack", "for": "rate", "id": frame.id, "score": frame.score})

    async def _profile(self, client: _Client, frame: proto.Profile) -> None:
        """The pre-chat form: kept in the conversation's attributes, where the agent console shows it."""
        conv_id = client.conversation_id
        assert conv_id is not None
        given: dict[str, object] = {k: v for k, v in (("customer_name", frame.name), ("customer_email", frame.email))
                                    if v}
        await self.engine.store.get_or_create(conv_id, self.name, conv_id, given, self.engine.clock())
        client.post({"type": "ack", "for": "profile", "id": frame.id})

    # -- the worker ----------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _work(self, client: _Client) -> None:
        # No await between the emptiness check and returning: a message queued meanwhile
        # either is seen here or finds this task done and starts a new one.
        while client.inbox:
            message, client_id = client.inbox.popleft()
            await self._answer(client, message, client_id)

    async def _answer(self, client: _Client, item: InboxItem, client_id: str | int | None) -> None:
        conv_id, message = item.conversation_id, item.message
        self._broadcast(conv_id, {"type": "typing", "on": True})
        result: Reply | None = None
        try:
            async for part in self.engine.answer_stream(item):
                if isinstance(part, Reply):
                    result = part
                else:
                    client.post({"type": "delta", "id": client_id, "text": part})
        except MessageRejected as exc:
            client.post(proto.error("rejected", str(exc), client_id))
        except Exception:  # noqa: BLE001 - logged with the id; the customer is told, the socket lives on
            log.exception("webchat: failed to answer a message of conversation %s", conv_id)
            client.post(proto.error("server_error", "Sorry, something went wrong on our side. Please send that "
                                    "again in a moment.", client_id))
        if result is not None and result.repeat:  # answered before (a retransmission): this tab only
            client.post(proto.reply(result, client_id, self.url_for), result.turn_seq)
        elif result is not None:
            seq = result.turn_seq
            customer_seq = seq - 1 if seq is not None else None
            self._broadcast(conv_id, {"type": "customer", "id": client_id, "text": message.text, "turn": customer_seq},
                            customer_seq, skip=client)  # the other tabs of the session see what was asked
            frame = proto.dumps(proto.reply(result, client_id, self.url_for))
            client.post(frame)
            self._broadcast(conv_id, frame, seq, skip=client)
        self._broadcast(conv_id, {"type": "typing", "on": False})

    # -- HTTP --------------------------------------------------------------------------------------
    def _origin_allowed(self, origin: str, request: web.Request) -> bool:
        if "*" in self.config.allowed_origins:
            return True
        return net.origin_allowed(origin, request.headers, request.scheme, request.host, self.behind_proxy,
                                  self.public_url, also=self.config.allowed_origins)

    def _client_ip(self, request: web.Request) -> str:
        return net.client_ip(request.headers, request.remote, self.behind_proxy) or "unknown"

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[-1]
        return self._serve(request, name, {"Cache-Control": "no-cache"})

    async def demo_page(self, request: web.Request) -> web.StreamResponse:
        own = request.host
        if not _HOST.fullmatch(own):  # it goes into a header: "x; frame-ancestors *" would rewrite the policy
            return web.Response(status=400, text="the Host header is not a host name or address (with an optional "
                                "port)")
        styles = " ".join(f"'{h}'" for h in self._page_styles)
        csp = (f"default-src 'none'; script-src 'self'; style-src 'self' {styles}; img-src 'self' data:; "
               f"connect-src 'self' ws://{own} wss://{own}; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'self'")
        return self._serve(request, "chat.html", {"Cache-Control": "no-cache", "Content-Security-Policy": csp,
                                                  "X-Frame-Options": "SAMEORIGIN"})

    def _serve(self, request: web.Request, name: str, headers: dict[str, str]) -> web.StreamResponse:
        if name not in self._static:
            raise web.HTTPServiceUnavailable(text="the chat is starting")
        body, etag = self._static[name]
        headers = {**headers, "ETag": etag}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=STATIC[name], charset="utf-8", headers=headers)


def _has_profile(conv: Conversation) -> bool:
    return bool(conv.attributes.get("customer_name") or conv.attributes.get("customer_email"))


def _message_key(frame: proto.SendMessage) -> str | None:
    """The inbox id of a message: the client's id and the text, so a retransmission (same id,
    same text) is recognised and a client that reuses an id for another text is still answered.
    No id: nothing to recognise (None: the engine makes one up)."""
    if frame.id is None:
        return None
    return f"{json.dumps(frame.id)}#{hashlib.sha256(frame.text.encode('utf-8')).hexdigest()[:16]}"


# host[:port]: a DNS name or IPv4 address, or an [IPv6] address (what may appear in a CSP source)
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _csp_hash(source: str) -> str:
    import base64

    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii")
