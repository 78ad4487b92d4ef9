"""Property-based fuzzing (hypothesis) of what botkit reads from outside: web chat frames, Telegram
webhook bodies, knowledge files, and text given to the transcript redactor.

Each parser either returns a well-formed result or raises its documented error type; nothing
else may escape. Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (the default: 200 examples a test,
derandomized so that a CI run is reproducible) and ``dev`` (2000 random examples, to hunt for
new bugs: ``HYPOTHESIS_PROFILE=dev pytest tests/test_fuzz.py``). Failing examples are kept in
``.hypothesis/`` (git-ignored) and replayed first on the next run.

The ``@example`` cases are the bugs these tests found, each with its minimal input.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from botkit.errors import ImportFailed
from connectors.webchat import protocol as proto
from knowledge.chunking import chunk_article
from knowledge.ingest import ENTRY_KEYS, MAX_TITLE, SUPPORTED, read_sources
from knowledge.types import ID_PATTERN
from tests.conftest import REPO
from tests.test_telegram import shared_kb  # noqa: F401  (the module's demo KB, read only)

_DB = DirectoryBasedExampleDatabase(str(REPO / ".hypothesis" / "examples"))
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("dev", max_examples=2000, deadline=None, database=_DB, suppress_health_check=_SLOW_OK,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- strategies shared by the parsers -------------------------------------------------------------

_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
            | st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "\ufeff", "𝔘", "", " "]))
JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_JSONISH = st.text(alphabet='{}[]":,0123456789.eE-+ tnrulfasN\\ud8', max_size=60)


def _or_junk(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, JSON_VALUES)  # mostly the right type, sometimes anything


def _dumps(value: Any, ascii_only: bool) -> str:
    # ensure_ascii spells a lone surrogate as an escape, as a browser's JSON.stringify does
    return json.dumps(value, ensure_ascii=ascii_only)


def _strict_json(value: Any) -> None:
    """``value`` goes out as JSON any client parses: no NaN or Infinity, encodable as UTF-8."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert json.loads(text) == value


# -- 1. the web chat frame parser -------------------------------------------------------------------

MAX_CHARS = 500
_IDS = _or_junk(st.text(max_size=70) | st.integers(-(2**54), 2**54))
CLIENT_FRAMES = st.one_of(
    st.fixed_dictionaries({"type": st.just("message"), "text": _or_junk(st.text(max_size=MAX_CHARS + 20))},
                          optional={"id": _IDS}),
    st.fixed_dictionaries({"type": st.just("hello")}, optional={"session": _or_junk(st.text(max_size=60))}),
    st.fixed_dictionaries({"type": st.just("feedback"), "turn": _or_junk(st.integers(-3, 2**60)),
                           "value": _or_junk(st.sampled_from([1, -1, 0, 2]))}, optional={"id": _IDS}),
    st.fixed_dictionaries({"type": st.just("rate"), "score": _or_junk(st.integers(-1, 7))}, optional={"id": _IDS}),
    st.fixed_dictionaries({"type": st.just("ping")}, optional={"data": JSON_VALUES}),
    st.fixed_dictionaries({"type": st.just("history"), "before": _or_junk(st.integers(-1, 2**60))},
                          optional={"limit": _or_junk(st.integers(-1, proto.MAX_HISTORY_TURNS + 2))}),
    st.fixed_dictionaries({"type": _or_junk(st.text(max_size=50))}, optional={"id": _IDS}),
)
FRAME_TEXT = st.one_of(
    st.tuples(CLIENT_FRAMES, st.booleans()).map(lambda t: _dumps(*t)),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda t: _dumps(*t)),
    st.text(max_size=200), _JSONISH,
    st.integers(1, 50_000).map(lambda n: '{"type":"ping","data":' + "[" * n),  # nesting past the recursion limit
    st.integers(4000, 6000).map(lambda n: '{"type":"ping","data":' + "7" * n + "}"),  # int past str() limit
)
_CLIENT_TYPES = (proto.Hello, proto.SendMessage, proto.Feedback, proto.Rate, proto.Ping, proto.HistoryRequest)


