"""Analytics (botkit/analytics.py, docs/analytics.md): exact figures of a fixture whose answers are
worked out by hand (tests/analytics_fixture.py), the same from the SQLite store and the
in-memory fake; ``botkit report --json`` and ``/api/analytics`` give those figures; ``--plots``
writes real PNGs; a bad range is refused with a message that says what to give."""

from __future__ import annotations

import asyncio
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from botkit.analytics import (
    ProposalRef,
    ReportRange,
    ReportRangeError,
    build_report,
    cluster_questions,
    duration_stats,
    link_proposals,
    parse_range,
    question_words,
)
from botkit.app.analytics_data import analytics_report
from botkit.app.cli import main
from botkit.app.compose import CONVERSATIONS_DB
from botkit.app.keys import AUTH
from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.project import Project
from botkit.store import SQLiteConversationStore
from botkit.testing import InMemoryConversationStore, ScriptedResponder, StaticRetriever
from tests.analytics_fixture import populate
from tests.conftest import copy_demo
from training.gaps import Proposal, ProposalStore

NOW = datetime(2026, 3, 12, 15, 0, tzinfo=UTC)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> Any:
    store = SQLiteConversationStore(tmp_path / "conversations.sqlite3")
    await store.start()
    await populate(store)
    yield store
    await store.close()


async def test_every_figure_of_the_fixture_over_all_time(sqlite_store: Any) -> None:
    r = await build_report(sqlite_store, parse_range(bucket="week", now=NOW))
    assert r["range"] == {"since": None, "until": None, "bucket": "week", "timezone": "UTC"}
    assert r["conversations"] == {"total": 6, "contained": 2, "handed_off": 4, "containment": 0.3333, "closed": 2,
                                  "by_channel": {"telegram": 2, "webchat": 4}}
    assert r["turns"] == {"total": 33, "customer": 14, "bot": 15, "agent": 3, "notes": 1}
    assert r["bot_actions"] == {"answer": 5, "clarify": 1, "escalate": 4, "no_answer": 4, "returned": 1}
    assert r["handoffs"] == {
        "total": 4,
        "by_reason": [{"name": "asked_for_human", "count": 2}, {"name": "frustration", "count": 1},
                      {"name": "low_confidence", "count": 1}],
        "by_rule": [{"name": "0:asks_for_human", "count": 2}, {"name": "1:low_confidence", "count": 1},
                    {"name": "2:frustration", "count": 1}],
        "by_status": {"closed": 2, "returned": 1, "waiting": 1}}
    # first replies 2, 1, 3, 2, 1, 1 s; agents after 120 (c2), 30 (c5), 300 (c6) s;
    # c2 closed 661 s and c6 1241 s after their first message
    assert r["times"] == {
        "first_response": {"count": 6, "mean_s": 1.7, "median_s": 1.5, "p90_s": 3.0},
        "agent_first_response": {"count": 3, "mean_s": 150.0, "median_s": 120.0, "p90_s": 300.0},
        "resolution": {"count": 2, "mean_s": 951.0, "median_s": 951.0, "p90_s": 1241.0}}
    assert r["satisfaction"] == {"rated": 4, "mean": 3.5, "satisfied": 2, "csat": 0.5,
                                 "distribution": {"1": 0, "2": 1, "3": 1, "4": 1, "5": 1}}
    assert r["feedback"] == {"up": 2, "down": 2, "rated": 4, "up_share": 0.5}

    unanswered = r["unanswered"]
    assert unanswered["total"] == 5 and unanswered["proposals"] == "/kb#proposals"
    assert [(c["question"], c["count"], c["conversations"]) for c in unanswered["clusters"]] == [
        ("Do you offer engraving?", 3, ["c2", "c4"]), ("Do you ship abroad?", 2, ["c5", "c6"])]
    assert unanswered["clusters"][0]["examples"] == [
        "Do you offer engraving?", "Can I get my order engraved?", "Is engraving available for the items you sell?"]
    assert unanswered["clusters"][1]["last_at"] == "2026-03-11T09:00:01+00:00"

    assert r["top_articles"] == [
        {"id": "refund-timing", "title": "When will I get my refund?", "citations": 3, "up": 1, "down": 1},
        {"id": "opening-hours", "title": "Opening hours", "citations": 1, "up": 1, "down": 0},
        {"id": "paypal", "title": "Can I pay with PayPal?", "citations": 1, "up": 0, "down": 1}]
    assert [(d["conversation"], d["turn"], d["question"]) for d in r["thumbed_down"]] == [
        ("c5", 2, "How long does a refund take to arrive?"), ("c3", 2, "Can I pay with PayPal?")]
    assert r["thumbed_down"][1]["answer"] == "Yes, PayPal works." and r["thumbed_down"][1]["sources"] == [
        {"id": "paypal", "title": "Can I pay with PayPal?"}]

    assert r["series"] == [
        {"bucket": "2026-03-02", "conversations": 4, "contained": 2, "containment": 0.5, "turns": 19,
         "handoffs": 2, "unanswered": 3, "up": 2, "down": 1, "rated": 3, "csat_mean": 3.67},
        {"bucket": "2026-03-09", "conversations": 2, "contained": 0, "containment": 0.0, "turns": 14,
         "handoffs": 2, "unanswered": 2, "up": 0, "down": 1, "rated": 1, "csat_mean": 3.0}]


