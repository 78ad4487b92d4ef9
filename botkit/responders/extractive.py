"""The embedded default responder: the knowledge base's own words, no language model."""

from __future__ import annotations

from botkit.responders.base import source_of
from botkit.text import clean_markdown, trim_passage
from botkit.types import Candidate, Hit, ResponderRequest, SearchResult

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
            text = (f"I can help with that. Which of these is closest to what you need?\n{listing}\n"
                    "(Reply with a number or the topic.)")
            return Candidate("clarify", text, float(best.score), (), responder=self.name, options=options)
        return self.answer_with(best)

    def answer_with(self, hit: Hit) -> Candidate:
        text = clean_markdown(trim_passage(hit.passage))
        return Candidate("answer", text, float(hit.score), (source_of(hit),), responder=self.name)
