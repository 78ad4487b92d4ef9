"""The contract every :class:`~botkit.channels.Connector` must pass.

A connector's tests subclass :class:`ConnectorContract` and provide two fixtures:

- ``make_connector``: a function ``(name, config) -> Connector`` that builds the connector
  the way the server does, with its factory and a :class:`~botkit.channels.ConnectorContext`
  named ``name`` whose ``config`` is ``config`` (not started);
- ``channel``: a started :class:`ChannelHarness` (stopped afterwards): the connector, the
  engine behind it, and the customer's side of the channel (a browser's socket, a fake
  Bot API, ...), so the tests can write as a customer and see what the customer sees.

The engine may run on :mod:`botkit.testing`'s fakes; with ``ScriptedResponder(echo)``
(:func:`echo`) every reply names the question it answers, which the tests check::

    from botkit.testing import ChannelHarness, ConnectorContract

    class TestMyChannel(ConnectorContract):
        @pytest.fixture
        def make_connector(self, engine):
            return lambda name, config: my_channel.create(ConnectorContext(name, config, engine, app, project))

        @pytest.fixture
        async def channel(self, ...):
            ...  # start the connector, yield a MyHarness(ChannelHarness), stop it

The tests are ``async`` (pytest-asyncio, ``asyncio_mode = "auto"``). They check what the
server relies on: the channel is named by its context (conversations are routed by that
name), a bad config section is a ConfigError naming ``channels.<name>.<key>``, a customer's
message reaches the engine and its reply reaches the customer, :meth:`Connector.send`
delivers an agent's message, in order, and ``stop`` may be called twice.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from botkit.channels import Connector, OutgoingMessage
from botkit.errors import ConfigError
from botkit.types import Candidate, Conversation, ResponderRequest

CONTRACT_NAME = "contract-channel"  # not any connector's usual name: a hard-coded name fails the contract


def echo(request: ResponderRequest) -> Candidate:
    """A ScriptedResponder script: the reply quotes the question, so a reply names what it answers."""
    return Candidate("answer", f"You asked: {request.query}", 0.9, responder="echo")


class ChannelHarness(ABC):
    """A started connector, its engine, and the customer's end of the channel."""

    connector: Connector
    name: str  # the name its context had

    @abstractmethod
    async def open_conversation(self, text: str) -> tuple[Conversation, str]:
        """A new customer writes ``text``; returns the stored conversation and the reply text
        the customer received (as the channel shows it)."""

    @abstractmethod
    async def say(self, conversation: Conversation, text: str) -> str:
        """The customer of ``conversation`` writes again; returns the reply text received."""

    @abstractmethod
    async def received(self, conversation: Conversation, count: int) -> list[str]:
        """The texts of the first ``count`` messages the customer got outside direct replies
        (from ``send``), waiting a few seconds for them; fails if fewer arrive."""

    @abstractmethod
    async def stored_texts(self, conversation: Conversation) -> list[tuple[str, str]]:
        """(role, text) of the conversation's stored turns, oldest first."""


MakeConnector = Callable[[str, Mapping[str, Any]], Connector]


class ConnectorContract:
    def test_it_is_a_connector_named_by_its_context(self, make_connector: MakeConnector) -> None:
        connector = make_connector(CONTRACT_NAME, {})
        assert isinstance(connector, Connector)
        assert connector.name == CONTRACT_NAME

    def test_a_bad_config_section_is_a_config_error_naming_the_key(self, make_connector: MakeConnector) -> None:
        with pytest.raises(ConfigError, match=rf"channels\.{CONTRACT_NAME}\.no_such_setting"):
            make_connector(CONTRACT_NAME, {"no_such_setting": 1})

    async def test_a_customer_message_is_answered_and_stored_on_this_channel(self, channel: ChannelHarness) -> None:
        conversation, reply = await channel.open_conversation("where is my parcel?")
        assert "where is my parcel?" in reply
        assert conversation.channel == channel.connector.name == channel.name
        again = await channel.say(conversation, "and my refund?")
        assert "and my refund?" in again
        stored = await channel.stored_texts(conversation)
        assert [role for role, _ in stored] == ["customer", "bot", "customer", "bot"]
        assert stored[0][1] == "where is my parcel?" and stored[2][1] == "and my refund?"
        assert "where is my parcel?" in stored[1][1] and "and my refund?" in stored[3][1]

    async def test_send_delivers_an_agent_message_to_the_customer(self, channel: ChannelHarness) -> None:
        conversation, _ = await channel.open_conversation("can I talk to a person?")
        await channel.connector.send(conversation, OutgoingMessage(conversation.id, "Hi, Dana here: let me check.",
                                                                   "agent", author="Dana"))
        (text,) = await channel.received(conversation, 1)
        assert "Hi, Dana here: let me check." in text

    async def test_sent_messages_arrive_in_the_order_they_were_sent(self, channel: ChannelHarness) -> None:
        conversation, _ = await channel.open_conversation("hello")
        words = ["first", "second", "third", "fourth"]
        for word in words:
            await channel.connector.send(conversation, OutgoingMessage(conversation.id, f"message {word}", "agent",
                                                                       author="Dana"))
        texts = await channel.received(conversation, len(words))
        assert [next(w for w in words if f"message {w}" in t) for t in texts] == words

    async def test_messages_of_two_conversations_do_not_cross(self, channel: ChannelHarness) -> None:
        (a, _), (b, _) = await asyncio.gather(channel.open_conversation("question from A"),
                                              channel.open_conversation("question from B"))
        assert a.id != b.id
        await channel.connector.send(b, OutgoingMessage(b.id, "for B only", "agent", author="Dana"))
        await channel.connector.send(a, OutgoingMessage(a.id, "for A only", "agent", author="Dana"))
        (to_a,) = await channel.received(a, 1)
        (to_b,) = await channel.received(b, 1)
        assert "for A only" in to_a and "for B only" in to_b

    async def test_stop_can_be_called_twice(self, channel: ChannelHarness) -> None:
        await channel.open_conversation("hello")
        await asyncio.wait_for(channel.connector.stop(), 30)
        await asyncio.wait_for(channel.connector.stop(), 30)


__all__ = ["CONTRACT_NAME", "ChannelHarness", "ConnectorContract", "MakeConnector", "echo"]