async def test_a_range_selects_conversations_by_start_and_events_by_their_time(sqlite_store: Any) -> None:
    day = await build_report(sqlite_store, parse_range("2026-03-02", "2026-03-02", now=NOW))  # one whole day
    assert day["range"]["until"] == "2026-03-03T00:00:00+00:00"
    assert (day["conversations"]["total"], day["conversations"]["contained"]) == (2, 1)
    assert day["turns"]["total"] == 9 and day["handoffs"]["total"] == 1
    assert [(c["question"], c["count"]) for c in day["unanswered"]["clusters"]] == [("Do you offer engraving?", 2)]
    assert [s["bucket"] for s in day["series"]] == ["2026-03-02"]

    # a range with an empty day in it: every day is in the series, zeros included
    days = await build_report(sqlite_store, parse_range("2026-03-04", "2026-03-06", now=NOW))
    assert [(s["bucket"], s["conversations"], s["turns"], s["containment"]) for s in days["series"]] == [
        ("2026-03-04", 1, 6, 1.0), ("2026-03-05", 0, 0, None), ("2026-03-06", 0, 0, None)]
    assert days["satisfaction"]["rated"] == 0 and days["satisfaction"]["mean"] is None

    # an event inside the range counts even when its conversation started before it: c5's
    # turns 5 to 9 (agent reply, note, return, a declined question) but not its hand-off
    late = await build_report(sqlite_store, parse_range("2026-03-10T12:02:05", "2026-03-10T23:00:00", now=NOW))
    assert late["conversations"]["total"] == 0 and late["handoffs"]["total"] == 0
    assert late["turns"] == {"total": 5, "customer": 1, "bot": 2, "agent": 1, "notes": 1}
    assert late["unanswered"]["total"] == 1

    week = await build_report(sqlite_store, parse_range(since="2026-03-09", bucket="week", now=NOW))
    assert (week["conversations"]["total"], week["conversations"]["containment"]) == (2, 0.0)
    assert week["feedback"] == {"up": 0, "down": 1, "rated": 1, "up_share": 0.0}
    assert [s["bucket"] for s in week["series"]] == ["2026-03-09"]


async def test_the_fake_store_gives_the_same_report(sqlite_store: Any) -> None:
    fake = InMemoryConversationStore()
    await fake.start()
    await populate(fake)
    for rng in (parse_range(bucket="week", now=NOW), parse_range("2026-03-03", "2026-03-10", now=NOW)):
        assert await build_report(fake, rng) == await build_report(sqlite_store, rng)