@given(FRAME_TEXT)
@example('{"type":"ping","data":NaN}')  # was echoed as a pong with NaN: JSON.parse in the browser throws
@example('{"type":"ping","data":Infinity}')
@example('{"type":"ping","data":"\\ud800"}')  # the pong could not be encoded as UTF-8: the writer died
@example('{"type":"message","text":"hi \\ud800"}')  # reached the engine and SQLite: UnicodeEncodeError
@example('{"type":"hello","session":"\\ud800"}')  # the session lookup hashed it: UnicodeEncodeError
@example('{"type":"message","id":"\\ud800","text":""}')  # echoed in the error frame: unencodable
@example('{"type":"feedback","turn":9223372036854775808,"value":1}')  # SQLite: OverflowError
@example('{"type":"history","before":9223372036854775808}')
def test_webchat_parse_accepts_or_refuses_cleanly(data: str) -> None:
    try:
        frame = proto.parse(data, MAX_CHARS)
    except proto.ProtocolError as exc:
        assert exc.code in proto.ERROR_CODES
        error = exc.frame()
        _strict_json(error)
        assert error["type"] == "error" and error["message"]
        cid = error["id"]
        assert cid is None or (isinstance(cid, str) and len(cid) <= proto.MAX_ID_CHARS) or (
            type(cid) is int and abs(cid) < 2**53)
        return
    assert isinstance(frame, _CLIENT_TYPES)
    _strict_json(dataclasses.asdict(frame))
    if isinstance(frame, proto.Ping):
        _strict_json({"type": "pong", "data": frame.data})
    if isinstance(frame, proto.SendMessage):
        assert 1 <= len(frame.text) <= MAX_CHARS and frame.text == frame.text.strip()
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", frame.text)
    if isinstance(frame, proto.Feedback):  # a turn number SQLite can hold (it raised OverflowError past 2**63)
        assert 1 <= frame.turn < 2**53 and frame.value in (1, -1)
    if isinstance(frame, proto.Rate):
        assert 1 <= frame.score <= 5
    if isinstance(frame, proto.HistoryRequest):
        assert 1 <= frame.before < 2**53 and 1 <= frame.limit <= proto.MAX_HISTORY_TURNS


def test_webchat_cut_emoji_is_kept_as_a_replacement_character() -> None:
    frame = proto.parse('{"type":"message","id":1,"text":"where is my parcel \\ud83d"}', MAX_CHARS)
    assert frame == proto.SendMessage(1, "where is my parcel \ufffd")
    whole = proto.parse('{"type":"message","text":"thanks \\ud83d\\ude00"}', MAX_CHARS)
    assert isinstance(whole, proto.SendMessage) and whole.text == "thanks 😀"  # a pair is one character


# -- 2. the Telegram webhook over a real server ---------------------------------------------------

_fuzz_chats = itertools.count(7_000_001)
_probe_chats = itertools.count(8_000_001)


# Dates past what datetime holds and null/junk chats included: both were 5xx once (see
# test_telegram_webhook_refuses_malformed_updates).
_DATES = _or_junk(st.integers(-(2**33), 2**33) | st.integers(10**11, 10**20))
_JUNK_CHAT = JSON_VALUES


def _update_dicts() -> st.SearchStrategy[dict[str, Any]]:
    """Updates shaped like Telegram's, with any field sometimes replaced by any JSON value."""
    chat_id = st.builds(lambda: next(_fuzz_chats))
    user = st.fixed_dictionaries(
        {"id": _or_junk(st.integers(1, 2**40)), "is_bot": _or_junk(st.booleans()),
         "first_name": _or_junk(st.text(max_size=20))},
        optional={"language_code": _or_junk(st.sampled_from(["en", "de", ""]))})
    chat = st.fixed_dictionaries({"id": _or_junk(chat_id), "type": _or_junk(st.sampled_from(["private", "group"]))},
                                 optional={"first_name": _or_junk(st.text(max_size=10))})
    entity = st.fixed_dictionaries({"type": _or_junk(st.sampled_from(["bot_command", "bold", "url"])),
                                    "offset": _or_junk(st.integers(-2, 40)), "length": _or_junk(st.integers(-2, 40))})
    text = st.one_of(st.text(max_size=120), st.sampled_from(["/start", "/help me", "/frob", "/", "/start@bot x"]))
    message = st.fixed_dictionaries(
        {"message_id": _or_junk(st.integers(1, 2**31)), "date": _DATES,
         "chat": st.one_of(chat, chat, _JUNK_CHAT)},
        optional={"from": _or_junk(user), "text": _or_junk(text), "entities": _or_junk(st.lists(entity, max_size=3)),
                  "caption": _or_junk(st.text(max_size=20)), "sticker": JSON_VALUES, "photo": JSON_VALUES})
    return st.fixed_dictionaries({"update_id": _or_junk(st.integers(0, 2**31))},
                                 optional={"message": _or_junk(message), "edited_message": _or_junk(message),
                                           "callback_query": JSON_VALUES})


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate becomes bytes that are not UTF-8


