"""The knowledge-base editor on the real server: every write is live for the very next
customer question, stale edits are refused, history/diff/rollback work, imports are all or
nothing with line-numbered problems, and article text is only ever data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botkit.app.keys import ENGINE
from botkit.types import IncomingMessage, Reply

# The server and signed-in browsers are shared with the auth tests (same fixtures).
from tests.test_auth import client, staff  # noqa: F401

pytestmark = pytest.mark.slow
STATIC = Path(__file__).resolve().parent.parent / "botkit" / "app" / "static"
QUESTION = "Do you offer engraving?"  # nothing in the demo knowledge base answers it
ENGRAVING = {"title": "Engraving", "tags": ["orders", "gifts"], "questions": [QUESTION, "Can I get my order engraved?"],
             "body": "Yes: we laser-engrave up to 20 characters on any wooden item for 6 EUR. Add it at checkout."}


async def ask(client: Any, text: str, conv: str = "shopper") -> Reply:
    return await client.app[ENGINE].handle(IncomingMessage(conv, text, channel="webchat"))


async def test_create_edit_delete_are_live_for_the_next_question(client: Any, staff: Any) -> None:
    olivia = await staff("olivia", "operator")
    before = await ask(client, QUESTION, "q0")
    assert not any(s.title == "Engraving" for s in before.sources)

    status, created = await olivia.call("POST", "/api/kb/articles", {**ENGRAVING, "id": "engraving"})
    assert status == 201
    article = created["article"]
    assert (article["id"], article["rev"], article["updated_by"], article["kind"]) == ("engraving", 1, "olivia", "faq")
    reply = await ask(client, QUESTION, "q1")  # no restart, no re-import
    assert reply.action == "answer" and reply.sources[0].id == "engraving" and "laser-engrave" in reply.text

    edited = {**ENGRAVING, "body": "Yes: engraving is done by hand in our workshop, up to 30 characters, for 8 EUR.",
              "rev": 1}
    status, updated = await olivia.call("PUT", "/api/kb/articles/engraving", edited)
    assert status == 200 and updated["article"]["rev"] == 2 and updated["changed"] is True
    reply = await ask(client, QUESTION, "q2")
    assert reply.sources[0].id == "engraving" and "by hand" in reply.text and "laser" not in reply.text
    status, same = await olivia.call("PUT", "/api/kb/articles/engraving", {**edited, "rev": 2})
    assert status == 200 and same["changed"] is False and same["article"]["rev"] == 2  # no empty revision

    status, deleted = await olivia.call("DELETE", "/api/kb/articles/engraving?rev=2")
    assert status == 200 and deleted["kb_version"] > updated["kb_version"]
    reply = await ask(client, QUESTION, "q3")
    assert "engraving" not in [s.id for s in reply.sources] and "by hand" not in reply.text
    assert (await olivia.call("GET", "/api/kb/articles/engraving"))[0] == 404
    status, history = await olivia.call("GET", "/api/kb/articles/engraving/history")
    assert status == 200 and history["current_rev"] is None
    assert [(r["rev"], r["action"], r["author"]) for r in history["revisions"]] == [
        (1, "create", "olivia"), (2, "update", "olivia"), (3, "delete", "olivia")]


async def test_stale_rev_is_refused_with_the_current_version(client: Any, staff: Any) -> None:
    olivia, oscar = await staff("olivia", "operator"), await staff("oscar", "operator")
    status, opened = await oscar.call("GET", "/api/kb/articles/refund-timing")
    assert status == 200
    original = opened["article"]
    fields = {k: original[k] for k in ("title", "tags", "questions", "body")}
    addition = {**fields, "body": original["body"] + "\n\nOlivia's addition.", "rev": original["rev"]}
    status, saved = await olivia.call("PUT", "/api/kb/articles/refund-timing", addition)
    assert status == 200 and saved["article"]["rev"] == original["rev"] + 1
    # Oscar still has the old revision open: his save must not silently overwrite Olivia's.
    status, conflict = await oscar.call("PUT", "/api/kb/articles/refund-timing",
                                        {**fields, "body": "Oscar's rewrite.", "rev": original["rev"]})
    assert status == 409 and "changed by olivia" in conflict["error"]
    assert conflict["current"]["rev"] == saved["article"]["rev"] and "Olivia's addition." in conflict["current"]["body"]
    status, now = await oscar.call("GET", "/api/kb/articles/refund-timing")
    assert "Olivia's addition." in now["article"]["body"] and "Oscar's rewrite." not in now["article"]["body"]
    assert (await oscar.call("DELETE", f"/api/kb/articles/refund-timing?rev={original['rev']}"))[0] == 409
    status, missing = await oscar.call("PUT", "/api/kb/articles/refund-timing", fields)
    assert status == 400 and missing["field"] == "rev"


async def test_history_diff_and_rollback(client: Any, staff: Any) -> None:
    olivia = await staff("olivia", "operator")
    status, created = await olivia.call("POST", "/api/kb/articles", ENGRAVING)  # the id comes from the title
    assert status == 201 and created["article"]["id"] == "engraving"
    status, _ = await olivia.call("PUT", "/api/kb/articles/engraving",
                                  {**ENGRAVING, "body": "No, engraving is paused while our workshop moves.", "rev": 1})
    assert status == 200
    assert "paused" in (await ask(client, QUESTION, "h1")).text

    status, history = await olivia.call("GET", "/api/kb/articles/engraving/history")
    assert [r["action"] for r in history["revisions"]] == ["create", "update"] and history["current_rev"] == 2
    status, diff = await olivia.call("GET", "/api/kb/articles/engraving/diff?from=1")
    assert status == 200
    lines = diff["diff"].splitlines()
    assert "-" + ENGRAVING["body"] in lines and "+No, engraving is paused while our workshop moves." in lines
    assert lines[0] == "--- engraving@1" and lines[1] == "+++ engraving@2"

    status, rolled = await olivia.call("POST", "/api/kb/articles/engraving/rollback", {"to": 1, "rev": 2})
    assert status == 200 and rolled["article"]["rev"] == 3 and rolled["article"]["body"] == ENGRAVING["body"]
    assert "laser-engrave" in (await ask(client, QUESTION, "h2")).text  # live again
    status, history = await olivia.call("GET", "/api/kb/articles/engraving/history")
    assert history["revisions"][-1]["action"] == "rollback" and history["revisions"][-1]["author"] == "olivia"
    # Deleted articles can be restored; a deletion itself is not a revision to restore.
    assert (await olivia.call("DELETE", "/api/kb/articles/engraving?rev=3"))[0] == 200
    status, refused = await olivia.call("POST", "/api/kb/articles/engraving/rollback", {"to": 4})
    assert status == 400 and refused["field"] == "to" and "deletion" in refused["error"]
    status, restored = await olivia.call("POST", "/api/kb/articles/engraving/rollback", {"to": 3})
    assert status == 200 and restored["article"]["rev"] == 5
    assert (await ask(client, QUESTION, "h3")).sources[0].id == "engraving"
    assert (await olivia.call("GET", "/api/kb/articles/engraving/diff?from=99"))[0] == 404


async def test_validation_errors_name_the_field(client: Any, staff: Any) -> None:
    olivia = await staff("olivia", "operator")
    cases = [
        ({"title": "No body"}, "body"),
        ({"body": "No title and no questions"}, "title"),
        ({**ENGRAVING, "id": "bad id!"}, "id"),
        ({**ENGRAVING, "tags": [1, 2]}, "tags"),
        ({**ENGRAVING, "title": "x" * 301}, "title"),
        ({**ENGRAVING, "colour": "red"}, "colour"),
        ({**ENGRAVING, "id": "refund-timing"}, "id"),  # exists: 409, not an overwrite
    ]
    for body, field in cases:
        status, answer = await olivia.call("POST", "/api/kb/articles", body)
        assert status in (400, 409) and answer["field"] == field and answer["reason"], (body, answer)
    assert (await olivia.call("GET", "/api/kb/articles/refund-timing"))[1]["article"]["rev"] == 1
    status, answer = await olivia.call("POST", "/api/kb/articles", data=b"not json",
                                       headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON" in answer["error"]
    status, answer = await olivia.call("PUT", "/api/kb/articles/refund-timing", {**ENGRAVING, "rev": 1, "id": "other"})
    assert status == 400 and answer["field"] == "id"
    assert (await olivia.call("GET", "/api/kb/articles/no-such-article"))[0] == 404
    status, answer = await olivia.call("GET", "/api/kb/articles?q=" + "x" * 5000)
    assert status == 400 and answer["field"] == "q"


async def test_search_list_and_tag_filter(client: Any, staff: Any) -> None:
    olivia = await staff("olivia", "operator")
    status, listing = await olivia.call("GET", "/api/kb/articles")
    assert status == 200 and len(listing["articles"]) >= 30
    assert "refund-timing" in {a["id"] for a in listing["articles"]}
    tag = listing["tags"][0]
    status, tagged = await olivia.call("GET", f"/api/kb/articles?tag={tag}")
    assert tagged["articles"] and all(tag in a["tags"] for a in tagged["articles"])
    assert len(tagged["articles"]) < len(listing["articles"])
    status, found = await olivia.call("GET", "/api/kb/articles?q=how long until my refund reaches my card")
    assert status == 200 and found["articles"][0]["id"] == "refund-timing" and found["articles"][0]["passage"]
    assert found["articles"][0]["score"] >= found["articles"][-1]["score"]


async def test_import_is_all_or_nothing_with_line_numbers(client: Any, staff: Any) -> None:
    olivia = await staff("olivia", "operator")
    version = (await olivia.call("GET", "/api/kb/articles"))[1]["kb_version"]

    def upload(files: dict[str, str]) -> aiohttp.FormData:
        form = aiohttp.FormData()
        for name, text in files.items():
            form.add_field("files", text.encode(), filename=name, content_type="application/octet-stream")
        return form

    good_md = "---\nid: loyalty-tiers\ntags: [account]\n---\n# Loyalty tiers\n\nSilver after 3 orders, gold after 10.\n"
    bad_jsonl = ('{"id": "ok-line", "title": "Fine", "body": "fine"}\n'
                 '{"id": "broken", "title": "Oops"\n'
                 '{"id": "no-body", "title": "Missing body"}\n')
    files = {"loyalty.md": good_md, "more.jsonl": bad_jsonl, "manual.pdf": "%PDF"}
    status, answer = await olivia.call("POST", "/api/kb/import", data=upload(files))
    assert status == 400 and "nothing was imported" in answer["error"]
    problems = {(p["file"], p["line"]): p["message"] for p in answer["problems"]}
    assert "malformed JSON" in problems[("more.jsonl", 2)]
    assert "missing 'body'" in problems[("more.jsonl", 3)]
    assert "unsupported file type '.pdf'" in problems[("manual.pdf", None)]
    assert "/tmp" not in str(answer) and "botkit-import" not in str(answer)  # no server paths leak
    status, after = await olivia.call("GET", "/api/kb/articles")
    assert after["kb_version"] == version and "loyalty-tiers" not in {a["id"] for a in after["articles"]}
    assert (await olivia.call("GET", "/api/kb/articles/ok-line"))[0] == 404

    status, done = await olivia.call("POST", "/api/kb/import", data=upload({"loyalty.md": good_md}))
    assert status == 200 and done["created"] == ["loyalty-tiers"] and done["kb_version"] == version + 1
    status, article = await olivia.call("GET", "/api/kb/articles/loyalty-tiers")
    assert article["article"]["updated_by"] == "olivia"
    assert article["article"]["source"].startswith("upload:loyalty.md:")
    reply = await ask(client, "when do I get gold loyalty tier?", "imp")
    assert reply.sources[0].id == "loyalty-tiers" and "gold after 10" in reply.text
    status, answer = await olivia.call("POST", "/api/kb/import", {"not": "multipart"})
    assert status == 400 and answer["field"] == "files"


async def test_xss_payload_is_stored_and_returned_as_data(client: Any, staff: Any) -> None:
    olivia = await staff("olivia", "operator")
    title = '<img src=x onerror="alert(1)">Engraving'
    body = '<script>alert("kb")</script> and </textarea><b>bold</b>'
    status, created = await olivia.call("POST", "/api/kb/articles", {"id": "xss", "title": title, "body": body})
    assert status == 201
    async with olivia.http.get(olivia.url("/api/kb/articles/xss")) as r:
        assert r.content_type == "application/json" and r.headers["Cache-Control"] == "no-store"
        data = await r.json()
    assert data["article"]["title"] == title and data["article"]["body"] == body  # exact, unescaped data
    async with olivia.http.get(olivia.url("/kb")) as r:
        assert r.status == 200
        csp = r.headers["Content-Security-Policy"]
        page = await r.text()
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "<script>" not in page
    assert "alert" not in page  # the page is static; articles arrive only as JSON
    script = (STATIC / "editor.js").read_text(encoding="utf-8")
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert not re.search(r"""setAttribute\(\s*["']on""", script)
