"""Transcript ingestion: readers, per-line problems, normalisation, filters, dedup, split, report."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from botkit.store import SQLiteConversationStore
from botkit.testing.fakes import InMemoryConversationStore
from botkit.types import Handoff, Turn
from training.redact import Redactor
from training.transcripts import (
    Ledger,
    NearDuplicates,
    TranscriptError,
    normalise,
    prepare,
    read_conversations,
    read_csv,
    read_jsonl,
    read_store,
    split_of,
)
from training.types import Message, Transcript, read_prepared

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "transcripts"
FIXTURE = Path(__file__).parent / "fixtures" / "pii.jsonl"
REDACTOR = Redactor(order_id_pattern=r"TP-\d{6}")


def conv(cid: str, *texts: str, roles: tuple[str, ...] = ("customer", "agent"), meta: dict | None = None) -> dict:
    return {"id": cid, "messages": [{"role": roles[i % len(roles)], "text": t} for i, t in enumerate(texts)],
            "meta": meta or {}}


def good(cid: str, topic: str = "shipping") -> dict:
    return conv(cid, f"Hi, how long does {topic} take for order {cid}?",
                f"Hello! {topic.title()} for {cid} usually takes 3 to 6 business days after packing, number {cid}.",
                "Thanks a lot", f"You're welcome, enjoy {cid}!")


def write_jsonl(path: Path, objs: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


# -- readers -----------------------------------------------------------------------------------
def test_read_jsonl_counts_each_bad_line(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [
        good("a1"),
        good("a2"),
        '{"id": "a3", "messages": [',                     # line 3: malformed JSON
        conv("a4", "hi", "there", roles=("customer", "wizard")),  # unknown role
        {"id": "a5", "messages": []},                      # empty conversation
        "[1, 2]",                                          # not an object
        {"messages": [{"role": "customer", "text": "x"}]},  # no id
        "",                                                # blank lines are not records
    ])
    ledger = Ledger()
    got = list(read_jsonl(f, ledger))
    assert [t.id for t in got] == ["a1", "a2"]
    assert got[0].source.endswith("a.jsonl:1") and got[0].messages[0].role == "customer"
    assert ledger.rejected == {"malformed JSON": 1, "unknown role": 1, "not a JSON object": 1, "missing id": 1}
    assert ledger.dropped == {"empty": 1}
    assert ledger.examples["malformed JSON"][0].startswith(f"{f}:3: ")
    assert "'wizard'" in ledger.examples["unknown role"][0] and ":4:" in ledger.examples["unknown role"][0]
    assert ledger.records == 7 and ledger.conversations == 3
    assert ledger.records == ledger.conversations + sum(ledger.rejected.values())
    problems = ledger.problems()
    assert any(p.line == 3 and "malformed JSON" in p.message for p in problems)


def test_invalid_utf8_line_is_redecoded_or_rejected(tmp_path: Path) -> None:
    f = tmp_path / "enc.jsonl"
    line2 = json.dumps(conv("e2", "Caf\u00e9 mug broke", "Sorry! Replacement sent."), ensure_ascii=False)
    f.write_bytes((json.dumps(good("e1")) + "\n").encode() + line2.encode("cp1252") + b"\n")
    ledger = Ledger()
    got = list(read_jsonl(f, ledger))
    assert [t.id for t in got] == ["e1", "e2"] and got[1].messages[0].text == "Caf\u00e9 mug broke"
    assert ledger.redecoded == 1 and ":2:" in ledger.redecoded_examples[0]
    strict = Ledger()
    assert [t.id for t in read_jsonl(f, strict, encoding_fallback=None)] == ["e1"]
    assert strict.rejected == {"invalid UTF-8": 1} and f"{f}:2:" in strict.examples["invalid UTF-8"][0]


def test_binary_and_oversized_files(tmp_path: Path) -> None:
    b = tmp_path / "blob.jsonl"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    ledger = Ledger()
    assert list(read_jsonl(b, ledger)) == [] and ledger.files_rejected == {"binary file": 1}
    big = write_jsonl(tmp_path / "big.jsonl", [good(f"b{i}") for i in range(50)])
    with pytest.raises(TranscriptError, match=r"over the limit"):
        list(read_jsonl(big, Ledger(), max_bytes=1000))
    long = write_jsonl(tmp_path / "long.jsonl", [good("l1"), conv("l2", "x" * 5000, "y"), good("l3")])
    ledger = Ledger()
    assert [t.id for t in read_jsonl(long, ledger, max_line_bytes=2000)] == ["l1", "l3"]
    assert ledger.rejected == {"line too long": 1} and ":2:" in ledger.examples["line too long"][0]


def test_read_csv_groups_orders_and_counts(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "conversation_id,time,speaker,text\n"
        "k1,2025-01-01T10:02:00Z,agent,Second\n"
        "k1,2025-01-01T10:01:00Z,Customer,First\n"
        "k2,2025-01-01T11:00:00Z,user,Hello\n"
        "k2,2025-01-01T11:01:00Z,assistant,\"Hi, multi\nline\"\n"
        "k3,2025-01-01T12:00:00Z,customer,Hey\n"
        "k3,2025-01-01T12:01:00Z,martian,???\n"
        "k4,2025-01-01T13:00:00Z,customer\n", encoding="utf-8")
    ledger = Ledger()
    got = {t.id: t for t in read_csv(f, ledger)}
    assert [m.text for m in got["k1"].messages] == ["First", "Second"]
    assert [m.role for m in got["k2"].messages] == ["customer", "bot"]
    assert got["k2"].messages[1].text == "Hi, multi\nline"
    assert "k3" not in got and ledger.dropped == {"has rejected rows": 1}
    assert ledger.rejected == {"unknown role": 1, "malformed CSV row": 1}
    assert ":9:" in ledger.examples["malformed CSV row"][0]  # physical line of the bad row


async def fill_store(store: Any, now: datetime) -> None:
    """Three conversations: answered by the bot, resolved by an agent, an open hand-off."""
    for cid in ("s-bot", "s-agent", "s-open"):
        await store.get_or_create(cid, "webchat", f"cust-{cid}", {}, now)
    await store.record([Turn("s-bot", 1, "customer", "Do you ship to Canada?", now),
                        Turn("s-bot", 2, "bot", "Yes, 5-9 business days.", now + timedelta(seconds=5),
                             action="answer")])
    await store.set_feedback("s-bot", 2, 1)
    h = Handoff(0, "s-agent", "asked for a human", "human", "", "wants agent", "webchat", "cust", now)
    await store.record([Turn("s-agent", 1, "customer", "My kettle broke, I want a person", now),
                        Turn("s-agent", 2, "bot", "Connecting you to our team.", now, action="escalate")],
                       status="waiting", handoff=h)
    await store.assign("s-agent", "priya", now)
    await store.record([Turn("s-agent", 3, "agent", "Hi! I've sent a replacement.", now, author="priya")])
    await store.release("s-agent", "priya", "returned", now)
    h2 = Handoff(0, "s-open", "asked for a human", "human", "", "", "webchat", "cust", now)
    await store.record([Turn("s-open", 1, "customer", "Refund please", now),
                        Turn("s-open", 2, "bot", "Connecting you.", now, action="escalate")],
                       status="waiting", handoff=h2)


def test_read_store(tmp_path: Path) -> None:
    db = tmp_path / "conv.db"
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


    async def with_store(path: Path, now: datetime) -> None:
        store = SQLiteConversationStore(path)
        await store.start()
        try:
            await fill_store(store, now)
        finally:
            await store.close()

    asyncio.run(with_store(db, t0))
    got = {t.id: t for t in read_store(db)}
    assert set(got) == {"s-bot", "s-agent", "s-open"}
    assert got["s-bot"].messages[1].time == "2025-03-01T09:00:05.000000+00:00"  # as the store wrote it
    assert got["s-bot"].meta["escalated"] is False and got["s-bot"].meta["feedback"] == {"up": 1, "down": 0}
    assert [m.role for m in got["s-agent"].messages] == ["customer", "bot", "agent"]
    assert got["s-agent"].meta["resolved_by_agent"] is True and got["s-agent"].meta["channel"] == "webchat"
    assert got["s-open"].meta["escalated"] is True and got["s-open"].meta["resolved"] is False
    # prepare keeps the bot-handled and agent-resolved conversations, drops the open hand-off
    out = tmp_path / "out"
    report = prepare([], out, redactor=REDACTOR, store_db=db, validation_fraction=0.0)
    assert report.kept == 2 and report.dropped == {"escalated unresolved": 1}


def test_any_conversation_store_backend_gives_the_same_transcripts(tmp_path: Path) -> None:
    db = tmp_path / "conv.db"
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    async def both() -> tuple[list[Any], Ledger]:
        sqlite_store = SQLiteConversationStore(db)
        memory = InMemoryConversationStore()
        for store in (sqlite_store, memory):
            await store.start()
            await fill_store(store, t0)
        await sqlite_store.close()
        ledger = Ledger()
        return await read_conversations(memory, ledger, source="memory"), ledger

    from_memory, ledger = asyncio.run(both())
    from_sqlite = read_store(db)
    assert [t.id for t in from_memory] == [t.id for t in from_sqlite] == ["s-agent", "s-bot", "s-open"]
    assert [(t.messages, t.meta) for t in from_memory] == [(t.messages, t.meta) for t in from_sqlite]
    assert from_memory[0].source == "memory:s-agent" and from_sqlite[0].source == f"{db}:s-agent"
    assert (ledger.records, ledger.conversations) == (3, 3)


def test_a_database_that_is_not_a_conversation_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "kb.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE articles (id TEXT)")
    before = other.read_bytes()
    with pytest.raises(TranscriptError, match="not a readable botkit conversation store: no such table"):
        read_store(other)
    assert other.read_bytes() == before  # no tables added, not switched to WAL


# -- normalisation, filters, dedup, split ------------------------------------------------------
def test_normalise_merges_and_cleans() -> None:
    t = Transcript("n", (Message("customer", "  Cafe\u0301\u200b  mug\x07 "), Message("customer", "broke\t\tagain"),
                         Message("agent", "\r\nSorry!\r\n\r\n\r\n\r\nReplacing it. "), Message("agent", "   ")))
    n = normalise(t)
    assert [(m.role, m.text) for m in n.messages] == [("customer", "Caf\u00e9 mug\nbroke again"),
                                                       ("agent", "Sorry!\n\nReplacing it.")]


def test_filters_dedup_and_counts_add_up(tmp_path: Path) -> None:
    data = [good(f"g{i}", topic) for i, topic in enumerate(["shipping", "delivery", "returns", "refunds", "exchange"])]
    data += [
        dict(good("g0"), id="dup-exact"),                                   # exact duplicate of g0
        json.loads(json.dumps(good("g1", "delivery")).replace("Thanks a lot", "Thanks a lot!!")) | {"id": "dup-near"},
        conv("ab", "Where is my parcel?", "Checking now", "Hello??"),           # abandoned
        conv("short", "hi"),                                                 # too short
        conv("noreply", "hi", "[queued]", "anyone?", roles=("customer", "system")),  # no reply
        conv("esc", "I want a human", "Connecting you", meta={"escalated": True}),
        conv("flag", "test", "test reply", meta={"flagged": True}),
        "not json",
    ]
    f = write_jsonl(tmp_path / "in.jsonl", data)
    out = tmp_path / "out"
    report = prepare([f], out, redactor=REDACTOR, seed=1)
    assert report.dropped == {"exact duplicate": 1, "near duplicate": 1, "abandoned": 1, "too short": 1,
                              "no reply": 1, "escalated unresolved": 1, "flagged": 1}
    assert report.records_rejected == {"malformed JSON": 1}
    assert report.conversations == report.kept + sum(report.dropped.values())
    assert report.records == report.conversations + sum(report.records_rejected.values())
    saved = json.loads((out / "report.json").read_text())
    assert saved["kept"]["total"] == 5 and saved["dropped"] == report.dropped
    for step in saved["steps"][1:]:
        assert step["in"] >= step["out"]
    assert "near duplicate" in (out / "report.md").read_text()


def test_near_duplicates_lsh() -> None:
    nd = NearDuplicates(0.8)
    base = {hash(f"w{i}") for i in range(100)}
    assert nd.check_add("a", base) is None
    assert nd.check_add("b", set(range(1000, 1100))) is None
    hit = nd.check_add("c", (base - {hash("w0")}) | {7})
    assert hit is not None and hit[0] == "a" and hit[1] >= 0.8


def test_split_is_deterministic_and_by_conversation(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [good(f"id{i}", f"topic{i} words{i} more{i}") for i in range(60)])
    r1 = prepare([f], tmp_path / "o1", redactor=REDACTOR, validation_fraction=0.25, seed=3)
    r2 = prepare([f], tmp_path / "o2", redactor=REDACTOR, validation_fraction=0.25, seed=3)
    assert (r1.train, r1.validation) == (r2.train, r2.validation) and r1.validation > 0
    for split in ("train.jsonl", "validation.jsonl"):
        assert (tmp_path / "o1" / split).read_bytes() == (tmp_path / "o2" / split).read_bytes()
    train = {t.id for t in read_prepared(tmp_path / "o1" / "train.jsonl")}
    val = {t.id for t in read_prepared(tmp_path / "o1" / "validation.jsonl")}
    assert not train & val and len(train | val) == 60
    assert all(split_of(i, 0.25, 3) == "validation" for i in val)


# -- redaction before writing, refusal ---------------------------------------------------------
def test_no_fixture_pii_is_written(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    pii = [p["text"] for r in rows for p in r["pii"]]
    data = [conv(f"p{i}", r["text"], f"Thanks for the details ({i}), I've updated that for you.", "Great, bye",
                 f"Bye! Reference {i}.") for i, r in enumerate(rows) if r["pii"]]
    data[0]["meta"] = {"customer_email": "anna.k@example.com"}
    f = write_jsonl(tmp_path / "pii.jsonl", data)
    out = tmp_path / "out"
    report = prepare([f], out, redactor=REDACTOR, near_dup_threshold=1.0)
    assert report.kept == len(data)
    assert sum(report.redactions.values()) >= len(pii)
    for name in ("train.jsonl", "validation.jsonl", "report.json", "report.md"):
        written = (out / name).read_text(encoding="utf-8")
        leaked = [p for p in pii if p in written]
        assert not leaked, (name, leaked)
    assert "[EMAIL]" in (out / "report.md").read_text() or "⟨EMAIL⟩" in (out / "report.md").read_text()


def test_empty_result_is_refused(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "bad.jsonl", ["{oops", conv("s", "hi")])
    out = tmp_path / "out"
    with pytest.raises(TranscriptError, match=r"nothing to prepare.*malformed JSON 1") as exc:
        prepare([f], out, redactor=REDACTOR)
    assert any(p.line == 1 for p in exc.value.problems)
    assert not out.exists()


def test_prepare_demo_transcripts(tmp_path: Path) -> None:
    redactor = Redactor(order_id_pattern=r"TP-\d{6}", keep=["+1 (800) 555-0147"])
    report = prepare([DEMO], tmp_path / "demo", redactor=redactor)
    assert report.kept >= 40 and report.validation >= 1
    assert report.records_rejected == {"unknown role": 1}
    for reason in ("exact duplicate", "near duplicate", "abandoned", "too short", "flagged", "escalated unresolved"):
        assert report.dropped.get(reason), reason
    assert {"EMAIL", "PHONE", "CARD", "ORDER_ID", "ADDRESS", "NAME"} <= set(report.redactions)
    written = (tmp_path / "demo" / "train.jsonl").read_text() + (tmp_path / "demo" / "validation.jsonl").read_text()
    assert "4111 1111 1111 1111" not in written and "TP-123456" not in written and "+1 (800) 555-0147" in written
    assert report.conversations == report.kept + sum(report.dropped.values())
