"""A :class:`~botkit.channels.Connector` for tests: :class:`CollectingConnector`.

It plays both sides of a channel without a network: :meth:`CollectingConnector.customer_says`
is a customer writing in (through the engine of its :class:`~botkit.channels.ConnectorContext`,
as a real connector hands messages over), and everything the server asks it to deliver
(:meth:`~CollectingConnector.send`: agent messages, hand-off events) is recorded in ``sent``
instead of reaching anyone. Like the real connectors it answers, on ``start``, the messages
of its channel that were accepted but not answered before a restart.

Build it as a channel would be built (``create(ctx)`` validates ``channels.<name>``), or
directly: ``CollectingConnector(ConnectorContext("test", {}, engine, app, project))``; a test
that never serves HTTP may pass ``None`` for ``app`` and ``project``. It passes
:class:`~botkit.testing.ConnectorContract`.
"""

from __future__ import annotations

from collections.abc import Mapping

from botkit.channels import ConnectorContext, OutgoingMessage, validate_section
from botkit.errors import BotkitError
from botkit.schema import StrictModel
from botkit.types import Conversation, InboxItem, IncomingMessage, Reply


class CollectingConfig(StrictModel):
    """``channels.<name>`` for a collecting channel."""

    fail_sends: bool = False  # every send raises a BotkitError: a channel that cannot deliver


class CollectingConnector:
    """Records what it is asked to deliver; injects customer messages into the engine."""

    def __init__(self, ctx: ConnectorContext, config: CollectingConfig | None = None):
        self.name = ctx.name
        self.ctx = ctx
        self.engine = ctx.engine
        self.config = config or CollectingConfig()
        self.sent: list[tuple[Conversation, OutgoingMessage]] = []  # every delivered message, in order
        self.replies: list[Reply] = []  # every direct reply a customer got (customer_says, recovery)
        self.started = False

    def __repr__(self) -> str:
        return f"CollectingConnector(name={self.name!r}, sent={len(self.sent)}, started={self.started})"

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start taking messages, after answering what this channel accepted before a restart."""
        if self.started:
            return
        self.started = True
        pending = await self.engine.pending(self.name)
        for conversation_id in dict.fromkeys(item.conversation_id for item in pending):
            await self.engine.answer_pending(conversation_id, self._delivered)

    async def stop(self) -> None:
        self.started = False

    async def _delivered(self, item: InboxItem, reply: Reply) -> None:
        self.replies.append(reply)

    # -- inbound -------------------------------------------------------------------------------
    def conversation_id(self, customer: str) -> str:
        """The conversation of ``customer`` on this channel (``<name>:<customer>``)."""
        return f"{self.name}:{customer}"

    async def customer_says(self, text: str, *, customer: str = "customer", message_id: str | None = None,
                            attributes: Mapping[str, object] | None = None) -> Reply:
        """``customer`` writes ``text``: accepted and answered by the engine, the reply returned
        (and kept in ``replies``). ``message_id``: the channel's id, to test redelivery."""
        self._check_started("take a customer message")
        message = IncomingMessage(self.conversation_id(customer), text, self.name, customer, dict(attributes or {}))
        reply = await self.engine.handle(message, message_id)
        self.replies.append(reply)
        return reply

    # -- outbound ------------------------------------------------------------------------------
    async def send(self, conversation: Conversation, message: OutgoingMessage) -> None:
        """Record ``message`` for ``conversation`` (raises while stopped, or with ``fail_sends``)."""
        self._check_started("deliver a message")
        if self.config.fail_sends:
            raise BotkitError(f"channel {self.name}: delivery to conversation {conversation.id} failed "
                              "(fail_sends is set in its config)")
        self.sent.append((conversation, message))

    def messages(self, conversation_id: str | None = None) -> list[OutgoingMessage]:
        """What was delivered (to one conversation, or to all), in order."""
        return [m for c, m in self.sent if conversation_id is None or c.id == conversation_id]

    def texts(self, conversation_id: str | None = None) -> list[str]:
        return [m.text for m in self.messages(conversation_id)]

    def _check_started(self, what: str) -> None:
        if not self.started:
            raise BotkitError(f"channel {self.name}: cannot {what}: the connector is not started (call start())")


def create(ctx: ConnectorContext) -> CollectingConnector:
    """The factory: validates ``channels.<ctx.name>`` (errors name the key), then builds the connector."""
    return CollectingConnector(ctx, validate_section(ctx.name, CollectingConfig, ctx.config))


__all__ = ["CollectingConfig", "CollectingConnector", "create"]
