"""Test helpers shipped with botkit: contract suites a backend's tests subclass.

Not imported by ``import botkit``; it imports pytest, so use it from tests only.
"""

from botkit.testing.store_contract import ConversationStoreContract

__all__ = ["ConversationStoreContract"]
