"""The channel seam: how a connector plugs a messaging channel into botkit.

A connector has two sides. Inbound, it turns the channel's updates into
:class:`~botkit.types.IncomingMessage` and hands them to the engine it was given in its
:class:`ConnectorContext` (``engine.accept`` then ``engine.answer``/``answer_stream``, or
``engine.handle`` in one step), and it answers what was accepted before a restart
(``engine.pending`` / ``engine.answer_pending``) when it starts. Outbound,
:meth:`Connector.send` delivers what did not come as a direct reply: an agent's message
during a hand-off, "an agent joined", "you're back with the bot". Rich content (sources,
quick replies) degrades to text on channels that lack it: :func:`as_text`.

These types live in botkit's core so a connector (in-tree or a third-party package) needs
nothing of aiohttp to be *described*; the registry that finds connectors by name is
``connectors.base``. A connector proves it keeps the promises below by passing
:class:`botkit.testing.ConnectorContract`; :class:`botkit.testing.CollectingConnector` is a
fake for tests of everything around channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from botkit.errors import ConfigError
from botkit.types import Conversation, Source

if TYPE_CHECKING:
    from aiohttp import web

    from botkit.engine import Engine
    from botkit.project import Project


@dataclass(frozen=True)
class OutgoingMessage:
    """Something to show the customer outside a direct reply."""

    conversation_id: str
    text: str
    kind: Literal["bot", "agent", "system"] = "bot"
    author: str = ""  # the agent's display name for agent messages
    sources: tuple[Source, ...] = ()
    quick_replies: tuple[str, ...] = ()  # buttons where the channel has them
    event: str = ""  # "agent_joined", "agent_left", "closed", "queue", or "" for a plain message
    # event "queue": {"position": int, "expected_wait_s": float | None, "initial": bool}; a channel
    # that can update a status line shows each, one that can only post messages shows the initial one
    data: Mapping[str, object] = field(default_factory=dict)
    # the stored turn it shows (an agent's reply), if any: a channel that has just shown the
    # history up to that turn skips it (another worker's event can arrive after the history was read)
    turn: int | None = None


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
    """One messaging channel. Made by a :data:`ConnectorFactory` from a :class:`ConnectorContext`
    (which validates the channel's config section: a bad one is a :class:`~botkit.errors.ConfigError`
    naming ``channels.<name>.<key>``), started once before the server listens, stopped once
    when it shuts down (a second ``stop`` does nothing)."""

    name: str  # the channel name stored on conversations: the context's name ("webchat", "telegram", ...)

    async def start(self) -> None:
        """Open connections, register webhooks, start polling; answer messages accepted before a restart."""
        ...

    async def stop(self) -> None:
        """Stop taking messages; let in-flight replies finish."""
        ...

    async def send(self, conversation: Conversation, message: OutgoingMessage) -> None:
        """Deliver a message to the customer of ``conversation`` on this channel, in call order."""
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


def validate_section(name: str, model: Any, section: Mapping[str, Any] | None) -> Any:
    """Validate a channel's config section with its pydantic model; errors name channels.<name>.<key>."""
    from pydantic import ValidationError

    from botkit.config import describe_validation_error

    try:
        return model.model_validate(dict(section or {}))
    except ValidationError as exc:
        raise ConfigError("\n".join(f"bot.yaml: channels.{name}.{describe_validation_error(e, model)}"
                                    for e in exc.errors())) from None


__all__ = ["Connector", "ConnectorContext", "ConnectorFactory", "OutgoingMessage", "as_text", "validate_section"]
