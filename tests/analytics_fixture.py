"""Six conversations with known figures, written through the ConversationStore API (so any
backend can hold them): tests/test_analytics.py and tests/test_browser_analytics.py assert
the report of exactly these. All times UTC; weeks start on Monday 2026-03-02 and 2026-03-09.

====  =========  ==========================================================================
c1    webchat    03-02 09:00  refund answered (+1), a clarify; CSAT 5; no hand-off
c2    webchat    03-02 10:00  engraving declined, then low_confidence hand-off, agent after
                              120 s, closed 10:11:01 (661 s after the first message); CSAT 4
c3    telegram   03-03 14:00  PayPal answered (-1), asked for a human: waiting; CSAT 2
c4    webchat    03-04 08:00  engraving declined; opening hours (+1), refund answered; no hand-off
c5    webchat    03-10 12:00  refund answered (-1), asked for a human, agent after 30 s, a note,
                              returned to the bot, shipping declined; CSAT 3
c6    telegram   03-11 09:00  shipping declined, frustration hand-off, agent after 300 s,
                              closed 09:20:41 (1241 s after the first message)
====  =========  ==========================================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from botkit.store import ConversationStore
from botkit.types import Escalation, Handoff, Source, Turn

REFUND = Source("refund-timing", "When will I get my refund?", 0.91)
PAYPAL = Source("paypal", "Can I pay with PayPal?", 0.88)
HOURS = Source("opening-hours", "Opening hours", 0.84)
ASKED = Escalation("asked_for_human", "0:asks_for_human", "matched 'a person'")
LOW = Escalation("low_confidence", "1:low_confidence", "the proposed reply is not grounded")
FRUSTRATED = Escalation("frustration", "2:frustration", "matched 'ridiculous'")


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 3, day, hh, mm, ss, tzinfo=UTC)


class _Conv:
    def __init__(self, store: ConversationStore, cid: str, channel: str, customer: str, start: datetime):
        self.store, self.cid, self.channel, self.customer, self.start = store, cid, channel, customer, start
        self.seq = 0

    def _turn(self, role: str, text: str, when: datetime, **kw: object) -> Turn:
        self.seq += 1
        return Turn(self.cid, self.seq, role, text, when, **kw)  # type: ignore[arg-type]

    async def open(self) -> _Conv:
        await self.store.get_or_create(self.cid, self.channel, self.customer, {}, self.start)
        return self

    async def ask(self, text: str, when: datetime, reply: str, after_s: int, action: str = "answer",
                  sources: tuple[Source, ...] = (), feedback: int = 0, escalation: Escalation | None = None) -> None:
        customer = self._turn("customer", text, when, resolved_query=text)
        answered = when + timedelta(seconds=after_s)
        bot = self._turn("bot", reply, answered, action=action, sources=sources, escalation=escalation,
                         confidence=0.2 if action != "answer" else 0.9, author="extractive",
                         meta={"grounded": action == "answer"})
        handoff = None if escalation is None else Handoff(0, self.cid, escalation.reason, escalation.rule,
                                                          escalation.detail, "summary", self.channel,
                                                          self.customer, answered)
        await self.store.record([customer, bot], status="handed_off" if escalation else "bot", handoff=handoff)
        if feedback:
            await self.store.set_feedback(self.cid, bot.seq, feedback)

    async def agent(self, name: str, text: str, when: datetime, *, note: bool = False) -> None:
        role, action = ("system", "note") if note else ("agent", "agent")
        await self.store.record([self._turn(role, text, when, action=action, author=name)])


async def populate(store: ConversationStore) -> None:
    c1 = await _Conv(store, "c1", "webchat", "ana", at(2, 9, 0)).open()
    await c1.ask("How long does a refund take?", at(2, 9, 0), "Refunds take 3 days.", 2, sources=(REFUND,), feedback=1)
    await c1.ask("What about delivery?", at(2, 9, 1), "Which one do you mean?", 1, action="clarify")
    await store.set_satisfaction("c1", 5)

    c2 = await _Conv(store, "c2", "webchat", "ben", at(2, 10, 0)).open()
    await c2.ask("Do you offer engraving?", at(2, 10, 0), "I couldn't find an answer.", 1, action="no_answer")
    await c2.ask("Can I get my order engraved?", at(2, 10, 1), "Let me find a colleague.", 1, action="escalate",
                 escalation=LOW)
    await store.assign("c2", "alice", at(2, 10, 2))
    await c2.agent("alice", "Yes, we engrave wooden items.", at(2, 10, 3, 1))
    await store.release("c2", "alice", "closed", at(2, 10, 11, 1))
    await store.set_satisfaction("c2", 4)

    c3 = await _Conv(store, "c3", "telegram", "cem", at(3, 14, 0)).open()
    await c3.ask("Can I pay with PayPal?", at(3, 14, 0), "Yes, PayPal works.", 3, sources=(PAYPAL,), feedback=-1)
    await c3.ask("I want to talk to a person", at(3, 14, 5), "Let me find a colleague.", 1, action="escalate",
                 escalation=ASKED)
    await store.set_satisfaction("c3", 2)

    c4 = await _Conv(store, "c4", "webchat", "dan", at(4, 8, 0)).open()
    await c4.ask("Is engraving available for the items you sell?", at(4, 8, 0), "I couldn't find an answer.", 2,
                 action="no_answer")
    await c4.ask("What are your opening hours?", at(4, 8, 1), "We open at 9.", 1, sources=(HOURS,), feedback=1)
    await c4.ask("And how long does a refund take?", at(4, 8, 2), "Refunds take 3 days.", 1, sources=(REFUND,))

    c5 = await _Conv(store, "c5", "webchat", "eva", at(10, 12, 0)).open()
    await c5.ask("How long does a refund take to arrive?", at(10, 12, 0), "Refunds take 3 days.", 1,
                 sources=(REFUND,), feedback=-1)
    await c5.ask("this is useless, human please", at(10, 12, 2), "Let me find a colleague.", 1, action="escalate",
                 escalation=ASKED)
    await store.assign("c5", "alice", at(10, 12, 2, 10))
    await c5.agent("alice", "Hi, Alice here: your refund is on its way.", at(10, 12, 2, 31))
    await c5.agent("alice", "customer was upset about the delay", at(10, 12, 3), note=True)
    await store.release("c5", "alice", "returned", at(10, 12, 10))
    await store.record([c5._turn("bot", "You're back with the assistant.", at(10, 12, 10), action="returned",
                                 author="system")])
    await c5.ask("Do you ship abroad?", at(10, 12, 20), "I couldn't find an answer.", 1, action="no_answer")
    await store.set_satisfaction("c5", 3)

    c6 = await _Conv(store, "c6", "telegram", "fay", at(11, 9, 0)).open()
    await c6.ask("Do you ship to Norway?", at(11, 9, 0), "I couldn't find an answer.", 1, action="no_answer")
    await c6.ask("This is ridiculous, nobody helps me", at(11, 9, 0, 40), "Let me find a colleague.", 1,
                 action="escalate", escalation=FRUSTRATED)
    await store.assign("c6", "bob", at(11, 9, 1))
    await c6.agent("bob", "Sorry about that: we ship to Norway in 5 days.", at(11, 9, 5, 41))
    await store.release("c6", "bob", "closed", at(11, 9, 20, 41))
