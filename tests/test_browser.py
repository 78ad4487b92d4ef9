"""End to end in real headless Chromium (Debian's, driven by Playwright): a customer in the web
chat widget, an agent in the console, an operator in the KB editor, one real server.

Screenshots of the three pages are written to $BOTKIT_SCREENSHOTS (default: the test's tmp
dir) so a person can look at them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from botkit.app.accounts import Auth
from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.escalation import EscalationConfig, build_rules, summarize
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from botkit.types import Source, Turn
from knowledge.retriever import KnowledgeRetriever

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it as root)", allow_module_level=True)

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


@dataclass
class Served:
    base: str
    passwords: dict[str, str]
    engine: Engine


@pytest.fixture
async def served(demo_kb, demo_dir: Path, tmp_path: Path, aiohttp_server):
    project = Project.load(demo_dir)
    engine = Engine(retriever=KnowledgeRetriever(demo_kb), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conversations.sqlite3"),
                    rules=build_rules(EscalationConfig()), config=project.config.dialogue,
                    bot_name=project.config.name, summarize=summarize)
    server = await aiohttp_server(build_app(project, engine))
    auth = Auth(project)
    passwords = {"alice": auth.add_user("alice", "agent"), "olivia": auth.add_user("olivia", "operator")}
    yield Served(str(server.make_url("")).rstrip("/"), passwords, engine)


@pytest.fixture
async def site(served: Served):
    yield served.base, served.passwords


async def sign_in(page, base: str, name: str, password: str, target: str) -> None:
    await page.goto(f"{base}/signin?next={target}")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"**{target}")


async def ask(page, text: str) -> None:
    await page.fill("#bkw-input", text)
    await page.press("#bkw-input", "Enter")


async def test_customer_agent_and_operator_in_a_real_browser(browser, site, tmp_path: Path):
    base, passwords = site
    shots = Path(os.environ.get("BOTKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []

    customer = await browser.new_page(viewport={"width": 1100, "height": 800})
    customer.on("pageerror", lambda exc: errors.append(str(exc)))
    await customer.goto(f"{base}/chat")
    await customer.click(".bkw-launcher")

    # 1. A question gets a grounded answer with its source.
    await ask(customer, "how long does a refund take to reach my card?")
    source = customer.locator(".bkw-msg.bkw-bot .bkw-source", has_text="When will I get my refund?")
    await source.first.wait_for(timeout=30_000)

    # 2. Hostile text is shown as text, never run.
    await ask(customer, '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>')
    await customer.locator(".bkw-msg.bkw-customer", has_text="<img src=x").wait_for()
    await customer.wait_for_timeout(500)
    assert await customer.evaluate("window.__xss") is None
    assert await customer.locator(".bkw-msg img").count() == 0

    # 3. Asking for a person hands the conversation over.
    await ask(customer, "can I talk to a real person please")
    await customer.locator(".bkw-msg.bkw-bot", has_text="passing you to a member of our team").wait_for(timeout=30_000)
    await customer.screenshot(path=str(shots / "chat.png"))

    # 4. The agent sees it in the console queue, takes it and replies; the customer sees the reply.
    agent = await browser.new_page(viewport={"width": 1280, "height": 800})
    agent.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(agent, base, "alice", passwords["alice"], "/console")
    item = agent.locator("#waiting .queue-item", has_text="asked for human")
    await item.first.wait_for(timeout=15_000)
    await item.first.click()
    await agent.click("#take")
    await agent.locator("#text").wait_for(state="visible")
    await agent.fill("#text", "Hi, I'm Alice from the support team. How can I help?")
    await agent.click("#send")
    await customer.locator(".bkw-msg.bkw-agent", has_text="I'm Alice from the support team").wait_for(timeout=15_000)
    await agent.locator("#turns", has_text="I'm Alice from the support team").wait_for()
    shown = await agent.locator("#turns .confidence").all_text_contents()  # the bot's confidence, as a percentage
    assert shown and all(re.fullmatch(r"\d{1,3}%", c) for c in shown), shown
    await agent.screenshot(path=str(shots / "console.png"))

    # 5. The agent returns the conversation to the bot, and the bot answers again.
    await agent.click("#return")
    await customer.get_by_text("You're back with the virtual assistant").first.wait_for(timeout=15_000)
    await ask(customer, "do you accept paypal payments?")
    await customer.locator(".bkw-msg.bkw-bot .bkw-source",
                           has_text="Can I pay with PayPal?").first.wait_for(timeout=30_000)

    # 6. An operator edits that FAQ answer in the KB editor; the customer's next question gets it.
    operator = await browser.new_page(viewport={"width": 1280, "height": 900})
    operator.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(operator, base, "olivia", passwords["olivia"], "/kb")
    await operator.locator(".article-item", has_text="Can I pay with PayPal?").first.click()
    await operator.locator("#f-body").wait_for(state="visible")
    await operator.fill("#f-body", "Yes. PayPal and Venmo are both accepted at checkout in every store.")
    await operator.click("#save")
    await operator.locator("#form-status", has_text="Saved").wait_for(timeout=30_000)
    await operator.screenshot(path=str(shots / "kb-editor.png"))
    await ask(customer, "can I use paypal to pay for my order")
    await customer.locator(".bkw-msg.bkw-bot", has_text="Venmo").wait_for(timeout=30_000)

    assert errors == []


# -- a long conversation pages in its older turns ---------------------------------------------------

@dataclass
class Relay:
    """Sits on the widget's websocket (Playwright's WebSocketRoute) and passes every frame on to the
    real server and back, recording both directions. While ``hold`` is set it keeps the server's
    ``history`` pages until ``release()``; ``break_next_history`` makes the next history request
    one the real server refuses (a limit over 200), so the server's own error frame answers it."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    hold: bool = False
    break_next_history: bool = False
    held: list[str] = field(default_factory=list)
    page_side: Any = None

    async def route(self, ws: Any) -> None:
        server = ws.connect_to_server()
        self.page_side = ws

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            self.sent.append(frame)
            if frame.get("type") == "history" and self.break_next_history:
                self.break_next_history = False
                message = json.dumps({**frame, "limit": 500})
            server.send(message)

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            self.received.append(frame)
            if frame.get("type") == "history" and self.hold:
                self.held.append(str(message))
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for message in held:
            self.page_side.send(message)

    def history_requests(self) -> list[int]:
        return [f["before"] for f in self.sent if f.get("type") == "history"]


