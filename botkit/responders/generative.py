"""A responder that writes replies with a language model, inside the knowledge base's limits.

Policy (why each step exists):

1. No generation when retrieval found nothing above the threshold, or when the extractive
   responder would ask which of several close articles is meant: a model must not invent an
   answer where the knowledge base has none, nor pick one of two candidates for the customer.
   The extractive candidate (the ``no_answer`` decline / "which of these?") is returned as it is.
2. Otherwise the model sees the best passages that clear the threshold (up to 3) and recent
   history, and writes a reply.
3. The reply is sent only if it is grounded in those passages (:func:`is_grounded` with
   ``dialogue.min_grounding``). A failed or timed-out generation, or an ungrounded reply, is
   replaced by the extractive answer, with ``fallback`` saying why as a code (``ungrounded``,
   ``timeout``, ``prompt_too_long``, ``not_started``, ``error``; see
   :data:`botkit.types.FALLBACK_CODES`) and ``note`` as readable detail.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from botkit.config import DialogueConfig
from botkit.errors import GenerationError
from botkit.generation.base import Generator
from botkit.generation.grounding import is_grounded
from botkit.generation.prompt import build_messages, passage_evidence, select_passages
from botkit.responders.base import source_of
from botkit.responders.extractive import ExtractiveResponder
from botkit.types import Candidate, Hit, ResponderRequest, confidence_of

log = logging.getLogger(__name__)

MAX_PASSAGES = 3


class GenerativeResponder:
    """Responder protocol on top of a :class:`Generator`, falling back to extractive answers.

    Args:
        generator: the language model (local or remote).
        fallback: answers when the model must not or could not (its ``clarify_margin`` applies).
        dialogue: ``history_turns`` and ``min_grounding`` are read from it.
        name: this responder's name; defaults to the generator's.
    """

    def __init__(self, generator: Generator, fallback: ExtractiveResponder, dialogue: DialogueConfig,
                 name: str | None = None):
        self.generator = generator
        self.fallback = fallback
        self.dialogue = dialogue
        self.name = name or generator.name

    def __repr__(self) -> str:
        return f"GenerativeResponder(generator={self.generator!r}, name={self.name!r})"

    async def start(self) -> None:
        await self.fallback.start()
        await self.generator.start()

    async def close(self) -> None:
        await self.generator.close()
        await self.fallback.close()

    async def __aenter__(self) -> GenerativeResponder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def passages_for(self, request: ResponderRequest) -> list[Hit]:
        """The hits a reply may be generated from (:func:`botkit.generation.prompt.select_passages`)."""
        return select_passages(request.retrieval, MAX_PASSAGES)

    async def respond(self, request: ResponderRequest) -> Candidate:
        """The final candidate of :meth:`respond_stream`, without the deltas."""
        final: Candidate | None = None
        async with aclosing(self.respond_stream(request)) as items:
            async for item in items:
                if isinstance(item, Candidate):
                    final = item
        assert final is not None  # respond_stream always ends with one
        return final

    async def respond_stream(self, request: ResponderRequest) -> AsyncGenerator[str | Candidate, None]:
        """Yield text deltas as the model writes, then exactly one final :class:`Candidate`.

        When the final candidate's text differs from the streamed text (fallback), a channel
        that showed the deltas should replace them with the candidate's text.
        """
        result = request.retrieval
        if not result.answered or len(self.fallback.close_candidates(result)) > 1:
            yield await self.fallback.respond(request)
            return
        passages = self.passages_for(request)
        messages = build_messages(request, passages, self.dialogue.history_turns, request.bot_name)
        pieces: list[str] = []
        try:
            async with aclosing(self.generator.stream(messages)) as deltas:
                async for delta in deltas:
                    pieces.append(delta)
                    yield delta
        except (GenerationError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("conversation %s: %s failed, extractive fallback: %s",
                        request.message.conversation_id, self.generator.name, reason)
            yield self._fallback(request, fallback_code(exc), f"generation failed: {reason}")
            return
        text = "".join(pieces).strip()
        # Checked against exactly what the model saw: headings plus trimmed, de-marked passages.
        ok, reason = is_grounded(text, [passage_evidence(h) for h in passages], self.dialogue.min_grounding)
        if not ok:
            log.info("conversation %s: generated reply not grounded (%s), extractive fallback",
                     request.message.conversation_id, reason)
            yield self._fallback(request, "ungrounded", f"generated reply not grounded: {reason}")
            return
        yield Candidate("answer", text, confidence_of(result), tuple(source_of(h) for h in passages),
                        responder=self.generator.name)

    def _fallback(self, request: ResponderRequest, code: str, note: str) -> Candidate:
        result = request.retrieval
        return dataclasses.replace(self.fallback.answer_with(result.hits[0], confidence_of(result)), fallback=code,
                                   note=note)


def fallback_code(exc: BaseException) -> str:
    """The fallback code for a failed generation: ``timeout`` for a time-out, the error's own
    ``code`` when it has one (``prompt_too_long``, ``not_started``), else ``error``."""
    code = getattr(exc, "code", None)
    if isinstance(exc, TimeoutError) or code == "timeout":
        return "timeout"
    return code if isinstance(code, str) and code else "error"

