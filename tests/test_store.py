from pathlib import Path

import pytest

from botkit.errors import ArticleNotFound, BotkitError, KnowledgeError
from knowledge.store import KnowledgeStore
from knowledge.types import ArticleDraft


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """The knowledge store on each backend (the same tests: the PostgreSQL twin behaves alike)."""
    if request.param == "sqlite":
        with KnowledgeStore(tmp_path / "kb.sqlite3") as s:
            yield s
        return
    from pg_redis_fixtures import pg_dsn, throwaway_schema

    from botkit.backends.pg_knowledge import PostgresKnowledgeStore

    dsn = pg_dsn()
    with throwaway_schema(dsn) as schema, PostgresKnowledgeStore(dsn, schema) as s:
        yield s


def art(i: str, body: str = "Body", title: str = "Title") -> ArticleDraft:
    return ArticleDraft(i, title, body, ("t",))


def test_one_transaction_one_version_and_unchanged_makes_no_revision(store: KnowledgeStore):
    s1 = store.upsert([art("a"), art("b")], author="ann")
    assert (s1.kb_version, s1.created) == (1, ("a", "b"))
    s2 = store.upsert([art("a"), art("b", "New body")], author="bob")
    assert (s2.kb_version, s2.updated, s2.unchanged) == (2, ("b",), ("a",))
    s3 = store.upsert([art("a")])
    assert s3.kb_version == 2 and not s3.changed
    assert [r.rev for r in store.history("a")] == [1]
    b = store.history("b")
    assert [(r.rev, r.action, r.author, r.kb_version) for r in b] == [(1, "create", "ann", 1), (2, "update", "bob", 2)]


def test_diff_and_rollback(store: KnowledgeStore):
    store.upsert([art("a", "Line one\nLine two")])
    store.upsert([art("a", "Line one\nLine 2 changed", title="New title")])
    diff = store.diff("a", 1)
    assert "-title: Title" in diff and "+title: New title" in diff
    assert "-Line two" in diff and "+Line 2 changed" in diff and " Line one" in diff
    summary = store.rollback("a", 1, author="carol")
    assert summary.changed and store.get("a").body == "Line one\nLine two"
    last = store.history("a")[-1]
    assert (last.rev, last.action, last.author, last.note) == (3, "rollback", "carol", "to revision 1")
    assert not store.rollback("a", 1).changed  # already there: no new revision
    with pytest.raises(ArticleNotFound, match="no revision 9"):
        store.rollback("a", 9)


def test_delete_keeps_history_and_rollback_restores(store: KnowledgeStore):
    store.upsert([art("a", "Keep me")])
    store.delete("a", author="dan")
    with pytest.raises(ArticleNotFound):
        store.get("a")
    assert store.article_chunks("a") == []
    assert [r.action for r in store.history("a")] == ["create", "delete"]
    with pytest.raises(KnowledgeError, match="is a deletion"):
        store.rollback("a", 2)
    store.rollback("a", 1)
    assert store.get("a").body == "Keep me" and store.get("a").rev == 3
    assert store.article_chunks("a")


def test_unchanged_chunks_keep_their_ids(store: KnowledgeStore):
    body = "## One\nFirst section.\n\n## Two\nSecond section."
    store.upsert([art("a", body)])
    before = {c.text: c.chunk_id for c in store.article_chunks("a")}
    store.upsert([art("a", body.replace("Second section.", "Second section, edited."))])
    after = {c.text: c.chunk_id for c in store.article_chunks("a")}
    assert after["First section."] == before["First section."]
    assert after["Second section, edited."] not in before.values()  # new text, new id
    assert max(after.values()) > max(before.values())  # ids are never reused


def test_missing_article_errors_say_what_to_do(store: KnowledgeStore):
    with pytest.raises(ArticleNotFound, match="botkit kb list"):
        store.get("nope")
    with pytest.raises(ArticleNotFound, match="has ever existed"):
        store.history("nope")


