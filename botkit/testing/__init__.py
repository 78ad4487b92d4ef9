"""Test helpers shipped with botkit: fakes of its seams and contract suites a backend's
tests subclass (see :mod:`botkit.testing.fakes`, :mod:`botkit.testing.store_contract`).

Not imported by ``import botkit``; it imports pytest, so use it from tests only.
"""

from botkit.testing.fakes import InMemoryConversationStore, ScriptedResponder, StaticRetriever, Streamed, hit, words
from botkit.testing.store_contract import ConversationStoreContract

__all__ = ["ConversationStoreContract", "InMemoryConversationStore", "ScriptedResponder", "StaticRetriever",
           "Streamed", "hit", "words"]