def test_ranges_are_parsed_and_bad_ones_refused() -> None:
    rng = parse_range("2026-03-02", "2026-03-08", "week", now=NOW)
    assert (rng.since, rng.until, rng.bucket) == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC),
                                                  "week")
    assert parse_range("7d", now=NOW).since == datetime(2026, 3, 5, tzinfo=UTC)
    assert parse_range("", "", "", now=NOW) == ReportRange(None, None, "day")
    assert parse_range(until="2026-03-02T10:00:00+01:00", now=NOW).until == datetime(2026, 3, 2, 9, tzinfo=UTC)
    with pytest.raises(ReportRangeError, match="is not a date: give YYYY-MM-DD"):
        parse_range("March 2nd", now=NOW)
    with pytest.raises(ReportRangeError, match="must come before until"):
        parse_range("2026-03-09", "2026-03-02", now=NOW)
    with pytest.raises(ReportRangeError, match="bucket 'month' is not one of day, week"):
        parse_range(bucket="month", now=NOW)
    with pytest.raises(ReportRangeError, match="bucket by week"):
        parse_range("2010-01-01", "2026-01-01", now=NOW)


def test_question_grouping_and_durations() -> None:
    assert question_words("Do you offer engraving?") == question_words("engraved") == {"engrav"}
    assert question_words("Shipping to Norway?") == {"ship", "norway"}
    groups = cluster_questions(["Do you offer engraving?", "Do you offer gift wrapping?",
                                "Can I get my order engraved?", "Do you ship abroad?",
                                "Is shipping to Norway possible?", "Gift wrapping for a birthday"])
    assert groups == [[0, 2], [1, 5], [3, 4]]
    assert duration_stats([]) == {"count": 0, "mean_s": None, "median_s": None, "p90_s": None}
    assert duration_stats([10, 1, 4, 100]) == {"count": 4, "mean_s": 28.8, "median_s": 7.0, "p90_s": 100.0}


async def test_groups_link_to_the_open_faq_proposal_they_match(sqlite_store: Any) -> None:
    report = await build_report(sqlite_store, parse_range(bucket="week", now=NOW))
    engraving = ProposalRef("p-1", "Can I have my gift engraved", ("Can I have my gift engraved?",), 3)
    refunds = ProposalRef("p-2", "When will I get my refund", ("When will I get my refund?",), 1)
    linked = link_proposals(report, [refunds, engraving])
    assert [c["proposal"] for c in linked["unanswered"]["clusters"]] == [
        {"id": "p-1", "title": "Can I have my gift engraved", "count": 3}, None]
    assert linked["unanswered"]["open_proposals"] == 2
    assert link_proposals(report, [])["unanswered"]["clusters"][0]["proposal"] is None


# -- the command line and the API ----------------------------------------------------------------

