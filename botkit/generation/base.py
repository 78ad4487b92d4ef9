"""The generator seam: something that turns chat messages into a stream of text deltas."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from botkit.generation.prompt import ChatMessage


@runtime_checkable
class Generator(Protocol):
    """A language model behind three calls.

    Implementations load models or open connections in :meth:`start` (never in ``__init__``)
    and raise :class:`botkit.errors.GenerationError` for every failure they can name: a model
    that cannot be loaded, a server error, a timeout. A consumer that stops iterating should
    close the stream (``contextlib.aclosing``) so the generator can stop work at once.
    """

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield the reply as text deltas, in order; their concatenation is the reply. An async
        generator (not just an iterator): consumers ``aclose()`` it to stop the model."""
        ...