WEBHOOK_BODIES = st.one_of(
    _update_dicts().map(json.dumps), _update_dicts().map(json.dumps),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda t: _utf8(_dumps(*t))),
    st.binary(max_size=200), _JSONISH, st.text(max_size=100).map(_utf8),
)
# Python's datetime cannot hold a date past year 9999: de_json raises OverflowError, which the
# webhook does not catch (500). Telegram never sends this, but it redelivers an update answered
# with a 5xx, and holds the updates after it meanwhile.
_OVERFLOW_DATE = ('{"update_id":1,"message":{"message_id":1,"date":100000000000000000000,'
                  '"chat":{"id":1,"type":"private"}}}')
# A message without a chat: the storing update queue's filter reads message.chat.type (AttributeError), 503.
_NULL_CHAT = '{"update_id":0,"message":{"message_id":1,"date":0,"chat":null}}'
_LIST_CHAT_ID = '{"update_id":2,"message":{"message_id":1,"date":0,"chat":{"id":[1],"type":"private"},"text":"hi"}}'
DEEP_BODY = '{"update_id":1,"message":' + "[" * 100_000  # json.loads: RecursionError (was a 500)


@pytest.fixture
async def bot(tmp_path: Path, shared_kb: Any, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Any]:
    from botkit.engine import Engine
    from botkit.escalation import EscalationConfig, build_rules
    from botkit.responders.extractive import ExtractiveResponder
    from botkit.store import SQLiteConversationStore
    from tests.fake_telegram import FakeTelegram
    from tests.test_telegram import SECRET, TOKEN, SharedRetriever, serve

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)
    engine = Engine(retriever=SharedRetriever(shared_kb), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conv.sqlite3"), rules=build_rules(EscalationConfig()),
                    bot_name="Tallow & Pine")
    async with FakeTelegram(TOKEN) as fake:
        yield await serve(tmp_path, engine, fake, aiohttp_client)


async def _still_serving(bot: Any) -> None:
    """Every queued update gets processed, and a new customer's /help is still answered."""
    from tests.fake_telegram import command_update

    await asyncio.wait_for(bot.processed(), 30)
    chat = next(_probe_chats)
    assert await bot.post(command_update(chat, "help")) == 200
    await bot.fake.wait_sent(1, chat_id=chat, timeout=30)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
@pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")
@given(body=WEBHOOK_BODIES)
async def test_telegram_webhook_never_answers_5xx(bot: Any, body: str | bytes) -> None:
    status = await bot.post(body)
    assert 200 <= status < 500 and status != 403, (status, body)
    await _still_serving(bot)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")
@pytest.mark.parametrize("body", [
    pytest.param(_OVERFLOW_DATE, id="date-past-9999"),  # was 500: OverflowError from Update.de_json
    pytest.param(_NULL_CHAT, id="null-chat"),  # was 503 (and redelivered forever): AttributeError on the chat
    pytest.param(_LIST_CHAT_ID, id="list-chat-id"),  # was dropped with a TypeError in the per-chat ordering
    pytest.param(DEEP_BODY, id="deep-nesting"),
])
async def test_telegram_webhook_refuses_malformed_updates(bot: Any, body: str) -> None:
    assert await bot.post(body) == 400
    await _still_serving(bot)


# -- 3. the knowledge importers ---------------------------------------------------------------------

_KEYS = st.sampled_from(sorted(ENTRY_KEYS | {"date", "draft", "Title", "1"})) | st.text(max_size=6)
_YAML_SCALARS = st.sampled_from(["2024-02-30", "2024-01-01", "2024-13-01 10:00:00", "1e999", ".inf", ".nan", "~",
                                 "yes", "0x1F", "0o17", "1_000", "!!binary aGk=", "!!binary @@", "!!float x",
                                 "!!timestamp 2024-99-99", "'quoted'", '"\\ud800"', "[a, b]", "{a: 1}", "&x a", "*x",
                                 "|", ">", "- a", "? a", "!!python/object:os.system x", "a: b: c", "'", '"'])