LONG = 130  # stored turns: the welcome shows the last 50, two more pages hold the rest


def old_turn(conv: str, seq: int, at: datetime) -> Turn:
    """Turns 3..LONG: a customer question, a bot answer with a source (thumbs up on some), an agent."""
    kind = seq % 3
    if kind == 0:
        text = f"old question {seq}" if seq != 3 else '<img src=x onerror="window.__xss=1">old question 3'
        return Turn(conv, seq, "customer", text, at)
    if kind == 1:
        return Turn(conv, seq, "bot", f"old answer {seq}", at, action="answer",
                    sources=(Source("refund-timing", "When will I get my refund?", 1.0),),
                    author="extractive", feedback=1 if seq % 2 else 0, meta={"grounded": True})
    return Turn(conv, seq, "agent", f"old agent note to the customer {seq}", at, action="agent", author="Dana")


async def long_conversation(browser: Any, served: Served, relay: Relay, errors: list[str]) -> Any:
    """A customer tab whose conversation has LONG stored turns, resumed after a reload."""
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.route_web_socket("**/channels/webchat/ws", relay.route)
    await page.goto(f"{served.base}/chat")
    await page.click(".bkw-launcher")
    await ask(page, "hello")
    await page.locator(".bkw-msg.bkw-bot[data-turn='2']").wait_for(timeout=30_000)
    conv = next(f["conversation"] for f in relay.received if f["type"] == "welcome")
    at = datetime.now(UTC)
    await served.engine.store.record([old_turn(conv, seq, at) for seq in range(3, LONG + 1)])
    await page.reload()
    await page.click(".bkw-launcher")
    await count_turns(page, 50)
    return page


async def count_turns(page: Any, n: int) -> None:
    """Wait until the message list shows ``n`` stored turns (the page's CSP rules out wait_for_function)."""
    for _ in range(300):
        if len(await shown_turns(page)) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} turns expected, {len(await shown_turns(page))} shown")


async def shown_turns(page: Any) -> list[int]:
    return await page.eval_on_selector_all(".bkw-log [data-turn]", "ns => ns.map(n => Number(n.dataset.turn))")


async def top_of(page: Any, turn: int) -> float:
    """Where a turn's message is, in pixels from the top of the visible message list."""
    return await page.evaluate("t => document.querySelector(`.bkw-log [data-turn='${t}']`).getBoundingClientRect().top"
                               " - document.querySelector('.bkw-log').getBoundingClientRect().top", turn)


async def first_visible_turn(page: Any) -> int:
    return await page.evaluate("""() => {
        const log = document.querySelector('.bkw-log'), top = log.getBoundingClientRect().top;
        return Number([...log.querySelectorAll('[data-turn]')].find(n => n.getBoundingClientRect().bottom > top)
                      .dataset.turn);
    }""")


async def scroll_log_to_top(page: Any) -> None:
    await page.eval_on_selector(".bkw-log", "log => { log.scrollTop = 0; }")


