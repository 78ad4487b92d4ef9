"""The KB editor in a real browser says which entries files own (botkit issue 12): an entry from
``botkit kb import`` shows its file; once edited in the editor it says that the next import
keeps the edit while the file is unchanged and reports a conflict if the file changed, and the
import does keep it. Same server and headless Chromium as tests/test_browser.py (its fixtures).
A screenshot, kb-managed-by-files.png, goes to $BOTKIT_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.test_browser import Served, browser, served, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow
EDIT = "Yes. PayPal and Venmo are both accepted at checkout in every store."


async def test_the_editor_shows_an_entry_is_managed_by_files_and_an_edit_will_be_kept(  # noqa: F811
        browser, served: Served, demo_kb, demo_dir: Path, tmp_path: Path) -> None:
    shots = Path(os.environ.get("BOTKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, served.base, "olivia", served.passwords["olivia"], "/kb")

    item = page.locator(".article-item", has_text="Can I pay with PayPal?").first
    await item.wait_for(timeout=30_000)
    assert "from file" in await item.inner_text() and "edited since import" not in await item.inner_text()
    await item.click()
    note = page.locator("#managed")
    await note.wait_for(state="visible")
    text = await note.inner_text()
    assert "Managed by files:" in text and "faq.csv:3" in text and "imported as revision 1" in text
    assert await note.get_attribute("data-state") == "in_step" and "warn" not in (await note.get_attribute("class"))

    await page.fill("#f-body", EDIT)
    await page.click("#save")
    await page.locator("#form-status", has_text="Saved").wait_for(timeout=30_000)
    await page.locator("#managed[data-state=edited]").wait_for()
    text = await note.inner_text()
    assert "Edited here since the last import" in text and "reports a conflict" in text
    assert "warn" in (await note.get_attribute("class"))
    edited = page.locator(".article-item", has_text="Can I pay with PayPal?").first
    await edited.locator(".edited", has_text="edited since import").wait_for()
    await page.evaluate("window.scrollTo(0, 0)")  # the note sits above the form
    await page.screenshot(path=str(shots / "kb-managed-by-files.png"))

    summary = await asyncio.to_thread(demo_kb.import_paths, [demo_dir / "kb"], "root")  # `botkit kb import`
    assert [c.article_id for c in summary.kept] == ["faq-paypal"] and summary.updated == ()
    await page.locator(".article-item", has_text="Can I pay with PayPal?").first.click()
    await page.locator("#managed[data-state=edited]").wait_for()
    assert await page.input_value("#f-body") == EDIT

    new_entry = page.locator("#new")  # an entry made in the editor belongs to no file: no note
    await new_entry.click()
    assert await note.is_hidden()
    assert errors == []
