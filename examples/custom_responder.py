"""A custom Responder: fixed FAQ templates by keyword, the extractive responder for the rest.

A responder (``botkit.responders.Responder``) has a ``name``, ``start``/``close`` and
``respond(request) -> Candidate``. This one answers a few questions from templates (with the
bot's name filled in) and hands everything else to the configured responder, here the
ExtractiveResponder, which quotes the knowledge base and says "I don't know" when nothing fits.
Knowledge and storage: botkit.testing's StaticRetriever and InMemoryConversationStore stand in
for the knowledge base and SQLite, so nothing is downloaded. With a real project, wrap the
responder bot.yaml configures:
``engine = build_engine(project); engine.responder = KeywordResponder(TEMPLATES, engine.responder)``
(``botkit.app.compose.build_engine``, before ``engine.start()``).   Run: python examples/custom_responder.py
"""
import asyncio
import re
from collections.abc import Mapping

from botkit.engine import Engine
from botkit.responders import DONT_KNOW, ExtractiveResponder, Responder, ResponderRequest
from botkit.testing import InMemoryConversationStore, StaticRetriever, hit
from botkit.types import Candidate, IncomingMessage

TEMPLATES = {
    "opening hours": "{bot} here: we are open 8:00 to 18:00, Monday to Friday.",
    "phone number": "You can call us on 0800 123 456 ({bot} can help here too).",
}


class KeywordResponder:
    """Templates for the keywords it knows (whole words, any case); ``fallback`` for the rest."""

    name = "keyword"

    def __init__(self, templates: Mapping[str, str], fallback: Responder) -> None:
        self.routes = [(re.compile(rf"\b{re.escape(k)}\b", re.I), t) for k, t in templates.items()]
        self.fallback = fallback

    async def start(self) -> None:
        await self.fallback.start()  # the engine starts only the responder it was given

    async def close(self) -> None:
        await self.fallback.close()

    async def respond(self, request: ResponderRequest) -> Candidate:
        for pattern, template in self.routes:
            if pattern.search(request.query):
                return Candidate("answer", template.format(bot=request.bot_name), 1.0, responder=self.name)
        return await self.fallback.respond(request)


async def main() -> None:
    retriever = StaticRetriever(
        {"How do I return a parcel?": [hit("returns", "Print the label from your order page.")]})
    responder = KeywordResponder(TEMPLATES, fallback=ExtractiveResponder())
    async with Engine(retriever=retriever, responder=responder, store=InMemoryConversationStore(),
                      bot_name="Ada") as engine:
        replies = {}
        for question in ("What are your OPENING HOURS?", "How do I return a parcel?", "Do you sell gift cards?"):
            reply = await engine.handle(IncomingMessage("c1", question))
            replies[question] = reply
            print(f"{question!r:32} -> [{reply.responder}] {reply.text[:60]}")
    hours, parcel, unknown = replies.values()
    assert (hours.responder, hours.text) == ("keyword", "Ada here: we are open 8:00 to 18:00, Monday to Friday.")
    assert (parcel.responder, parcel.text) == ("extractive", "Print the label from your order page.")
    assert [s.id for s in parcel.sources] == ["returns"], parcel.sources
    assert (unknown.responder, unknown.text) == ("extractive", DONT_KNOW)
    print("OK: keywords answered from templates, the rest by the extractive responder")


if __name__ == "__main__":
    asyncio.run(main())
