"""Responders: what turns a customer's question and the retrieved passages into a reply.

The seam is :class:`Responder` (start, close, respond). The embedded default is
:class:`ExtractiveResponder`, which needs no language model: it answers with the best FAQ
answer or article passage and cites it, asks which one is meant when two are close, and
says honestly that it does not know when nothing clears the threshold. Generative responders
(a local causal LM, an OpenAI-compatible server) live in :mod:`botkit.generation` and fall
back to this one whenever a generated reply fails or is not grounded in its passages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from botkit.types import Candidate, Hit, ResponderRequest, Source

__all__ = ["Responder", "ResponderRequest", "StreamingResponder", "source_of"]


class Responder(Protocol):
    """What every responder has. One that can stream also has ``respond_stream`` (see
    :class:`StreamingResponder`): the engine looks for it with ``getattr`` when a channel
    streams (``Engine.handle_stream``) and calls ``respond`` otherwise."""

    @property
    def name(self) -> str:
        """Shown in logs and /healthz; read-only here, so a responder may compute it (a
        ReloadingResponder names the one serving now)."""
        ...

    async def start(self) -> None:
        """Load models / open connections. Fails here, not at the first customer message."""
        ...

    async def close(self) -> None: ...

    async def respond(self, request: ResponderRequest) -> Candidate: ...


class StreamingResponder(Responder, Protocol):
    """A responder that streams: the optional part of :class:`Responder`."""

    def respond_stream(self, request: ResponderRequest) -> AsyncIterator[str | Candidate]:
        """Text deltas as they are written, then exactly one final :class:`Candidate` (the
        authoritative reply: when its text differs from the deltas, a channel replaces them)."""
        ...


def source_of(hit: Hit) -> Source:
    return Source(hit.article_id, hit.title, float(hit.score))
