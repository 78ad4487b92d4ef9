"""End to end in real headless Chromium (Debian's, driven by Playwright): a customer in the web
chat widget, an agent in the console, an operator in the KB editor, one real server.

Screenshots of the three pages are written to $BOTKIT_SCREENSHOTS (default: the test's tmp
dir) so a person can look at them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from botkit.auth import Auth
from botkit.engine import Engine
from botkit.escalation import EscalationConfig, build_rules, summarize
from botkit.project import Project
from botkit.responder import ExtractiveResponder
from botkit.server import build_app
from botkit.store import SQLiteConversationStore
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


@pytest.fixture
async def site(demo_kb, demo_dir: Path, tmp_path: Path, aiohttp_server):
    project = Project.load(demo_dir)
    engine = Engine(retriever=KnowledgeRetriever(demo_kb), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conversations.sqlite3"),
                    rules=build_rules(EscalationConfig()), config=project.config.dialogue,
                    bot_name=project.config.name, summarize=summarize)
    server = await aiohttp_server(build_app(project, engine))
    auth = Auth(project)
    passwords = {"alice": auth.add_user("alice", "agent"), "olivia": auth.add_user("olivia", "operator")}
    yield str(server.make_url("")).rstrip("/"), passwords


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
    await agent.screenshot(path=str(shots / "console.png"))

    # 5. The agent returns the conversation to the bot, and the bot answers again.
    await agent.click("#return")
    await customer.get_by_text("You're back with the virtual assistant").first.wait_for(timeout=15_000)
    await ask(customer, "do you accept paypal payments?")
    await customer.locator(".bkw-msg.bkw-bot .bkw-source", has_text="Can I pay with PayPal?").first.wait_for(timeout=30_000)

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
