"""Responders: what turns a customer's question and the retrieved passages into a reply.

The seam is :class:`Responder` (start, close, respond). The embedded default is
:class:`ExtractiveResponder`, which needs no language model: it answers with the best FAQ
answer or article passage and cites it, asks which one is meant when two are close, and
says honestly that it does not know when nothing clears the threshold. Generative responders
(a local causal LM, an OpenAI-compatible server) live in :mod:`botkit.generation` and fall
back to this one whenever a generated reply fails or is not grounded in its passages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from botkit.types import Candidate, Hit, IncomingMessage, SearchResult, Source, Turn

DONT_KNOW = ("I'm sorry, I couldn't find an answer to that in our help centre. Could you put it another way? "
             "If you'd rather, I can connect you with a member of our team.")
MAX_PASSAGE_CHARS = 1200


@dataclass(frozen=True)
class ResponderRequest:
    query: str  # the customer's message after follow-up resolution
    message: IncomingMessage
    history: tuple[Turn, ...]  # earlier turns of the conversation, oldest first
    retrieval: SearchResult
    bot_name: str = "botkit"


class Responder(Protocol):
    """What every responder has. One that can stream also has ``respond_stream`` (see
    :class:`StreamingResponder`): the engine looks for it with ``getattr`` when a channel
    streams (``Engine.handle_stream``) and calls ``respond`` otherwise."""

    name: str

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


def trim_passage(text: str, limit: int = MAX_PASSAGE_CHARS) -> str:
    """Cut at a paragraph or sentence end so a long passage stays readable."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    if cut < limit // 2:
        cut = max(text.rfind(". ", 0, limit) + 1, limit // 2)
    return text[:cut].rstrip() + " …"


def clean_markdown(text: str) -> str:
    """Drop Markdown emphasis/code marks that read badly on plain-text channels."""
    return re.sub(r"(\*\*|__|`)", "", text)


class ExtractiveResponder:
    """Answers with the knowledge base's own words. No model, no invention."""

    name = "extractive"

    def __init__(self, clarify_margin: float = 0.02, dont_know: str = DONT_KNOW):
        self.clarify_margin = clarify_margin
        self.dont_know = dont_know

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def close_candidates(self, result: SearchResult) -> list[Hit]:
        """The top hit and any others within the clarify margin (all above the threshold)."""
        if not result.answered:
            return []
        top = result.hits[0]
        return [top] + [h for h in result.hits[1:3]
                        if h.score >= result.threshold and top.score - h.score < self.clarify_margin]

    async def respond(self, request: ResponderRequest) -> Candidate:
        result = request.retrieval
        best = result.best
        if best is None or not result.answered:
            return Candidate("answer", self.dont_know, float(best.score) if best else 0.0, (), grounded=False,
                             responder=self.name)
        close = self.close_candidates(result)
        if len(close) > 1:
            options = tuple(source_of(h) for h in close)
            listing = "\n".join(f"{i}. {h.title}" for i, h in enumerate(close, 1))
            text = f"I can help with that. Which of these is closest to what you need?\n{listing}\n(Reply with a number or the topic.)"
            return Candidate("clarify", text, float(best.score), (), responder=self.name, options=options)
        return self.answer_with(best)

    def answer_with(self, hit: Hit) -> Candidate:
        text = clean_markdown(trim_passage(hit.passage))
        return Candidate("answer", text, float(hit.score), (source_of(hit),), responder=self.name)
