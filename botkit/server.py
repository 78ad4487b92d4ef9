"""``botkit serve``: one aiohttp application for every channel, the agent console, the KB
editor, a JSON API, ``/healthz`` and Prometheus ``/metrics``.

Composition only: the dialogue engine, the connectors and the pages are built elsewhere and
wired here. Start-up and clean-up are paired in ``cleanup_ctx`` (the engine starts before any
route can be hit and closes after the last in-flight reply); a connector failing to start
stops the whole server with its error rather than serving half a bot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from botkit.engine import Engine, Event
from botkit.project import Project
from botkit.types import Reply
from connectors.base import Connector, ConnectorContext, OutgoingMessage, factory

log = logging.getLogger(__name__)

ENGINE = web.AppKey("engine", Engine)
PROJECT = web.AppKey("project", Project)
CONNECTORS = web.AppKey("connectors", dict)  # name -> Connector
METRICS = web.AppKey("metrics", object)
KB = web.AppKey("kb", object)  # the engine's KnowledgeBase, for the editor


class Metrics:
    """Prometheus metrics of one server (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turns = Counter("botkit_turns", "customer messages answered", ["channel", "action"], registry=self.registry)
        self.turn_seconds = Histogram("botkit_turn_seconds", "time to reply to a customer message",
                                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                      registry=self.registry)
        self.handoffs = Counter("botkit_handoffs", "conversations handed to a human", ["reason"], registry=self.registry)
        self.waiting = Gauge("botkit_handoffs_waiting", "hand-offs waiting for an agent", registry=self.registry)
        self.events = Counter("botkit_events", "engine events", ["kind"], registry=self.registry)
        self.delivery_errors = Counter("botkit_delivery_errors", "messages a channel failed to deliver", ["channel"],
                                       registry=self.registry)
        self.started = time.time()

    def observe_turn(self, reply: Reply, seconds: float, channel: str = "") -> None:
        self.turns.labels(channel or "any", reply.action).inc()
        self.turn_seconds.observe(seconds)


def outgoing_for(event: Event) -> OutgoingMessage | None:
    """What the customer must be shown for an event that is not a direct reply."""
    conv_id = event.conversation.id
    if event.kind == "agent" and event.turn is not None:
        return OutgoingMessage(conv_id, event.turn.text, "agent", author=event.turn.author)
    if event.kind == "assigned" and event.handoff is not None:
        return OutgoingMessage(conv_id, f"{event.handoff.agent} from our team has joined the conversation.", "system",
                               author=event.handoff.agent or "", event="agent_joined")
    if event.kind == "bot" and event.turn is not None and event.turn.action == "returned":
        return OutgoingMessage(conv_id, event.turn.text, "bot", event="agent_left")
    if event.kind == "closed":
        return OutgoingMessage(conv_id, "This conversation has been closed. Write again any time.", "system",
                               event="closed")
    return None


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    metrics: Metrics = app[METRICS]  # type: ignore[assignment]
    await engine.start()
    engine.turn_observers.append(lambda reply, seconds: metrics.observe_turn(reply, seconds))

    async def deliver(event: Event) -> None:
        metrics.events.labels(event.kind).inc()
        if event.kind == "handoff" and event.handoff is not None:
            metrics.handoffs.labels(event.handoff.reason).inc()
        message = outgoing_for(event)
        connector: Connector | None = app[CONNECTORS].get(event.conversation.channel)
        if message is None or connector is None:
            return
        try:
            await connector.send(event.conversation, message)
        except Exception:  # noqa: BLE001 - one channel's failure must not stop the others
            metrics.delivery_errors.labels(connector.name).inc()
            log.exception("channel %s failed to deliver to conversation %s", connector.name, event.conversation.id)

    unsubscribe = engine.subscribe(deliver)
    try:
        yield
    finally:
        unsubscribe()
        await engine.close()


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
    stats = await engine.store.stats()  # type: ignore[attr-defined]
    kb = request.app[KB]
    return web.json_response({
        "status": "ok", "kb_version": getattr(kb, "indexed_version", None),
        "channels": sorted(request.app[CONNECTORS]), "conversations": stats["conversations"],
        "handoffs_waiting": stats["handoffs_waiting"],
    })


async def metrics_handler(request: web.Request) -> web.Response:
    metrics: Metrics = request.app[METRICS]  # type: ignore[assignment]
    stats = await request.app[ENGINE].store.stats()  # type: ignore[attr-defined]
    metrics.waiting.set(stats["handoffs_waiting"])
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def build_app(project: Project, engine: Engine | None = None) -> web.Application:
    """The whole server for a project (channels from ``channels`` in bot.yaml)."""
    from botkit.bot import build_engine

    engine = engine or build_engine(project)
    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[security_headers])
    app[PROJECT] = project
    app[ENGINE] = engine
    app[METRICS] = Metrics()
    app[KB] = getattr(engine.retriever, "kb", None)
    app[CONNECTORS] = {}
    app.cleanup_ctx.append(_engine_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    for name, section in project.config.channels.items():
        ctx = ConnectorContext(name, section or {}, engine, app, project, project.config.server.public_url)
        app[CONNECTORS][name] = factory(name)(ctx)
    app.cleanup_ctx.append(_connectors_ctx)
    _mount_pages(app)
    return app


def _mount_pages(app: web.Application) -> None:
    """The agent console and the KB editor (sign-in pages), when their modules are present."""
    try:
        from botkit.console import setup_console
    except ImportError:  # pragma: no cover - during development only
        setup_console = None
    try:
        from knowledge.admin import setup_kb_editor
    except ImportError:  # pragma: no cover
        setup_kb_editor = None
    if setup_console is not None:
        setup_console(app)
    if setup_kb_editor is not None:
        setup_kb_editor(app)
