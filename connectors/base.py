"""The channel seam: how a connector plugs a messaging channel into botkit.

A connector has two sides. Inbound, it turns the channel's updates into
:class:`~botkit.types.IncomingMessage` and calls ``engine.handle`` (or ``handle_stream``).
Outbound, :meth:`Connector.send` delivers what did not come as a direct reply: an agent's
message during a hand-off, "an agent joined", "you're back with the bot". Rich content
(sources, quick replies) degrades to text on channels that lack it: :func:`as_text`.

Connectors are found by name: the built-in ones, plus any installed package that declares an
entry point in the ``botkit.connectors`` group, e.g. in its pyproject.toml::

    [project.entry-points."botkit.connectors"]
    whatsapp = "botkit_whatsapp:create"

where ``create(context: ConnectorContext) -> Connector``. botkit itself needs no change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from botkit.errors import ConfigError
from botkit.types import Conversation, Source

if TYPE_CHECKING:
    from aiohttp import web

    from botkit.engine import Engine
    from botkit.project import Project

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "botkit.connectors"


@dataclass(frozen=True)
class OutgoingMessage:
    """Something to show the customer outside a direct reply."""

    conversation_id: str
    text: str
    kind: Literal["bot", "agent", "system"] = "bot"
    author: str = ""  # the agent's display name for agent messages
    sources: tuple[Source, ...] = ()
    quick_replies: tuple[str, ...] = ()  # buttons where the channel has them
    event: str = ""  # "agent_joined", "agent_left", "closed", or "" for a plain message


def as_text(message: OutgoingMessage, *, with_sources: bool = True) -> str:
    """The message for a text-only channel: sources and quick replies written out."""
    parts = [message.text]
    if with_sources and message.sources:
        parts.append("Sources: " + "; ".join(s.title for s in message.sources))
    if message.quick_replies:
        parts.append("\n".join(f"{i}. {q}" for i, q in enumerate(message.quick_replies, 1)))
    return "\n\n".join(p for p in parts if p)


@runtime_checkable
class Connector(Protocol):
    name: str  # the channel name stored on conversations ("webchat", "telegram", ...)

    async def start(self) -> None:
        """Open connections, register webhooks, start polling."""
        ...

    async def stop(self) -> None:
        """Stop taking messages; let in-flight replies finish."""
        ...

    async def send(self, conversation: Conversation, message: OutgoingMessage) -> None:
        """Deliver a message to the customer of ``conversation`` on this channel."""
        ...


@dataclass
class ConnectorContext:
    """What a connector is given when it is created."""

    name: str
    config: Mapping[str, Any]  # the channel's section of bot.yaml (the connector validates it)
    engine: "Engine"
    app: "web.Application"  # add routes (under /channels/<name>/ by convention) and cleanup hooks here
    project: "Project"
    public_url: str | None = None  # the externally visible base URL (for webhooks)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.project.root


ConnectorFactory = Callable[[ConnectorContext], Connector]
_BUILTIN: dict[str, str] = {
    "webchat": "connectors.webchat:create",
    "telegram": "connectors.telegram:create",
}


def _load(target: str) -> ConnectorFactory:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)  # type: ignore[no-any-return]


def available() -> dict[str, str]:
    """Connector names and where they come from (built in, or an installed package)."""
    found = {name: f"builtin ({target})" for name, target in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = f"{ep.dist.name if ep.dist else 'package'} ({ep.value})"
    return found


def factory(name: str) -> ConnectorFactory:
    """The factory for a channel name; installed packages can add and override names."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    raise ConfigError(f"channels.{name}: no connector named {name!r} (available: {', '.join(sorted(available()))}); "
                      f"a third-party connector registers itself in the {ENTRY_POINT_GROUP!r} entry-point group")


def validate_section(name: str, model: Any, section: Mapping[str, Any] | None) -> Any:
    """Validate a channel's config section with its pydantic model; errors name channels.<name>.<key>."""
    from pydantic import ValidationError

    from botkit.config import describe_validation_error

    try:
        return model.model_validate(dict(section or {}))
    except ValidationError as exc:
        raise ConfigError("\n".join(f"bot.yaml: channels.{name}.{describe_validation_error(e, model)}" for e in exc.errors())) from None
