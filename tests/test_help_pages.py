"""The public help centre (botkit/app/help_pages.py): each KB entry as a page (what the web chat's
source chips link to), the search behind the demo page's search box, and in a real browser the
demo page's topic cards and search box and a source chip that opens its article.

Screenshots go to $BOTKIT_SCREENSHOTS (default: the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from botkit.app.help_pages import render_markdown
from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.escalation import EscalationConfig, build_rules, summarize
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from knowledge.retriever import KnowledgeRetriever
from knowledge.types import ArticleDraft

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_markdown_is_escaped_before_it_is_formatted():
    out = render_markdown("# Title\n<script>alert(1)</script> and **bold** & more\n\n- one\n- <b>two</b>\n\n"
                          "| Region | Days |\n|---|---|\n| Canada | 5-8 |\n\n1. first\n2. second")
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "<h2>Title</h2>" in out and "<strong>bold</strong> &amp; more" in out
    assert "<ul><li>one</li><li>&lt;b&gt;two&lt;/b&gt;</li></ul>" in out
    assert "<th>Region</th><th>Days</th>" in out and "<td>Canada</td><td>5-8</td>" in out
    assert "<ol><li>first</li><li>second</li></ol>" in out
    assert render_markdown('**"><img src=x onerror=alert(1)>**').count("<img") == 0


@pytest.fixture
async def served(demo_kb, demo_dir: Path, tmp_path: Path, aiohttp_server):
    project = Project.load(demo_dir)
    engine = Engine(retriever=KnowledgeRetriever(demo_kb), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conversations.sqlite3"),
                    rules=build_rules(EscalationConfig()), config=project.config.dialogue,
                    bot_name=project.config.name, summarize=summarize)
    server = await aiohttp_server(build_app(project, engine))
    yield str(server.make_url("")).rstrip("/"), demo_kb


@pytest.mark.slow
async def test_article_page_and_search(served):
    import aiohttp

    base, kb = served
    kb.upsert([ArticleDraft("evil", "Hostile <script>alert(1)</script>", "<img src=x onerror=alert(2)> text")], "t")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/help/articles/refund-timing") as r:
            page = await r.text()
            assert r.status == 200 and "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert "<h1>When will I get my refund?</h1>" in page and "<script" not in page
        async with http.get(f"{base}/help/articles/evil") as r:
            page = await r.text()
            assert "&lt;script&gt;" in page and "<img" not in page and "<script" not in page
        async with http.get(f"{base}/help/articles/faq-paypal") as r:
            assert 'class="questions"' in await r.text()  # an FAQ entry shows its phrasings
        async with http.get(f"{base}/help/articles/no-such-thing") as r:
            assert r.status == 404
        async with http.get(f"{base}/help/search", params={"q": "how long does a refund take"}) as r:
            found = (await r.json())["articles"]
            assert found[0]["id"] == "refund-timing" and found[0]["url"] == "/help/articles/refund-timing"
        async with http.get(f"{base}/help/search", params={"q": "zxqv wplk"}) as r:
            assert (await r.json())["articles"] == []  # nothing above the threshold: nothing listed
        async with http.get(f"{base}/help/search") as r:
            assert r.status == 400
        async with http.get(f"{base}/help/search", params={"q": "x" * 301}) as r:
            assert r.status == 400
        statuses = []
        for _ in range(31):  # 30 a minute per address, then 429 with Retry-After
            async with http.get(f"{base}/help/search", params={"q": "refund"}) as r:
                statuses.append(r.status)
                retry = r.headers.get("Retry-After")
        assert statuses.count(429) >= 1 and retry is not None and int(retry) >= 1


@pytest.mark.slow
async def test_demo_page_topic_cards_search_box_and_source_links_in_a_browser(served, tmp_path: Path):
    playwright_api = pytest.importorskip("playwright.async_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it as root)")
    base, _ = served
    shots = Path(os.environ.get("BOTKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1100, "height": 800})
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"{base}/chat")

        # 1. A topic card opens the chat with its question, and the answer's source is a link.
        await page.click("a.card:has-text('Returns & refunds')")
        await page.locator("#bkw-panel").wait_for(state="visible", timeout=5_000)
        question = "How do I return something, and when will I get my refund?"
        await page.locator(".bkw-msg.bkw-customer", has_text=question).wait_for(timeout=15_000)
        chip = page.locator(".bkw-msg.bkw-bot a.bkw-source").first
        await chip.wait_for(timeout=30_000)
        href = await chip.get_attribute("href")
        assert href is not None and href.startswith(f"{base}/help/articles/")
        assert await chip.get_attribute("target") == "_blank"
        title = (await chip.text_content() or "").strip()
        await page.screenshot(path=str(shots / "demo-topic-card.png"))
        async with context.expect_page() as opened:
            await chip.click()
        article = await opened.value
        await article.wait_for_load_state()
        assert (await article.text_content("h1") or "").strip() == title  # the chip opens its own article
        await article.screenshot(path=str(shots / "help-article.png"), full_page=True)
        await article.close()

        # 2. The search box lists matching articles (links to their pages) and can ask the assistant.
        await page.fill("#q", "do you accept paypal")
        await page.press("#q", "Enter")
        hit = page.locator("#search-results a.search-hit").first
        await hit.wait_for(timeout=15_000)
        assert await hit.get_attribute("href") == "/help/articles/faq-paypal"
        assert page.url.endswith("/chat?q=do%20you%20accept%20paypal")
        await page.screenshot(path=str(shots / "demo-search.png"))
        await page.click("#search-results .ask-button")
        await page.locator(".bkw-msg.bkw-customer", has_text="do you accept paypal").wait_for(timeout=15_000)
        await page.locator(".bkw-msg.bkw-bot", has_text="PayPal").last.wait_for(timeout=30_000)

        # 3. The form without JavaScript lands on /chat?q=...: the page searches on load.
        fresh = await context.new_page()
        await fresh.goto(f"{base}/chat?q=reset%20my%20password")
        await fresh.locator("#search-results a.search-hit[href='/help/articles/password-reset']").wait_for(
            timeout=15_000)
        await browser.close()
    assert errors == []
