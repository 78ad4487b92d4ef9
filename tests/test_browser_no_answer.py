"""A decline in a real browser: the web chat widget styles and labels a ``no_answer`` reply, and
the agent console tags the declined turns of a conversation that was handed over for them.
Same server and headless Chromium as tests/test_browser.py (whose fixtures these are)."""

from __future__ import annotations

import pytest

from tests.test_browser import Served, ask, browser, served, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


async def test_a_decline_is_shown_apart_in_the_widget_and_the_console(browser, served: Served):  # noqa: F811
    errors: list[str] = []
    customer = await browser.new_page(viewport={"width": 1100, "height": 800})
    customer.on("pageerror", lambda exc: errors.append(str(exc)))
    await customer.goto(f"{served.base}/chat")
    await customer.click(".bkw-launcher")

    await ask(customer, "how long does a refund take to reach my card?")  # an answer: not marked
    await customer.locator(".bkw-msg.bkw-bot .bkw-source").first.wait_for(timeout=30_000)
    await ask(customer, "?!?!...")  # nothing to search for: declined
    declined = customer.locator(".bkw-msg.bkw-bot.bkw-no-answer")
    await declined.first.wait_for(timeout=30_000)
    assert await declined.count() == 1
    assert await declined.first.get_attribute("data-action") == "no_answer"
    assert "couldn't find an answer" in await declined.first.inner_text()
    assert await declined.locator(".bkw-no-answer-label").inner_text() == "No answer found in our help centre"
    assert await declined.locator(".bkw-source").count() == 0
    answered = customer.locator('.bkw-msg.bkw-bot[data-action="answer"]')
    assert await answered.count() == 1 and await answered.locator(".bkw-no-answer-label").count() == 0

    await ask(customer, "???")  # a second decline in a row: the low_confidence rule hands over
    await customer.locator(".bkw-msg.bkw-bot", has_text="passing you to a member of our team").wait_for(timeout=30_000)

    agent = await browser.new_page(viewport={"width": 1280, "height": 800})
    agent.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(agent, served.base, "alice", served.passwords["alice"], "/console")
    item = agent.locator("#waiting .queue-item", has_text="low confidence")
    await item.first.wait_for(timeout=15_000)
    await item.first.click()
    tagged = agent.locator("#turns .turn-bot.turn-no-answer")
    await tagged.first.wait_for(timeout=15_000)
    assert await tagged.count() == 1  # the escalated turn is an escalation, not a decline
    assert await tagged.locator(".no-answer").inner_text() == "no answer"
    assert await agent.locator('#turns .turn-bot[data-action="answer"] .no-answer').count() == 0
    assert errors == []
