"""`botkit kb import` never overwrites a change made in the knowledge base since an entry's last
import (botkit issue 12): an editor edit, a CLI rollback or delete stands while the file is
unchanged ("kept"); when the file changed too it is a conflict, reported and not imported,
until --theirs (the files win) or --ours (the store wins). Files changed with no edit update
as before; an older database gets its import bases from its history; the editor says which
entries files own. The real demo knowledge base and the real embedder throughout."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from botkit.app.cli import main
from botkit.app.keys import KB
from botkit.errors import ArticleNotFound
from knowledge.base import KnowledgeBase
from knowledge.store import KnowledgeStore
from knowledge.types import ArticleDraft
from tests.conftest import open_kb
from tests.test_auth import client, staff  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def demo_kb(request: pytest.FixtureRequest, demo_dir: Path, embedder: Any):
    """The imported demo KB on each knowledge store backend (the same three-way import on both).
    PostgreSQL's embedding cache is seeded from the SQLite copy's, so nothing is embedded again."""
    if request.param == "sqlite":
        kb = open_kb(demo_dir, embedder)
        kb.start()
        yield kb
        kb.close()
        return
    from pg_redis_fixtures import pg_dsn, throwaway_schema

    from botkit.backends.pg_knowledge import PostgresKnowledgeStore
    from botkit.project import Project

    dsn = pg_dsn()
    project = Project.load(demo_dir)
    with sqlite3.connect(project.db_path) as db:
        vectors = db.execute("SELECT text_hash, model, vector FROM embeddings").fetchall()
    with throwaway_schema(dsn) as schema:
        store = PostgresKnowledgeStore(dsn, schema)
        store.start()
        for model in {m for _, m, _ in vectors}:
            store.cache_embeddings(model, {h: np.frombuffer(v, dtype=np.float32) for h, m2, v in vectors
                                           if m2 == model})
        kb = KnowledgeBase(store, embedder, demo_dir / ".botkit" / "pg-index", project.config.knowledge,
                           progress=False)
        kb.start()
        kb.import_paths([demo_dir / "kb"], author="test")  # as the SQLite template was made
        assert kb.embedded_total == 0
        yield kb
        kb.close()
PAYPAL = "faq-paypal"  # demo/kb/faq.csv line 3
FILE_TEXT = "PayPal refunds usually reach you within 3–5 business days."
EDIT = "Yes, PayPal and Venmo are both accepted at checkout in every store."


def edit_in_editor(kb: KnowledgeBase, article_id: str, body: str, author: str = "olivia") -> None:
    """What the KB editor's PUT does: an upsert under the operator's name (botkit/app/kb_editor.py)."""
    a = kb.store.get(article_id)
    kb.upsert([ArticleDraft(a.id, a.title, body, a.tags, a.questions, a.source)], author, "edited in the kb editor")


def change_file(demo_dir: Path, new: str) -> None:
    faq = demo_dir / "kb" / "faq.csv"
    text = faq.read_text(encoding="utf-8")
    assert FILE_TEXT in text
    faq.write_text(text.replace(FILE_TEXT, new), encoding="utf-8")


def reimport(kb: KnowledgeBase, demo_dir: Path, resolve: Any = "refuse") -> Any:
    return kb.import_paths([demo_dir / "kb"], "root", resolve)


def test_an_editor_edit_survives_a_reimport_and_a_changed_file_is_a_conflict(demo_kb, demo_dir: Path) -> None:
    kb = demo_kb
    edit_in_editor(kb, PAYPAL, EDIT)
    version = kb.store.kb_version()

    again = reimport(kb, demo_dir)  # the file is unchanged: the edit stands, and is reported
    assert (again.created, again.updated, again.conflicts) == ((), (), ())
    assert [(c.article_id, c.base_rev, c.rev, c.author, c.deleted) for c in again.kept] == [(PAYPAL, 1, 2, "olivia",
                                                                                            False)]
    assert PAYPAL not in again.unchanged and len(again.unchanged) == kb.store.count() - 1
    assert kb.store.get(PAYPAL).body == EDIT and kb.store.kb_version() == version
    assert [(r.rev, r.author) for r in kb.store.history(PAYPAL)] == [(1, "test"), (2, "olivia")]

    change_file(demo_dir, "PayPal refunds usually reach you within 2 business days.")
    clash = reimport(kb, demo_dir)  # both changed: reported, not imported
    assert [c.article_id for c in clash.conflicts] == [PAYPAL] and clash.kept == () and clash.updated == ()
    assert clash.conflicts[0].source.endswith("faq.csv:3") and clash.conflicts[0].author == "olivia"
    assert kb.store.get(PAYPAL).body == EDIT and kb.store.kb_version() == version
    best = kb.search("can I use paypal to pay").hits[0]
    assert best.article_id == PAYPAL and "Venmo" in best.passage  # the bot still answers with the edit

    theirs = reimport(kb, demo_dir, "theirs")  # the files win
    assert theirs.updated == (PAYPAL,) and [(c.article_id, c.resolution) for c in theirs.resolved] == [
        (PAYPAL, "theirs")] and theirs.conflicts == ()
    assert "within 2 business days" in kb.store.get(PAYPAL).body
    last = kb.store.history(PAYPAL)[-1]
    assert (last.rev, last.author, last.action) == (3, "root", "update") and "--theirs" in last.note
    assert "Venmo" not in kb.search("can I use paypal to pay").hits[0].passage
    settled = reimport(kb, demo_dir)
    assert (settled.updated, settled.kept, settled.conflicts) == ((), (), ()) and PAYPAL in settled.unchanged


def test_ours_keeps_the_store_and_stops_reporting_until_the_file_changes_again(demo_kb, demo_dir: Path) -> None:
    kb = demo_kb
    edit_in_editor(kb, PAYPAL, EDIT)
    change_file(demo_dir, "PayPal refunds usually reach you within 2 business days.")
    ours = reimport(kb, demo_dir, "ours")
    assert [(c.article_id, c.resolution) for c in ours.resolved] == [(PAYPAL, "ours")] and not ours.changed
    assert kb.store.get(PAYPAL).body == EDIT and kb.store.import_base(PAYPAL).rev == 2
    quiet = reimport(kb, demo_dir)  # the file's version counts as seen: nothing to report
    assert (quiet.kept, quiet.conflicts, quiet.updated) == ((), (), ()) and kb.store.get(PAYPAL).body == EDIT

    faq = demo_dir / "kb" / "faq.csv"  # a later change to the file would drop the kept version: a conflict again
    faq.write_text(faq.read_text(encoding="utf-8").replace("within 2 business days", "within a day"), encoding="utf-8")
    later = reimport(kb, demo_dir)
    assert [c.article_id for c in later.conflicts] == [PAYPAL] and later.updated == ()
    assert kb.store.get(PAYPAL).body == EDIT


def test_a_changed_file_with_no_edit_updates_and_a_rollback_then_stands(demo_kb, tmp_path: Path) -> None:
    kb = demo_kb
    source = tmp_path / "engraving.md"

    def write(body: str) -> None:
        source.write_text(f"---\nid: engraving\ntitle: Engraving\n---\n{body}\n", encoding="utf-8")

    write("We engrave up to 20 characters for 6 EUR.")
    assert kb.import_paths([source]).created == ("engraving",)
    write("We engrave up to 30 characters for 8 EUR.")
    updated = kb.import_paths([source])  # no edit since the import: a normal update
    assert updated.updated == ("engraving",) and (updated.kept, updated.conflicts) == ((), ())
    assert "30 characters" in kb.store.get("engraving").body

    kb.rollback("engraving", 1, "olivia")  # `botkit kb rollback engraving --to 1`
    kept = kb.import_paths([source])  # the file still says 30: the rollback stands
    assert [(c.article_id, c.action, c.base_rev, c.rev) for c in kept.kept] == [("engraving", "rollback", 2, 3)]
    assert "20 characters" in kb.store.get("engraving").body
    write("We engrave up to 40 characters for 9 EUR.")
    clash = kb.import_paths([source])
    assert [c.article_id for c in clash.conflicts] == ["engraving"]
    assert "20 characters" in kb.store.get("engraving").body

    kb.rollback("engraving", 2, "olivia")  # back to the imported content: the sides agree again
    write("We engrave up to 30 characters for 8 EUR.")
    agreed = kb.import_paths([source])
    assert agreed.unchanged == ("engraving",) and (agreed.kept, agreed.conflicts) == ((), ())
    assert kb.store.import_base("engraving").rev == 4


def test_a_deleted_entry_stays_deleted_and_a_changed_file_is_a_conflict(demo_kb, demo_dir: Path) -> None:
    kb = demo_kb
    kb.delete(PAYPAL, "olivia")  # `botkit kb delete faq-paypal`
    kept = reimport(kb, demo_dir)
    assert [(c.article_id, c.deleted, c.action) for c in kept.kept] == [(PAYPAL, True, "delete")]
    with pytest.raises(ArticleNotFound):
        kb.store.get(PAYPAL)
    assert PAYPAL not in [h.article_id for h in kb.search("can I pay with paypal").hits]

    change_file(demo_dir, "PayPal refunds usually reach you within 2 business days.")
    clash = reimport(kb, demo_dir)
    assert [(c.article_id, c.deleted) for c in clash.conflicts] == [(PAYPAL, True)] and kb.store.find(PAYPAL) is None
    back = reimport(kb, demo_dir, "theirs")  # the file wins: the entry is back, as a new revision
    assert back.created == (PAYPAL,) and kb.store.history(PAYPAL)[-1].action == "create"
    assert kb.search("can I pay with paypal").hits[0].article_id == PAYPAL


def test_an_entry_made_in_the_editor_is_not_taken_over_by_a_file(demo_kb, tmp_path: Path) -> None:
    kb = demo_kb
    kb.upsert([ArticleDraft("engraving", "Engraving", "Ask us about engraving.", source="kb editor")], "olivia")
    source = tmp_path / "engraving.md"
    source.write_text("---\nid: engraving\ntitle: Engraving\n---\nWe engrave for 6 EUR.\n", encoding="utf-8")
    clash = kb.import_paths([source])
    assert [(c.article_id, c.base_rev) for c in clash.conflicts] == [("engraving", None)]
    assert kb.store.get("engraving").body == "Ask us about engraving." and kb.store.import_base("engraving") is None


def _downgrade(db_path: Path) -> None:
    """Make the database what botkit wrote before import bases existed (schema 1)."""
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TABLE import_bases")
        db.execute("DELETE FROM meta WHERE key='schema_version'")


def test_an_old_database_migrates_with_bases_from_its_history(demo_dir: Path, embedder) -> None:
    kb = open_kb(demo_dir, embedder)
    kb.start()
    edit_in_editor(kb, PAYPAL, EDIT)  # olivia's rev 2 on top of the import's rev 1 (the case)
    kb.upsert([ArticleDraft("engraving", "Engraving", "Ask us.", source="kb editor")], "olivia")
    kb.close()
    db_path = kb.store.path
    _downgrade(db_path)
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='import_bases'").fetchone()[0] == 0

    store = KnowledgeStore(db_path)
    store.start()
    bases = store.import_bases()
    assert bases[PAYPAL].rev == 1 and "engraving" not in bases  # only what `kb import` wrote
    assert len(bases) == store.count() - 1
    store.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"

    kb = open_kb(demo_dir, embedder)
    kb.start()
    try:
        again = reimport(kb, demo_dir)  # what re-running scripts/demo.sh did: it overwrote rev 2
        assert [c.article_id for c in again.kept] == [PAYPAL] and again.updated == ()
        assert kb.store.get(PAYPAL).body == EDIT and len(kb.store.history(PAYPAL)) == 2
    finally:
        kb.close()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_reports_kept_and_conflicts_and_exits_3(demo_dir: Path, embedder, capsys) -> None:
    kb = open_kb(demo_dir, embedder)
    kb.start()
    edit_in_editor(kb, PAYPAL, EDIT)
    kb.close()
    project = ["--project", str(demo_dir)]
    code, out, _ = _cli(capsys, *project, "kb", "import", "--author", "root")
    assert code == 0 and "1 kept" in out and f"{PAYPAL}: rev 2 (update) by olivia" in out and "imported as rev 1" in out

    change_file(demo_dir, "PayPal refunds usually reach you within 2 business days.")
    code, out, err = _cli(capsys, *project, "kb", "import", "--json")
    result = json.loads(out)
    assert code == 3 and [c["id"] for c in result["conflicts"]] == [PAYPAL] and result["updated"] == []
    assert result["conflicts"][0]["import_rev"] == 1 and result["conflicts"][0]["by"] == "olivia"
    code, out, err = _cli(capsys, *project, "kb", "import")
    assert code == 3 and "CONFLICT: 1 entry" in err and f"botkit kb diff {PAYPAL} --from 1" in err
    assert "--theirs" in err and "--ours" in err
    code, out, _ = _cli(capsys, *project, "kb", "show", PAYPAL, "--json")
    assert json.loads(out)["body"] == EDIT

    with pytest.raises(SystemExit) as both:
        main([*project, "kb", "import", "--theirs", "--ours"])
    assert both.value.code == 2
    capsys.readouterr()
    code, out, _ = _cli(capsys, *project, "kb", "import", "--theirs", "--json")
    assert code == 0 and [c["resolution"] for c in json.loads(out)["resolved"]] == ["theirs"]
    with pytest.raises(SystemExit):
        main(["kb", "import", "--help"])
    help_text = capsys.readouterr().out
    assert "Edits are never lost" in help_text and "--theirs" in help_text and "exit" in help_text


async def test_the_editor_api_says_which_entries_files_own(client: Any, staff: Any,  # noqa: F811
                                                           demo_dir: Path) -> None:
    olivia = await staff("olivia", "operator")
    status, got = await olivia.call("GET", f"/api/kb/articles/{PAYPAL}")
    managed = got["article"]["managed"]
    assert status == 200 and managed["file"].endswith("faq.csv") and managed["line"] == 3
    assert (managed["import_rev"], managed["state"]) == (1, "in_step")

    body = {"title": got["article"]["title"], "body": EDIT, "tags": got["article"]["tags"],
            "questions": got["article"]["questions"], "rev": got["article"]["rev"]}
    status, saved = await olivia.call("PUT", f"/api/kb/articles/{PAYPAL}", body)
    assert status == 200 and saved["article"]["managed"]["state"] == "edited"
    status, listing = await olivia.call("GET", "/api/kb/articles")
    by_id = {a["id"]: a for a in listing["articles"]}
    assert by_id[PAYPAL]["from_file"] and by_id[PAYPAL]["edited_since_import"]
    assert by_id["refund-timing"]["from_file"] and not by_id["refund-timing"]["edited_since_import"]

    status, made = await olivia.call("POST", "/api/kb/articles", {"title": "Engraving", "body": "Ask us."})
    assert status == 201 and made["article"]["managed"] is None  # made here: no file owns it

    kb = client.app[KB]  # the next `botkit kb import` keeps the edit, as the editor said
    summary = await asyncio.to_thread(kb.import_paths, [demo_dir / "kb"], "root")
    assert [c.article_id for c in summary.kept] == [PAYPAL]
    status, got = await olivia.call("GET", f"/api/kb/articles/{PAYPAL}")
    assert got["article"]["body"] == EDIT and got["article"]["managed"]["state"] == "edited"
    status, got = await olivia.call("GET", "/api/kb/articles/refund-timing")  # imported from this project now:
    assert got["article"]["managed"]["file"] == "kb/refund-timing.md"  # shown relative to it


@pytest.mark.parametrize(("latest", "base", "draft", "resolve", "outcome"), [
    (None, None, "f1", "refuse", "create"),
    (("s1", 1), ("f1", 1), "f1", "refuse", "unchanged"),  # nothing changed
    (("f1", 1), ("f1", 1), "f2", "refuse", "update"),  # the file changed, the store did not
    (("e", 2), ("f1", 1), "f1", "refuse", "kept"),  # edited in the store, file unchanged
    ((None, 2), ("f1", 1), "f1", "refuse", "kept"),  # deleted in the store, file unchanged: stays deleted
    (("e", 2), ("f1", 1), "f2", "refuse", "conflict"),
    ((None, 2), ("f1", 1), "f2", "refuse", "conflict"),
    (("e", 2), ("f1", 1), "f2", "theirs", "theirs"),
    (("e", 2), ("f1", 1), "f2", "ours", "ours"),
    (("e", 2), ("f2", 2), "f2", "refuse", "unchanged"),  # after --ours: quiet while the file stays
    (("e", 2), ("f2", 2), "f3", "refuse", "conflict"),  # ... and a conflict again when it changes
    ((None, 3), ("f2", 3), "f2", "refuse", "unchanged"),  # --ours on a deletion: stays deleted, quietly
    (("f2", 2), ("f1", 1), "f2", "refuse", "unchanged"),  # the store already says what the file says
    (("f1", 3), ("f1", 1), "f2", "refuse", "update"),  # edited and reverted: in step with the file again
    (("e", 1), None, "f1", "refuse", "conflict"),  # made in the editor under an id a file now uses
    ((None, 2), None, "f1", "refuse", "conflict"),  # made and deleted in the editor
])
def test_the_three_way_decision(latest: Any, base: Any, draft: str, resolve: Any, outcome: str) -> None:
    from knowledge.imports import ImportBase, Latest, decide

    now = None if latest is None else Latest(latest[1], "update", "olivia", "t", latest[0] and f"h-{latest[0]}")
    was = None if base is None else ImportBase("x", base[1], f"h-{base[0]}", "kb/x.md:1", "t")
    assert decide(f"h-{draft}", now, was, resolve) == outcome