_FRONT_MATTER = st.one_of(
    st.dictionaries(_KEYS, JSON_VALUES, max_size=5).map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.lists(st.tuples(_KEYS | _YAML_SCALARS, _YAML_SCALARS | st.text(max_size=15)), max_size=5).map(
        lambda kv: "\n".join(f"{k}: {v}" for k, v in kv)),
    st.text(alphabet="abc:-[]{}&*!|>'\"#?,.0123456789 \n\t", max_size=80),
    st.integers(1, 3000).map(lambda n: "tags: " + "[" * n),  # nesting past the recursion limit
    st.integers(1, 1500).map(lambda n: "tags: " + "- " * n + "x"),  # block nesting, likewise
)
_BODY = st.text(max_size=300) | st.sampled_from(["# Title\n\nBody.", "", "```\n# not a heading\n```", "#\n\n#"])
MARKDOWN = st.tuples(_FRONT_MATTER, _BODY, st.sampled_from(["---", "..."])).map(
    lambda t: f"---\n{t[0]}\n{t[2]}\n{t[1]}")
_CELL = st.text(alphabet=st.sampled_from(list('ab ,;|"\n\r\x00\u2028é')), max_size=12) | st.text(max_size=8)


def _csv_text(header: list[str], rows: list[list[str]], quoted: bool) -> str:
    if not quoted:  # joined by hand: broken quoting, stray newlines
        return "\n".join(",".join(r) for r in [header, *rows])
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    return out.getvalue()


CSV = st.builds(_csv_text, st.lists(_KEYS, min_size=1, max_size=5), st.lists(st.lists(_CELL, max_size=6), max_size=5),
                st.booleans())
_ENTRY = st.fixed_dictionaries({}, optional={k: _or_junk(st.text(max_size=40)) for k in sorted(ENTRY_KEYS)})
_JSON_LINE = st.one_of(
    st.tuples(_ENTRY, st.booleans()).map(lambda t: _dumps(*t)),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda t: _dumps(*t)),
    _JSONISH, st.just("[" * 5000), st.just('{"id":"a","title":"t","body":' + "9" * 5000 + "}"),
)
JSONL = st.lists(_JSON_LINE, max_size=5).map("\n".join)
_HTML_PARTS = st.sampled_from(["<h1>", "</h1>", "<h2 class=x>", "<p>", "</p>", "<li>", "<br/>", "<script>",
                               "</script>", "<style>", "<title>", "</title>", "<!--", "-->", "<![CDATA[", "]]>",
                               "<!", "<![if x]>", "<!DOCTYPE html>", "<?xml ?>", "&amp;", "&#x110000;", "&#0;",
                               "&#xd800;", "&nosuch;", "<", ">", "</", "<a href='", "\n", " "])
HTML = st.lists(_HTML_PARTS | st.text(max_size=10), max_size=30).map("".join)
DOCUMENTS = st.one_of(
    st.tuples(st.sampled_from(sorted(SUPPORTED)), st.binary(max_size=300)),
    st.tuples(st.sampled_from(sorted(SUPPORTED)), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))),
    st.tuples(st.sampled_from([".md", ".markdown"]), MARKDOWN.map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.just(".csv"), CSV.map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.just(".jsonl"), JSONL.map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.sampled_from([".html", ".htm"]), HTML.map(lambda t: t.encode("utf-8", "surrogatepass"))),
)


