"""The embedded default responder: the knowledge base's own words, no language model.

When nothing clears the threshold it declines: a ``no_answer`` candidate that says so
("I couldn't find an answer..."), cites nothing and is not grounded, so channels, rules and
metrics can tell a decline from an answer (docs/confidence.md)."""

from __future__ import annotations

from dataclasses import replace

from botkit import language
from botkit.responders.base import source_of
from botkit.text import clean_markdown, trim_passage
from botkit.types import Candidate, Hit, ResponderRequest, SearchResult, confidence_of, probability

DONT_KNOW = ("I'm sorry, I couldn't find an answer to that in our help centre. Could you put it another way? "
             "If you'd rather, I can connect you with a member of our team.")


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

    def decline(self, result: SearchResult | None) -> Candidate:
        """The ``no_answer`` candidate: the "couldn't find" text, no sources, not grounded; its
        confidence is how likely the best hit would have been right (low, or 0 without hits)."""
        text = self.dont_know
        if result is not None and result.in_language and self.dont_know == DONT_KNOW:
            text = language.DONT_KNOW.get(result.language, text)  # the customer's language, where we have it
        return Candidate("no_answer", self.in_language(text, result), confidence_of(result), (), grounded=False,
                         responder=self.name)

    @staticmethod
    def in_language(text: str, result: SearchResult | None) -> str:
        """``text``, after a fixed English sentence when the KB has nothing in the customer's language
        (a Thai question to an English help centre: the reply says so, then answers in English)."""
        if result is None or result.in_language or not result.language:
            return text
        return f"{language.not_in_language(result.language, result.kb_languages)}\n\n{text}"

    async def respond(self, request: ResponderRequest) -> Candidate:
        result = request.retrieval
        best = result.best
        if best is None or not result.answered:
            return self.decline(result)
        close = self.close_candidates(result)
        if len(close) > 1:
            options = tuple(source_of(h) for h in close)
            listing = "\n".join(f"{i}. {h.title}" for i, h in enumerate(close, 1))
            text = (f"I can help with that. Which of these is closest to what you need?\n{listing}\n"
                    "(Reply with a number or the topic.)")
            if result.in_language and result.language in language.CLARIFY:
                text = language.CLARIFY[result.language].format(listing=listing)
            return Candidate("clarify", self.in_language(text, result), confidence_of(result), (), responder=self.name,
                             options=options)
        answer = self.answer_with(best, confidence_of(result))
        return replace(answer, text=self.in_language(answer.text, result))

    def answer_with(self, hit: Hit, confidence: float | None = None) -> Candidate:
        """An answer with ``hit``'s passage; ``confidence`` defaults to its score as a probability
        (pass the search's :func:`~botkit.types.confidence_of` when ``hit`` is the best)."""
        text = clean_markdown(trim_passage(hit.passage))
        return Candidate("answer", text, probability(hit.score) if confidence is None else confidence,
                         (source_of(hit),), responder=self.name)