def test_failed_transaction_leaves_nothing(store: KnowledgeStore, monkeypatch: pytest.MonkeyPatch):
    store.upsert([art("a")])
    calls = {"n": 0}
    real = store._replace_chunks

    def explode(d):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        real(d)

    monkeypatch.setattr(store, "_replace_chunks", explode)
    with pytest.raises(RuntimeError):
        store.upsert([art("b"), art("c")])
    assert [a.id for a in store.list()] == ["a"] and store.kb_version() == 1
    assert store.find("b") is None and store.article_chunks("b") == []


def test_two_connections_see_each_others_writes(tmp_path: Path):
    with KnowledgeStore(tmp_path / "kb.sqlite3") as one, KnowledgeStore(tmp_path / "kb.sqlite3") as two:
        one.upsert([art("a")])
        assert two.kb_version() == 1 and two.get("a").title == "Title"


# -- the SQLite helper every database opens with (botkit.sqlite) ---------------------------------
def test_a_store_opens_its_database_in_start_not_when_built(tmp_path: Path):
    path = tmp_path / "state" / "kb.sqlite3"
    store = KnowledgeStore(path)
    assert not path.exists()  # building one touches nothing
    store.start()
    try:
        assert path.stat().st_mode & 0o777 == 0o600  # private before SQLite wrote to it
        db = store._db
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: the knowledge store's own setting
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    finally:
        store.close()


def test_a_caller_that_never_starts_gets_it_opened_on_first_use_and_close_is_final(tmp_path: Path):
    store = KnowledgeStore(tmp_path / "kb.sqlite3")
    assert store.upsert([art("a")]).created == ("a",)  # no start(): opened on first use
    store.close()
    with pytest.raises(BotkitError, match=r"is closed; call start\(\)"):
        store.count()
    store.start()  # start() opens it again
    try:
        assert store.count() == 1
    finally:
        store.close()


def test_a_file_that_is_not_a_database_says_so_on_start(tmp_path: Path):
    path = tmp_path / "kb.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(KnowledgeError, match="cannot open the knowledge database"):
        KnowledgeStore(path).start()


def test_each_database_keeps_its_own_synchronous_setting(tmp_path: Path):
    from botkit.sqlite import SQLiteDatabase
    from training.gaps import ProposalStore

    with ProposalStore(tmp_path / "kb.sqlite3") as proposals:
        assert proposals._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # SQLite's default, FULL
    plain = SQLiteDatabase(tmp_path / "x.sqlite3", "CREATE TABLE IF NOT EXISTS t (v INTEGER);", synchronous="NORMAL")
    try:
        plain.tx(lambda db: db.execute("INSERT INTO t VALUES (1)"))
        with pytest.raises(ZeroDivisionError):  # a failed transaction leaves nothing
            plain.tx(lambda db: (db.execute("INSERT INTO t VALUES (2)"), 1 / 0))
        assert plain.run(lambda db: [r[0] for r in db.execute("SELECT v FROM t")]) == [1]
        assert plain.run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 1
    finally:
        plain.close()


def test_an_expected_revision_that_moved_is_a_conflict_and_writes_nothing(store: KnowledgeStore):
    from botkit.store import ConflictError

    store.upsert([art("a", "First")])
    store.upsert([art("a", "Second")], author="ann", expect={"a": 1})  # saw revision 1: it is still current
    with pytest.raises(ConflictError, match="revision 2, not 1"):  # a second editor that also saw revision 1
        store.upsert([art("a", "Third"), art("b")], author="bob", expect={"a": 1})
    with pytest.raises(ConflictError, match="exists already"):  # "create": it must not exist yet
        store.upsert([art("a", "Mine")], expect={"a": None})
    with pytest.raises(ConflictError, match="revision 2, not 1"):  # a delete or a rollback of what it saw
        store.delete("a", expect_rev=1)
    with pytest.raises(ConflictError, match="revision 2, not 1"):
        store.rollback("a", 1, expect_rev=1)
    assert store.get("a").body == "Second" and store.find("b") is None and store.kb_version() == 2
    assert store.rollback("a", 1, expect_rev=2).changed and store.delete("a", expect_rev=3).deleted == ("a",)