def _check_import(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz-doc{suffix}"
        path.write_bytes(data)
        try:
            drafts = read_sources([path], progress=False)
        except ImportFailed as exc:
            assert exc.problems and all(p.path == str(path) and p.message for p in exc.problems)
            str(exc).encode("utf-8", "backslashreplace")
            return
    ids = [d.id for d in drafts]
    assert drafts and len(ids) == len(set(ids))
    for d in drafts:
        assert ID_PATTERN.match(d.id) and d.id == d.id.strip()
        assert d.title.strip() and len(d.title) <= MAX_TITLE and d.body.strip()
        for text in (d.id, d.title, d.body, *d.tags, *d.questions):
            text.encode("utf-8")  # storable in SQLite
        chunks = chunk_article(d)
        assert chunks and all(isinstance(c.text, str) and c.text.strip() for c in chunks)


@given(DOCUMENTS)
@example((".md", b"---\ndate: 2024-02-30\n---\nbody\n"))  # ValueError from the YAML date constructor
@example((".md", b"---\n1: x\n---\nbody\n"))  # TypeError: sorted() of the unknown keys, an int among them
@example((".md", b"---\ntags: " + b"- " * 1500 + b"x\n---\nbody\n"))  # RecursionError in the YAML composer
@example((".jsonl", b'{"id":"a","title":"t","body":' + b"9" * 5000 + b"}"))  # ValueError: int over 4300 digits
@example((".jsonl", b"[" * 5000))  # RecursionError in json.loads
@example((".jsonl", b'{"id":"a","title":"t\\ud800","body":"b"}'))  # a lone surrogate reached SQLite
@example((".html", b"<![0"))  # AssertionError from html.parser on a bad marked section
def test_importers_return_articles_or_import_failed(doc: tuple[str, bytes]) -> None:
    _check_import(*doc)


def test_deeply_nested_front_matter_is_refused_quickly() -> None:
    """PyYAML takes time quadratic in the depth of flow nesting (3,000 '[' took 5 s, 30,000 would take
    minutes): a front matter nested deeper than any real one is refused before it is parsed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep.md"
        path.write_text("---\ntitle: t\ntags: " + "[" * 3000 + "\n---\nbody\n", encoding="utf-8")
        started = time.perf_counter()
        with pytest.raises(ImportFailed, match=r"deep.md:2: front matter is nested more than 32 brackets deep"):
            read_sources([path], progress=False)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.1f}s"  # ~0.01 s


def test_front_matter_alias_bomb_is_refused_quickly() -> None:
    """A YAML alias bomb (9 lists of 9 of the same list, 8 deep) in ``tags``: refused at once. The
    message used to format the whole value (43 million items) before cutting it to 60 characters."""
    lines = ["---", "title: t", "tags:", "- &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in itertools.pairwise("abcdefgh"):
        lines.append(f"- &{name} [{', '.join([f'*{prev}'] * 9)}]")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.md"
        path.write_text("\n".join([*lines, "---", "body", ""]), encoding="utf-8")
        started = time.perf_counter()
        with pytest.raises(ImportFailed, match="tags must be a list of strings") as failed:
            read_sources([path], progress=False)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{elapsed:.1f}s"  # ~0.05 s; the full repr took 6 s of CPU
    assert len(str(failed.value)) < 600


# -- 4. the transcript redactor -----------------------------------------------------------------------

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PII_PARTS = st.sampled_from([
    "anna.smith@example.com", "a@b.co", "x_y+z@mail.example.org", "+44 20 7946 0958", "(415) 555-0132",
    "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "221B Baker Street, London NW1 6XE", "TP-123456",
    "my name is Anna Smith", "Hi Anna,", "Thanks, Bob", "Mr. McDonald", "I'm Canadian", "order 12345",
    "@", ".", "-", "[EMAIL]", "[NAME]", "\n", " ", ",", "Dr", "Hi", "example.com", "0161 496 0000",
])
REDACTOR_TEXT = st.one_of(st.text(max_size=200), st.lists(_PII_PARTS | st.text(max_size=6), max_size=15).map("".join),
                          st.lists(_PII_PARTS, max_size=12).map(" ".join))


@given(REDACTOR_TEXT)
def test_redactor_finds_ordered_spans_of_the_text(text: str) -> None:
    from training.redact import KINDS, Redactor

    redacted, found = Redactor(order_id_pattern=r"TP-\d{6}").redact(text)
    assert isinstance(redacted, str)
    assert all(0 <= r.start < r.end <= len(text) and r.kind in KINDS for r in found)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))  # left to right, never overlapping
    assert len(redacted) == len(text) + sum(len(r.placeholder) - (r.end - r.start) for r in found)


@given(REDACTOR_TEXT)
@example("mail anna@example.com(415) 555-0132 now")  # -> "mail [EMAIL](415) 555-0132 now": the phone stays
@example("0@0.AA.0@0.AA")  # -> "[EMAIL].0@0.AA": the second address stays
def test_redactor_output_has_no_email_and_is_stable(text: str) -> None:
    from training.redact import Redactor

    redactor = Redactor(order_id_pattern=r"TP-\d{6}")
    once = redactor.redact(text)[0]
    assert not _EMAIL.search(once), once
    assert redactor.redact(once)[0] == once  # redacting a redacted text changes nothing
