"""Test helpers shipped with botkit: fakes of its seams and contract suites a backend's
tests subclass (see :mod:`botkit.testing.fakes`, :mod:`botkit.testing.store_contract`,
:mod:`botkit.testing.bus_contract`, :mod:`botkit.testing.lock_contract`, :mod:`botkit.testing.retriever_contract`,
:mod:`botkit.testing.embedder_contract`, :mod:`botkit.testing.connector_contract`).

Not imported by ``import botkit``. The contract suites import pytest, so they load on first
use (``from botkit.testing import EventBusContract``): the fakes work without pytest.
"""

from typing import Any

from botkit.events import InProcessEventBus
from botkit.locks import InProcessConversationLock
from botkit.testing.channel_fakes import CollectingConfig, CollectingConnector
from botkit.testing.embedder_fakes import HashEmbedder
from botkit.testing.fakes import InMemoryConversationStore, ScriptedResponder, StaticRetriever, Streamed, hit, words


def __getattr__(name: str) -> Any:
    """The contract suites, imported (with pytest) only when asked for."""
    if name == "ConversationStoreContract":
        from botkit.testing.store_contract import ConversationStoreContract

        return ConversationStoreContract
    if name == "EventBusContract":
        from botkit.testing.bus_contract import EventBusContract

        return EventBusContract
    if name == "ConversationLockContract":
        from botkit.testing.lock_contract import ConversationLockContract

        return ConversationLockContract
    if name == "RetrieverContract":
        from botkit.testing.retriever_contract import RetrieverContract

        return RetrieverContract
    if name == "EmbedderContract":
        from botkit.testing.embedder_contract import EmbedderContract

        return EmbedderContract
    if name in ("ConnectorContract", "ChannelHarness", "CONTRACT_NAME", "echo"):
        from botkit.testing import connector_contract

        return getattr(connector_contract, name)
    raise AttributeError(f"module 'botkit.testing' has no attribute {name!r}")


__all__ = ["CONTRACT_NAME", "ChannelHarness", "CollectingConfig", "CollectingConnector", "ConnectorContract",
           "ConversationLockContract", "ConversationStoreContract", "EmbedderContract", "EventBusContract",
           "HashEmbedder", "InMemoryConversationStore", "InProcessConversationLock", "InProcessEventBus",
           "RetrieverContract", "ScriptedResponder", "StaticRetriever", "Streamed", "echo", "hit", "words"]
