"""The analytics page in real headless Chromium (the browser fixture of tests/test_browser.py):
an operator opens /analytics on the fixture of tests/analytics_fixture.py and sees the figures
that ``botkit report --json`` gives for the same store and range; the three charts are drawn
(non-blank canvases); changing the range changes what is shown; a bad range says why; an agent
is refused. Screenshots go to $BOTKIT_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from botkit.app.cli import main
from botkit.app.cli.report import _seconds, _share
from botkit.app.compose import CONVERSATIONS_DB
from botkit.app.keys import AUTH
from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.project import Project
from botkit.store import SQLiteConversationStore
from botkit.testing import ScriptedResponder, StaticRetriever
from tests.test_analytics import project_dir  # noqa: F401 - fixture: the demo project holding the fixture store
from tests.test_browser import browser, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.fixture
async def site(project_dir: Path, aiohttp_server: Any) -> Any:  # noqa: F811
    project = Project.load(project_dir)
    engine = Engine(retriever=StaticRetriever(), responder=ScriptedResponder(),
                    store=SQLiteConversationStore(project.state_dir / CONVERSATIONS_DB))
    app = build_app(project, engine)
    server = await aiohttp_server(app)
    passwords = {"olivia": app[AUTH].add_user("olivia", "operator"), "alice": app[AUTH].add_user("alice", "agent")}
    yield str(server.make_url("")).rstrip("/"), passwords


async def report_json(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """``botkit report --json ARGS`` on the project (in a thread: the command runs its own event loop)."""
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--project", str(project), "report", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


async def shown(page: Any) -> dict[str, Any]:
    """What the page shows: key figures, table rows, groups of questions, as text."""
    return await page.evaluate("""() => {
        const text = (sel) => [...document.querySelectorAll(sel)].map((n) => n.textContent.trim());
        const kpis = {};
        for (const node of document.querySelectorAll(".kpi")) {
            kpis[node.dataset.figure] = node.querySelector(".kpi-value").textContent.trim();
        }
        const rows = (id) => [...document.querySelectorAll("#" + id + " tbody tr[data-name]")].map(
            (tr) => [tr.dataset.name, Number(tr.querySelector(".count").textContent)]);
        return {kpis, reasons: rows("handoffs-reason"), rules: rows("handoffs-rule"),
                clusters: [...document.querySelectorAll("#unanswered .cluster")].map(
                    (li) => [li.querySelector(".question").textContent, li.querySelector(".count").textContent,
                             li.querySelector(".proposal") ? li.querySelector(".proposal").dataset.id : null]),
                articles: [...document.querySelectorAll("#top-articles tbody tr[data-id]")].map(
                    (tr) => [tr.dataset.id, Number(tr.children[1].textContent)]),
                down: text("#thumbed-down li.down strong"), range: text("#range-label")[0]};
    }""")


def expected(r: dict[str, Any]) -> dict[str, Any]:
    """What a person should see for report ``r`` (the page formats as ``botkit report`` does)."""
    t = r["times"]
    return {
        "kpis": {"conversations": str(r["conversations"]["total"]),
                 "containment": _share(r["conversations"]["containment"]),
                 "handoffs": str(r["handoffs"]["total"]), "turns": str(r["turns"]["total"]),
                 "first-response": _seconds(t["first_response"]["median_s"]),
                 "agent-first-response": _seconds(t["agent_first_response"]["median_s"]),
                 "resolution": _seconds(t["resolution"]["median_s"]),
                 "csat": _share(r["satisfaction"]["csat"]), "thumbs": _share(r["feedback"]["up_share"]),
                 "unanswered": str(r["unanswered"]["total"])},
        "reasons": [[i["name"], i["count"]] for i in r["handoffs"]["by_reason"]],
        "rules": [[i["name"], i["count"]] for i in r["handoffs"]["by_rule"]],
        "clusters": [[c["question"], f"×{c['count']}", c["proposal"]["id"] if c["proposal"] else None]
                     for c in r["unanswered"]["clusters"]],
        "articles": [[a["id"], a["citations"]] for a in r["top_articles"]],
        "down": [d["question"] for d in r["thumbed_down"]],
    }


async def wait_loaded(page: Any, conversations: str) -> None:
    await page.wait_for_function("(n) => !document.body.dataset.loading && "
                                 "document.getElementById('kpi-conversations').textContent === n", arg=conversations)


async def charts_drawn(page: Any) -> list[dict[str, Any]]:
    """Each chart's canvas size and how many of its pixels are painted."""
    return await page.evaluate("""() => [...document.querySelectorAll(".chart")].map((box) => {
        const c = box.querySelector("canvas");
        if (!c) return {id: box.id, width: 0, height: 0, painted: 0};
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
        const rect = c.getBoundingClientRect();
        return {id: box.id, width: rect.width, height: rect.height, painted,
                legend: [...box.querySelectorAll(".u-legend .u-series .u-label")].map((n) => n.textContent)};
    })""")


