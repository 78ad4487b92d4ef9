"""``botkit serve``: one aiohttp application for every channel, the agent console, the KB
editor, a JSON API, ``/healthz`` and Prometheus ``/metrics``.

Composition only: the dialogue engine, the connectors and the pages are built elsewhere and
wired here. Start-up and clean-up are paired in ``cleanup_ctx`` (the engine starts before any
route can be hit and closes after the last in-flight reply); a connector failing to start
stops the whole server with its error rather than serving half a bot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from botkit import waiting as waiting_mod
from botkit.app.keys import CONNECTORS, ENGINE, KB, METRICS, PROJECT
from botkit.config import ServerConfig
from botkit.engine import Engine
from botkit.events import Event
from botkit.project import Project
from botkit.types import Conversation, Reply
from connectors.base import Connector, ConnectorContext, OutgoingMessage, factory
from connectors.webchat.limits import RATE_LIMITER

log = logging.getLogger(__name__)
QUEUE_MOVES = frozenset({"handoff", "assigned", "returned", "closed"})



class Metrics:
    """Prometheus metrics of one server (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turns = Counter("botkit_turns", "customer messages answered", ["channel", "action"],
                             registry=self.registry)
        self.turn_seconds = Histogram("botkit_turn_seconds", "time to reply to a customer message",
                                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                      registry=self.registry)
        self.handoffs = Counter("botkit_handoffs", "conversations handed to a human", ["reason"],
                                registry=self.registry)
        self.waiting = Gauge("botkit_handoffs_waiting", "hand-offs waiting for an agent", registry=self.registry)
        self.events = Counter("botkit_events", "engine events", ["kind"], registry=self.registry)
        self.delivery_errors = Counter("botkit_delivery_errors", "messages a channel failed to deliver", ["channel"],
                                       registry=self.registry)
        self.started = time.time()

    def observe_turn(self, reply: Reply, seconds: float) -> None:
        self.turns.labels(reply.channel or "unknown", reply.action).inc()
        self.turn_seconds.observe(seconds)


class QueryCacheCollector(Collector):
    """The knowledge base's query cache in /metrics: hits, misses and entries (knowledge/query_cache.py)."""

    def __init__(self, kb: object):
        self.kb = kb

    def collect(self) -> Iterator[Metric]:
        cache = getattr(self.kb, "query_cache", None)
        if cache is None:
            return
        stats = cache.stats()
        yield CounterMetricFamily("botkit_query_cache_hits", "searches answered from the query cache "
                                  "(a question already asked at the same KB version)", value=stats.hits)
        yield CounterMetricFamily("botkit_query_cache_misses", "searches the query cache did not have",
                                  value=stats.misses)
        yield GaugeMetricFamily("botkit_query_cache_entries", "results in the query cache (at most "
                                "knowledge.retrieval.query_cache_size)", value=stats.size)


def outgoing_for(event: Event) -> OutgoingMessage | None:
    """What the customer must be shown for an event that is not a direct reply."""
    conv_id = event.conversation.id
    if event.kind == "agent" and event.turn is not None:
        return OutgoingMessage(conv_id, event.turn.text, "agent", author=event.turn.author, turn=event.turn.seq)
    if event.kind == "assigned" and event.handoff is not None:
        return OutgoingMessage(conv_id, f"{event.handoff.agent} from our team has joined the conversation.", "system",
                               author=event.handoff.agent or "", event="agent_joined")
    if event.kind == "bot" and event.turn is not None and event.turn.action == "returned":
        return OutgoingMessage(conv_id, event.turn.text, "bot", event="agent_left", turn=event.turn.seq)
    if event.kind == "closed":
        return OutgoingMessage(conv_id, "This conversation has been closed. Write again any time.", "system",
                               event="closed")
    return None


def follows_other_workers(connector: Connector) -> bool:
    """Whether ``connector`` sends other workers' events too (it serves clients connected to this
    process, as the web chat does), or only this worker's (an outside API: sent once, by the
    worker that published the event)."""
    return bool(getattr(connector, "follows_other_workers", False))


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    metrics: Metrics = app[METRICS]  # type: ignore[assignment]
    await engine.start()
    engine.turn_observers.append(metrics.observe_turn)

    async def deliver(event: Event) -> None:
        if not event.remote:  # another worker's event (a Redis bus) is counted by that worker
            metrics.events.labels(event.kind).inc()
            if event.kind == "handoff" and event.handoff is not None:
                metrics.handoffs.labels(event.handoff.reason).inc()
        message = outgoing_for(event)
        connector: Connector | None = app[CONNECTORS].get(event.conversation.channel)
        if message is None or connector is None or (event.remote and not follows_other_workers(connector)):
            return
        try:
            await connector.send(event.conversation, message)
        except Exception:  # noqa: BLE001 - one channel's failure must not stop the others
            metrics.delivery_errors.labels(connector.name).inc()
            log.exception("channel %s failed to deliver to conversation %s", connector.name, event.conversation.id)

    moves: asyncio.Queue[Event] = asyncio.Queue()

    async def queue_moved(event: Event) -> None:  # called under the conversation's lock: never waits
        if event.kind in QUEUE_MOVES:
            moves.put_nowait(event)

    async def queue_notices() -> None:
        """Tell every waiting customer their place in the queue and the expected wait, each time
        the queue moved (a new hand-off, one taken, returned or closed); moves that came
        together are answered with one round of notices."""
        while True:
            batch = [await moves.get()]
            while not moves.empty():
                batch.append(moves.get_nowait())
            try:
                await send_places({e.handoff.conversation_id for e in batch if e.kind == "handoff" and e.handoff},
                                  everywhere=not all(e.remote for e in batch))
            except Exception:  # noqa: BLE001 - the next move sends fresh notices
                log.exception("could not tell waiting customers their place in the queue")

    async def send_places(new: set[str], everywhere: bool = True) -> None:
        """``everywhere`` False (only other workers' moves): only to channels that serve this
        process's own clients; the worker where the queue moved tells the rest (once)."""
        now = engine.clock()
        waiting = await engine.store.handoffs("waiting")
        pickups = await engine.store.recent_pickups(waiting_mod.SAMPLES)
        for place in waiting_mod.places(waiting, pickups, now):
            h = place.handoff
            connector = app[CONNECTORS].get(h.channel)
            if connector is None or not (everywhere or follows_other_workers(connector)):
                continue
            data = place.data(h.conversation_id in new)
            conv = Conversation(h.conversation_id, h.channel, h.customer_id, "handed_off", h.created_at, {})
            try:
                await connector.send(conv, OutgoingMessage(h.conversation_id, place.text, "system", event="queue",
                                                           data=data))
            except Exception:  # noqa: BLE001 - a notice that failed is replaced by the next one
                metrics.delivery_errors.labels(connector.name).inc()
                log.exception("channel %s failed to send the queue place to %s", connector.name, h.conversation_id)

    unsubscribe = engine.subscribe(deliver)
    unsubscribe_queue = engine.subscribe(queue_moved)
    notifier = asyncio.create_task(queue_notices(), name="queue-notices")
    try:
        yield
    finally:
        unsubscribe_queue()
        unsubscribe()
        notifier.cancel()
        await asyncio.gather(notifier, return_exceptions=True)
        await engine.close()


async def _limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    limiter = app[RATE_LIMITER]
    await limiter.start()
    try:
        yield
    finally:
        await limiter.close()


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    started: list[Connector] = []
    try:
        for connector in app[CONNECTORS].values():
            await connector.start()
            started.append(connector)
        yield
    finally:
        for connector in reversed(started):
            try:
                await connector.stop()
            except Exception:  # noqa: BLE001
                log.exception("channel %s failed to stop cleanly", connector.name)


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    stats = await engine.store.stats()
    kb = request.app[KB]
    connectors = request.app[CONNECTORS]  # not inline: mypy cannot pick __getitem__'s overload inside sorted()
    return web.json_response({
        "status": "ok", "kb_version": getattr(kb, "indexed_version", None),
        "channels": sorted(connectors), "conversations": stats["conversations"],
        "handoffs_waiting": stats["handoffs_waiting"],
    })


async def metrics_handler(request: web.Request) -> web.Response:
    metrics: Metrics = request.app[METRICS]  # type: ignore[assignment]
    stats = await request.app[ENGINE].store.stats()
    metrics.waiting.set(stats["handoffs_waiting"])
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def build_app(project: Project, engine: Engine | None = None) -> web.Application:
    """The whole server for a project (channels from ``channels`` in bot.yaml)."""
    from botkit.app.compose import build_engine, build_rate_limiter
    from botkit.app.storage_switch import connector_extras

    engine = engine or build_engine(project)
    app = web.Application(client_max_size=2 * 1024 * 1024,
                          middlewares=[http_guard(project.config.server), security_headers])
    app[PROJECT] = project
    app[ENGINE] = engine
    metrics = app[METRICS] = Metrics()
    app[KB] = getattr(engine.retriever, "kb", None)
    if app[KB] is not None:
        metrics.registry.register(QueryCacheCollector(app[KB]))
    app[CONNECTORS] = {}
    app.cleanup_ctx.append(_engine_ctx)
    limiter = build_rate_limiter(project.config.storage)
    if limiter is not None:  # BOTKIT_REDIS_URL: the workers share the web chat's and /help/search's buckets
        app[RATE_LIMITER] = limiter
        app.cleanup_ctx.append(_limiter_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    for name, section in project.config.channels.items():
        ctx = ConnectorContext(name, section or {}, engine, app, project, project.config.server.public_url,
                               extra=connector_extras(project))  # the shared stores the switch turned on
        app[CONNECTORS][name] = factory(name)(ctx)
    app.cleanup_ctx.append(_connectors_ctx)
    _mount_pages(app)
    return app


def _mount_pages(app: web.Application) -> None:
    """The agent console and the KB editor (sign-in pages), when their modules are present;
    the public help-centre pages (each KB entry at /help/articles/ID, /help/search)."""
    from botkit.app.help_pages import setup_help_pages

    setup_help_pages(app)
    try:
        from botkit.app.console import setup_console
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        setup_console(app)
        from botkit.app.console_tools import setup_console_tools

        setup_console_tools(app)
    try:
        from botkit.app.kb_editor import setup_kb_editor
    except ImportError:  # pragma: no cover
        pass
    else:
        setup_kb_editor(app)
    from botkit.app.analytics_page import setup_analytics

    setup_analytics(app)  # /analytics for operators (docs/analytics.md)


# -- HTTP limits: slow clients, disconnects, the connection cap -------------------------------------
#
# aiohttp bounds sizes but not time: a client that trickles its headers or body holds a
# connection (and a handler) for ever, and every client that hangs up mid-body is logged with a
# traceback. ``http_guard`` bounds the body and makes a disconnect one line; ``GuardedServer``
# bounds the headers and the number of connections. ``botkit serve`` runs both (see ``serve``).

RETRY_AFTER_S = 5
REFUSED_LINGER_S = 2.0  # how long a refused connection is read (and discarded) before it is closed
REFUSED_LOG_EVERY_S = 10.0  # refusals are summed up in one line per 10 s


_HEADERS_TIMEOUT_TEXT = b"the request headers did not arrive in time; send them at once\n"
_HEADERS_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                           b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(_HEADERS_TIMEOUT_TEXT), _HEADERS_TIMEOUT_TEXT))