@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """The demo project (no web chat) with the fixture in its own conversation store."""
    root = copy_demo(tmp_path / "demo")
    config = yaml.safe_load((root / "bot.yaml").read_text(encoding="utf-8"))
    config["channels"] = {}
    (root / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    async def fill() -> None:
        project = Project.load(root)
        project.state_dir.mkdir(parents=True, exist_ok=True)
        store = SQLiteConversationStore(project.state_dir / CONVERSATIONS_DB)
        await store.start()
        await populate(store)
        await store.close()
        with ProposalStore(project.db_path) as proposals:  # one open FAQ proposal, one rejected
            proposals.add([Proposal("p-engrave", "Do you engrave wooden items", ("Do you engrave wooden items?",),
                                    "Yes, up to 20 characters.", 2, ("x1", "x2")),
                           Proposal("p-wrap", "Do you gift wrap", ("Do you gift wrap?",), "No.", 1, ("x3",))])
            proposals.reject("p-wrap", "olivia")

    asyncio.run(fill())
    return root


def _expected(root: Path, *args: str | None) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        project = Project.load(root)
        store = SQLiteConversationStore(project.state_dir / CONVERSATIONS_DB, read_only=True)
        await store.start()
        try:
            return await analytics_report(project, store, parse_range(*args))
        finally:
            await store.close()

    return asyncio.run(go())


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_json_and_plots(project_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plots = tmp_path / "plots"
    assert main(["--project", str(project_dir), "report", "--since", "2026-03-01", "--until", "2026-03-14",
                 "--bucket", "week", "--json", "--plots", str(plots)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == _expected(project_dir, "2026-03-01", "2026-03-14", "week")
    assert out["conversations"]["total"] == 6 and out["conversations"]["containment"] == 0.3333
    assert [c["proposal"] for c in out["unanswered"]["clusters"]] == [
        {"id": "p-engrave", "title": "Do you engrave wooden items", "count": 2}, None]
    assert out["unanswered"]["open_proposals"] == 1
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["conversations.png", "feedback.png", "handoffs.png", "satisfaction.png", "times.png"]
    for name in names:
        width, height = _png_size(plots / name)
        assert width >= 600 and height >= 300 and (plots / name).stat().st_size > 5000

    assert main(["--project", str(project_dir), "report", "--since", "2026-03-09"]) == 0
    text = capsys.readouterr().out
    assert "Conversations        2" in text and "Containment          0.0%" in text
    assert "asked_for_human" in text and "Do you ship abroad?" in text
    assert main(["--project", str(project_dir), "report"]) == 0
    assert "Do you offer engraving?  [FAQ proposal p-engrave]" in capsys.readouterr().out


def test_report_refuses_a_bad_range_and_a_missing_store(project_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--project", str(project_dir), "report", "--since", "yesterday"]) == 1
    assert "since 'yesterday' is not a date: give YYYY-MM-DD" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("not a directory")
    assert main(["--project", str(project_dir), "report", "--plots", str(tmp_path / "a-file")]) == 1
    assert "cannot write the plots into" in capsys.readouterr().err
    empty = copy_demo(tmp_path / "empty")
    assert main(["--project", str(empty), "report"]) == 1
    assert "no conversations are stored yet" in capsys.readouterr().err


async def test_the_api_gives_the_report_to_operators_only(project_dir: Path, aiohttp_client: Any) -> None:
    from tests.test_auth import Staff

    project = Project.load(project_dir)
    store = SQLiteConversationStore(project.state_dir / CONVERSATIONS_DB)
    engine = Engine(retriever=StaticRetriever(), responder=ScriptedResponder(), store=store)
    client = await aiohttp_client(build_app(project, engine))
    auth = client.app[AUTH]
    people = []
    try:
        for name, role in (("olivia", "operator"), ("alice", "agent")):
            person = Staff(client)
            people.append(person)
            assert (await person.signin(name, auth.add_user(name, role))).status == 303
        olivia, alice = people
        query = "/api/analytics?since=2026-03-02&until=2026-03-08&bucket=day"
        status, body = await olivia.call("GET", query)
        assert status == 200
        expected = await analytics_report(project, store, parse_range("2026-03-02", "2026-03-08", "day"))
        assert body == json.loads(json.dumps(expected))
        assert body["unanswered"]["clusters"][0]["proposal"]["id"] == "p-engrave"
        assert body["conversations"]["total"] == 4 and len(body["series"]) == 7
        assert (await alice.call("GET", query))[0] == 403
        status, body = await olivia.call("GET", "/api/analytics?since=2026-03-09&until=2026-03-02")
        assert status == 400 and "must come before until" in body["error"]
        async with client.get("/api/analytics") as anonymous:
            assert anonymous.status == 401
        async with client.get("/analytics", allow_redirects=False) as page:
            assert page.status == 303 and page.headers["Location"].startswith("/signin")
    finally:
        for person in people:
            await person.http.close()