async def test_the_analytics_page_shows_the_report_figures(browser: Any, site: Any, project_dir: Path,  # noqa: F811
                                                         capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base, passwords = site
    shots = Path(os.environ.get("BOTKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and not msg.text.startswith("Failed to load resource") else None)
    failed: list[tuple[int, str]] = []
    page.on("response", lambda r: failed.append((r.status, r.url.split("?")[0].removeprefix(base)))
            if r.status >= 400 else None)

    # 1. Two weeks by week: what the page shows is what `botkit report --json` says.
    await sign_in(page, base, "olivia", passwords["olivia"], "/analytics")
    await page.goto(f"{base}/analytics?since=2026-03-02&until=2026-03-15&bucket=week")
    await wait_loaded(page, "6")
    weeks = await report_json(project_dir, capsys, "--since", "2026-03-02", "--until", "2026-03-15", "--bucket", "week")
    seen = await shown(page)
    assert seen["range"] == "2026-03-02 – 2026-03-15 (UTC), by week"
    assert {k: v for k, v in seen.items() if k != "range"} == expected(weeks)
    assert seen["kpis"]["containment"] == "33.3%" and seen["kpis"]["agent-first-response"] == "2.0 min"
    assert seen["clusters"] == [["Do you offer engraving?", "×3", "p-engrave"], ["Do you ship abroad?", "×2", None]]
    assert await page.get_attribute("#proposals-link", "href") == "/kb#proposals"
    assert await page.inner_text("#proposal-count") == " (1 open proposal)"
    link = page.locator("#unanswered .cluster .proposal")
    assert await link.inner_text() == "FAQ proposal: Do you engrave wooden items (2 conversations)"
    assert await link.get_attribute("href") == "/kb#proposals"
    drawn = await charts_drawn(page)
    assert [d["id"] for d in drawn] == ["chart-volume", "chart-containment", "chart-feedback"]
    for d in drawn:
        assert d["width"] > 250 and d["height"] > 150 and d["painted"] > 2000, d
    assert drawn[0]["legend"] == ["Conversations", "Contained", "Turns"]  # names only, no "--" values
    await page.screenshot(path=str(shots / "analytics-weeks.png"), full_page=True)

    # 2. The range pickers: the second week, by day; the numbers change with it.
    await page.fill("#since", "2026-03-09")
    await page.fill("#until", "2026-03-15")
    await page.select_option("#bucket", "day")
    await page.click("#apply")
    await wait_loaded(page, "2")
    assert "since=2026-03-09" in page.url and "bucket=day" in page.url
    days = await report_json(project_dir, capsys, "--since", "2026-03-09", "--until", "2026-03-15", "--bucket", "day")
    seen = await shown(page)
    assert {k: v for k, v in seen.items() if k != "range"} == expected(days)
    assert seen["kpis"]["containment"] == "0.0%" and seen["kpis"]["handoffs"] == "2"
    assert seen["clusters"] == [["Do you ship abroad?", "×2", None]]
    assert seen != expected(weeks)
    assert all(d["painted"] > 2000 for d in await charts_drawn(page))
    await page.screenshot(path=str(shots / "analytics-days.png"), full_page=True)

    # 3. All time (a preset) gives the report with no range; a range the wrong way round says why.
    await page.click(".presets button[data-days=all]")
    await wait_loaded(page, "6")
    assert (await shown(page))["kpis"] == expected(await report_json(project_dir, capsys, "--bucket", "day"))["kpis"]
    await page.fill("#since", "2026-03-10")
    await page.fill("#until", "2026-03-02")
    await page.click("#apply")
    await page.locator("#status.error", has_text="must come before until").wait_for()
    assert errors == []
    assert sorted(set(failed)) == [(400, "/api/analytics")]  # the refused range only

    # 4. An agent is not let in (an operator's page), and has no link to it.
    agent = await browser.new_page()
    await sign_in(agent, base, "alice", passwords["alice"], "/console")
    await agent.locator("#who", has_text="alice").wait_for()  # /api/auth/me answered: the links are set
    link = agent.locator("#analytics-link")
    assert await link.count() == 1 and not await link.is_visible()
    response = await agent.goto(f"{base}/analytics")
    assert response is not None and response.status == 403
    assert "needs the operator role" in await agent.inner_text("body")