async def test_a_long_conversation_pages_in_older_turns_in_order(browser, served: Served):
    """130 stored turns: the resumed tab shows the last 50 and "Show earlier messages"; the button
    (keyboard) brings 50 more, with one request however often it is pressed or scrolled to
    while the page is on its way, and the message in view stays put; scrolling to the top brings
    the rest and the control goes. Turn numbers ascend through the list, each once."""
    errors: list[str] = []
    relay = Relay()
    page = await long_conversation(browser, served, relay, errors)
    assert await shown_turns(page) == list(range(LONG - 49, LONG + 1))
    button = page.get_by_role("button", name="Show earlier messages")
    await button.wait_for(state="attached")
    assert await page.locator(".bkw-earlier").is_hidden() is False
    assert relay.history_requests() == []  # nothing asked before the customer goes up

    # 1. The keyboard: Enter on the (real) button asks for the page before turn 81, once.
    relay.hold = True
    await button.evaluate("b => b.focus({preventScroll: true})")
    await page.keyboard.press("Enter")
    await page.locator(".bkw-earlier-btn[aria-disabled='true']").wait_for()
    assert await page.locator(".bkw-earlier-btn").text_content() == "Loading earlier messages…"
    await page.keyboard.press("Enter")
    await page.keyboard.press(" ")
    await scroll_log_to_top(page)  # at the top while it loads: still the one request
    await page.mouse.wheel(0, -400)
    await page.wait_for_timeout(400)
    assert relay.history_requests() == [LONG - 49]
    await asyncio.wait_for(_until(lambda: relay.held), 15)
    looking_at = await first_visible_turn(page)
    where = await top_of(page, looking_at)
    relay.release()
    await count_turns(page, 100)
    assert await shown_turns(page) == list(range(LONG - 99, LONG + 1))
    assert abs(await top_of(page, looking_at) - where) <= 2, "the message in view moved when older turns came in"
    await page.wait_for_timeout(400)
    assert relay.history_requests() == [LONG - 49]  # the control is above the view now: no automatic request
    assert await page.locator(".bkw-earlier-btn").text_content() == "Show earlier messages"

    # 2. Scrolling to the top loads the rest; the control goes and the greeting tops the conversation.
    await scroll_log_to_top(page)
    await count_turns(page, LONG)
    turns = await shown_turns(page)
    assert turns == list(range(1, LONG + 1)) and len(set(turns)) == LONG
    assert relay.history_requests() == [LONG - 49, LONG - 99]
    assert await page.locator(".bkw-earlier").is_hidden()
    assert await page.get_by_role("button", name="Show earlier messages").count() == 0
    welcome = next(f for f in relay.received if f["type"] == "welcome")
    assert await page.locator(".bkw-log .bkw-msg").first.text_content() == welcome["greeting"]
    assert await top_of(page, 31) > 0, "turn 31, at the top of the view before, went out of view"
    await page.locator(".bkw-sr[role=status]", has_text="start of the conversation").wait_for(state="attached")

    # 3. Older turns are drawn like the welcome's: sources, agent names, thumbs, text as text.
    bot4 = page.locator(".bkw-log [data-turn='4']")
    assert await bot4.locator(".bkw-source").text_content() == "When will I get my refund?"
    assert await bot4.get_by_role("button", name="Not helpful").get_attribute("aria-pressed") == "false"
    thumb_up_7 = page.locator(".bkw-log [data-turn='7']").get_by_role("button", name="Helpful", exact=True)
    assert await thumb_up_7.get_attribute("aria-pressed") == "true"  # the stored feedback
    assert await page.locator(".bkw-log [data-turn='5'] .bkw-author").text_content() == "Dana"
    assert "<img src=x" in (await page.locator(".bkw-log [data-turn='3']").text_content() or "")
    assert await page.locator(".bkw-log img").count() == 0 and await page.evaluate("window.__xss") is None
    await bot4.get_by_role("button", name="Helpful", exact=True).click()
    await asyncio.wait_for(_until(lambda: any(f["type"] == "ack" and f.get("for") == "feedback" and f.get("turn") == 4
                                              for f in relay.received)), 15)
    assert errors == []


async def test_an_error_answering_a_history_request_offers_to_try_again(browser, served: Served):
    """The server refuses the history request (its error frame has no id): the widget says so
    next to a "Try again" button, keeps what it shows, and does not retry on its own; a click on
    "Try again" loads the page."""
    errors: list[str] = []
    relay = Relay(break_next_history=True)
    page = await long_conversation(browser, served, relay, errors)
    await scroll_log_to_top(page)
    note = page.locator(".bkw-earlier-note")
    await note.wait_for(state="visible", timeout=15_000)
    refusal = next(f for f in relay.received if f["type"] == "error")
    assert refusal["code"] == "bad_request" and refusal.get("id") is not None  # the real server's answer, matched by id
    assert (await note.text_content() or "").startswith("Earlier messages could not be loaded.")
    assert await page.locator(".bkw-earlier-btn").text_content() == "Try again"
    assert await page.locator(".bkw-notice.bkw-error").count() == 0  # not shown as a failed message
    await page.eval_on_selector(".bkw-log", "log => { log.scrollTop = log.scrollHeight; }")
    await page.wait_for_timeout(200)
    await scroll_log_to_top(page)
    await page.wait_for_timeout(600)
    assert relay.history_requests() == [LONG - 49]  # no retry loop
    assert await shown_turns(page) == list(range(LONG - 49, LONG + 1))

    await page.get_by_role("button", name="Try again").click()
    await count_turns(page, 100)
    assert await shown_turns(page) == list(range(LONG - 99, LONG + 1))
    assert relay.history_requests() == [LONG - 49, LONG - 49]
    assert await note.is_hidden()
    assert await page.locator(".bkw-earlier-btn").text_content() == "Show earlier messages"
    assert errors == []


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.05)