class RequestBodyTimeout(TimeoutError):
    """The request body did not arrive within ``server.body_timeout_s``."""


def http_guard(config: ServerConfig) -> Middleware:
    """Middleware: a body not received within ``body_timeout_s`` of its headers is answered 408
    and the connection closed; a client that hangs up is one log line, not a traceback."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        timer = None
        if request.body_exists and not request.content.is_eof():
            loop = asyncio.get_running_loop()
            timer = loop.call_later(config.body_timeout_s, _body_too_slow, request, config.body_timeout_s)
        try:
            response: web.StreamResponse = await handler(request)
        except RequestBodyTimeout as exc:
            response = web.Response(status=408, text=f"{exc}\n")
        except ConnectionResetError as exc:  # aiohttp's ClientConnectionResetError is one too
            if request.transport is not None and not request.transport.is_closing():
                raise  # not this client: e.g. a connection the handler made itself
            log.info("client %s hung up during %s %s (%s)", request.remote, request.method, request.path,
                     exc or type(exc).__name__)
            return web.Response(status=400, text="client went away")  # never sent: the connection is gone
        finally:
            if timer is not None:
                timer.cancel()
        if isinstance(request.content.exception(), RequestBodyTimeout):
            response.force_close()  # the rest of the body is not waited for
        return response

    return guard


def _body_too_slow(request: web.Request, timeout: float) -> None:
    if request.content.is_eof():
        return
    log.warning("dropped client %s: the body of %s %s did not arrive within %gs (server.body_timeout_s)",
                request.remote, request.method, request.path, timeout)
    request.content.set_exception(RequestBodyTimeout(
        f"the request body did not arrive within {timeout:g}s (server.body_timeout_s); send it at once, or "
        "raise the limit"))


class _Refused(asyncio.Protocol):
    """One connection over ``server.max_connections``: answered 503 with Retry-After, then closed.

    What the client sends is read and discarded until it closes (at most ``REFUSED_LINGER_S``):
    closing a socket with unread data would reset it, and the client would lose the answer."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.answer)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class GuardedServer(web.Server):
    """aiohttp's protocol factory with a cap on open connections and a deadline for the first
    request's headers (later requests on a keep-alive connection: ``keepalive_timeout_s``)."""

    def __init__(self, handler: Any, *, limits: ServerConfig, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self._inner_factory = self.request_factory
        self.request_factory = self._request_started
        self._open: set[RequestHandler] = set()
        self._pending: dict[RequestHandler, float] = {}  # made, not yet connected: when
        self._header_timers: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._refused = 0
        self._refused_logged_at = float("-inf")
        self._refused_flush: asyncio.TimerHandle | None = None
        body = (f"The server is at its limit of {limits.max_connections} connections "
                f"(server.max_connections); try again in {RETRY_AFTER_S} seconds.\n").encode()
        self._answer = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                        % (RETRY_AFTER_S, len(body), body))

    @classmethod
    def replacing(cls, made: web.Server, limits: ServerConfig) -> GuardedServer:
        """The same server as ``made`` (handler, request factory, settings), guarded."""
        return cls(made.request_handler, request_factory=made.request_factory, limits=limits,
                   **made._kwargs)  # noqa: SLF001 - the settings AppRunner built it with

    @property
    def open_connections(self) -> int:
        loop = asyncio.get_running_loop()
        # a transport that failed before connecting never reports back: forget it after a minute
        for handler, made in list(self._pending.items()):
            if loop.time() - made > 60:
                del self._pending[handler]
        return len(self._open) + len(self._pending)

    def __call__(self) -> Any:
        if self.open_connections >= self.limits.max_connections:
            self._note_refused()
            return _Refused(self._answer)
        handler = super().__call__()
        self._pending[handler] = asyncio.get_running_loop().time()
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._pending.pop(handler, None)
        self._open.add(handler)
        loop = asyncio.get_running_loop()
        self._header_timers[handler] = loop.call_later(self.limits.header_timeout_s, self._headers_too_slow, handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._open.discard(handler)
        timer = self._header_timers.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _request_started(self, message: Any, payload: Any, protocol: RequestHandler, writer: Any,
                         task: Any) -> web.BaseRequest:
        timer = self._header_timers.pop(protocol, None)
        if timer is not None:
            timer.cancel()
        return self._inner_factory(message, payload, protocol, writer, task)

    def _headers_too_slow(self, handler: RequestHandler) -> None:
        self._header_timers.pop(handler, None)
        transport = self._connections.get(handler)
        peer = transport.get_extra_info("peername") if transport is not None else None
        log.warning("dropped client %s: no complete request headers within %gs of connecting "
                    "(server.header_timeout_s)", peer[0] if peer else "unknown", self.limits.header_timeout_s)
        if transport is not None and not transport.is_closing():
            transport.write(_HEADERS_TIMEOUT_ANSWER)
        handler.force_close()

    def _note_refused(self) -> None:
        """At most one log line per ``REFUSED_LOG_EVERY_S`` however many are refused (a flood
        would fill the disk otherwise); the ones in between are counted in the next line."""
        self._refused += 1
        loop = asyncio.get_running_loop()
        wait = self._refused_logged_at + REFUSED_LOG_EVERY_S - loop.time()
        if wait <= 0:
            self._log_refused()
        elif self._refused_flush is None:
            self._refused_flush = loop.call_later(wait, self._log_refused)

    def _log_refused(self) -> None:
        self._refused_flush = None
        if self._refused:
            log.warning("refused %d connection%s: %d are open, the limit is server.max_connections=%d",
                        self._refused, "" if self._refused == 1 else "s", self.open_connections,
                        self.limits.max_connections)
        self._refused, self._refused_logged_at = 0, asyncio.get_running_loop().time()


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` serving through a :class:`GuardedServer` with ``server`` settings."""

    def __init__(self, app: web.Application, limits: ServerConfig, **kwargs: Any) -> None:
        kwargs.setdefault("access_log", None)
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout_s,
                         shutdown_timeout=limits.shutdown_timeout_s, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        return GuardedServer.replacing(await super()._make_server(), self.limits)


async def start(app: web.Application, host: str, port: int, limits: ServerConfig,
                handle_signals: bool = False) -> GuardedRunner:
    """Start serving ``app`` on ``host:port`` (0: any free port, see ``runner.addresses``)."""
    runner = GuardedRunner(app, limits, handle_signals=handle_signals)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def serve(app: web.Application, host: str, port: int, limits: ServerConfig) -> None:
    """Serve until SIGINT/SIGTERM, then shut down cleanly (in-flight replies get
    ``shutdown_timeout_s``): ``web.run_app`` with the guarded server."""

    async def main() -> None:
        runner = await start(app, host, port, limits, handle_signals=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
            loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
