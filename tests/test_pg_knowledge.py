"""The knowledge base on PostgreSQL (botkit/backends/pg_knowledge.py) against a real server:
its migrations (fresh, re-run, a newer schema refused, two workers migrating at once), two
writers at once (no lost update, versions rising by one), an edit on one worker searchable on
another (pushed by NOTIFY, or found by the poll when the notification was missed or the
watcher's connection dropped), the FAQ proposals beside it, and the switch.

The store-level tests of tests/test_store.py run on both backends too (its ``store`` fixture).
How fast an edit reaches another worker is measured by benchmarks/kb_sync.py, not here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pg_redis_fixtures import pg_dsn, throwaway_schema

from botkit.config import KnowledgeConfig
from botkit.errors import DatabaseUnavailable
from knowledge.base import INDEX_FILE, KnowledgeBase
from knowledge.types import ArticleDraft

psycopg = pytest.importorskip("psycopg")  # the postgres extra (CI installs it: pg_dsn fails there without)

from botkit.backends.pg_knowledge import PostgresKnowledgeStore  # noqa: E402
from botkit.backends.pg_knowledge_migrations import MIGRATIONS, migrate_knowledge, schema_version  # noqa: E402
from botkit.backends.postgres_migrations import SchemaTooNew  # noqa: E402

ARTICLES = [
    ArticleDraft("refunds", "Refunds", "We refund any order within 30 days of delivery. Send the order number.",
                 ("billing",), ("How do I get a refund?",)),
    ArticleDraft("shipping", "Shipping times", "Parcels arrive in 3 to 5 working days inside the country.",
                 ("delivery",), ("How long does shipping take?",)),
    ArticleDraft("password", "Resetting your password", "Use the 'Forgot password' link on the sign-in page.",
                 ("account",), ("I forgot my password",)),
]


@pytest.fixture
def dsn() -> str:
    return pg_dsn()


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    with throwaway_schema(dsn) as name:
        yield name


def admin(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` (generous: CI is shared)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)


# -- migrations ------------------------------------------------------------------------------------
def test_a_fresh_schema_is_created_and_recorded_and_a_rerun_does_nothing(dsn: str, schema: str):
    with PostgresKnowledgeStore(dsn, schema) as store:
        store.upsert(ARTICLES[:1])
    with admin(dsn) as conn:
        assert schema_version(conn, schema) == len(MIGRATIONS)
        assert migrate_knowledge(conn, schema) == 0  # already there: nothing runs
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                                             "table_schema=%s", (schema,))}
    assert {"kb_meta", "articles", "revisions", "chunks", "embeddings", "import_bases", "proposals",
            "schema_version"} <= tables
    with PostgresKnowledgeStore(dsn, schema) as again:  # a restart keeps what was written
        assert again.get("refunds").title == "Refunds" and again.kb_version() == 1


def test_a_schema_from_a_newer_botkit_is_refused_and_left_as_it_is(dsn: str, schema: str):
    with PostgresKnowledgeStore(dsn, schema) as store:
        store.upsert(ARTICLES[:1])
    with admin(dsn) as conn:
        conn.execute(f'UPDATE "{schema}".schema_version SET version=99 WHERE component=%s', ("knowledge",))
    with pytest.raises(SchemaTooNew, match="schema version 99.*newer botkit.*nothing was changed"):
        PostgresKnowledgeStore(dsn, schema).start()
    with admin(dsn) as conn:
        assert schema_version(conn, schema) == 99
        assert conn.execute(f'SELECT count(*) FROM "{schema}".articles').fetchone()[0] == 1


def test_two_workers_migrating_at_once_migrate_once(dsn: str, schema: str):
    ran: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            with admin(dsn) as conn:
                barrier.wait()
                ran.append(migrate_knowledge(conn, schema))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(ran) == [0, 0, 0, len(MIGRATIONS)]


# -- writers on two workers ----------------------------------------------------------------------
def test_two_writers_at_once_lose_no_update_and_versions_rise_by_one(dsn: str, schema: str):
    with PostgresKnowledgeStore(dsn, schema) as seed:
        seed.upsert(ARTICLES[:1])
    per_writer = 12
    versions: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write(name: str) -> None:
        with PostgresKnowledgeStore(dsn, schema) as store:  # a connection of its own: another worker
            barrier.wait()
            try:
                for i in range(per_writer):
                    # both edit the same article (a lost update would drop a revision) and one of their own
                    body = f"Refund policy, edit {i} by writer {name}."
                    summary = store.upsert([ArticleDraft("refunds", "Refunds", body, ("billing",)),
                                            ArticleDraft(f"{name}-{i}", f"Note {i}", f"Written by {name}, {i}.")],
                                           author=name)
                    versions[name].append(summary.kb_version)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    every = versions["a"] + versions["b"]
    assert sorted(every) == list(range(2, 2 + 2 * per_writer))  # one version per batch, none shared, no gap
    for name in versions:
        assert versions[name] == sorted(versions[name])  # each writer's versions strictly increase
    with PostgresKnowledgeStore(dsn, schema) as store:
        history = store.history("refunds")
        assert [r.rev for r in history] == list(range(1, 2 + 2 * per_writer))  # every edit is a revision
        assert [r.kb_version for r in history] == sorted(r.kb_version for r in history)
        assert store.count() == 1 + 2 * per_writer
        assert store.get("refunds").body == history[-1].body
        ids = store.live_chunk_ids()
        assert len(set(ids.tolist())) == len(ids)


# -- every worker's index in step ----------------------------------------------------------------
def open_worker(dsn: str, schema: str, embedder, index_dir: Path, **store_kw) -> KnowledgeBase:
    kb = KnowledgeBase(PostgresKnowledgeStore(dsn, schema, **store_kw), embedder, index_dir, KnowledgeConfig(),
                       progress=False)
    kb.start()
    return kb


def test_an_edit_on_one_worker_is_searchable_on_the_other(dsn: str, schema: str, embedder, tmp_path: Path):
    a = open_worker(dsn, schema, embedder, tmp_path / "a")
    b = open_worker(dsn, schema, embedder, tmp_path / "b")
    try:
        a.upsert(ARTICLES, author="ann")
        wait_for("the import on A reaching B's index", lambda: b.indexed_version == 1)
        assert b.search("how long until my parcel arrives").hits[0].article_id == "shipping"

        summary = a.upsert([ArticleDraft("gift-cards", "Gift cards", "Gift cards never expire and can be spent on "
                                         "anything in the shop.", ("billing",), ("Do gift cards expire?",))])
        # pushed: B's watcher swaps the change in without a search asking for it
        wait_for("the new article reaching B's index", lambda: b.indexed_version == summary.kb_version)
        found = b.search("do gift cards expire")
        assert found.kb_version == summary.kb_version and found.hits[0].article_id == "gift-cards"

        b.delete("gift-cards", author="bob")  # and the other way round: a deletion on B leaves A's index
        wait_for("the deletion on B reaching A", lambda: "gift-cards" not in
                 {h.article_id for h in a.search("do gift cards expire").hits})
        assert a.indexed_version == b.indexed_version == summary.kb_version + 1
        assert a.index is not None and b.index is not None and a.index.ntotal == b.index.ntotal
        # every worker's index is its own, in memory: nothing written under the shared project directory
        assert not (tmp_path / "a" / INDEX_FILE).exists() and not (tmp_path / "b" / INDEX_FILE).exists()
        assert b.embedded_total == 0  # B embedded nothing: A cached every vector before it committed
    finally:
        a.close()
        b.close()


def test_a_missed_notification_is_caught_by_the_poll(dsn: str, schema: str, embedder, tmp_path: Path):
    # the writer announces on a channel nobody listens to: only B's periodic read can see the change
    a = open_worker(dsn, schema, embedder, tmp_path / "a", channel="botkit_kb.nobody_listens")
    b = open_worker(dsn, schema, embedder, tmp_path / "b", poll_s=0.3)
    try:
        summary = a.upsert(ARTICLES, author="ann")
        wait_for("B's poll finding the version", lambda: b.indexed_version == summary.kb_version)
        assert b.search("I forgot my password").hits[0].article_id == "password"
    finally:
        a.close()
        b.close()


def test_a_dropped_watcher_connection_reconnects_and_catches_up(dsn: str, schema: str, embedder, tmp_path: Path):
    a = open_worker(dsn, schema, embedder, tmp_path / "a")
    b = open_worker(dsn, schema, embedder, tmp_path / "b", poll_s=60.0)  # no help from a timely poll
    try:
        a.upsert(ARTICLES[:1])
        wait_for("the first change reaching B", lambda: b.indexed_version == 1)
        assert isinstance(b.store, PostgresKnowledgeStore)
        old_pid = b.store.watch_backend_pid
        with admin(dsn) as conn:  # the server ends B's LISTEN connection (a restart, a proxy timeout)
            conn.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
        summary = a.upsert(ARTICLES[1:])  # committed while B may not be listening: its NOTIFY can be lost
        # the watcher reconnects and reads the version at once (the poll on reconnection)
        wait_for("B catching up after its watcher reconnected", lambda: b.indexed_version == summary.kb_version)
        assert b.store.watch_backend_pid != old_pid
        assert b.search("how long does shipping take").hits[0].article_id == "shipping"
    finally:
        a.close()
        b.close()


# -- the FAQ proposals beside it -------------------------------------------------------------------
def test_proposals_live_beside_the_knowledge_base_in_postgresql(dsn: str, schema: str, embedder, tmp_path: Path):
    from training.gaps import Proposal, ProposalError, proposals_for

    kb = open_worker(dsn, schema, embedder, tmp_path / "a")
    try:
        kb.upsert(ARTICLES)
        with proposals_for(kb.store) as proposals:
            p = Proposal("p-1", "Can I pay by invoice", ("Can I pay by invoice?",), "Yes, for orders over 100 EUR.",
                         2, ("c1", "c2"))
            assert proposals.add([p, Proposal("p-2", "Other", ("Other?",), "Answer.", 1, ("c3",))]) == ["p-1", "p-2"]
            assert proposals.add([p]) == []  # stored once
            accepted = proposals.accept("p-1", kb, "olivia")
            assert (accepted.status, accepted.reviewer) == ("accepted", "olivia")
            assert kb.store.get(accepted.article_id or "").questions == ("Can I pay by invoice?",)
            proposals.reject("p-2", "olivia", "not a real question")
            with pytest.raises(ProposalError, match="already rejected"):
                proposals.reject("p-2", "olivia")
            assert [x.id for x in proposals.list("proposed")] == []
        with PostgresKnowledgeStore(dsn, schema).open_proposals() as again:  # another worker sees the same
            assert {x.id: x.status for x in again.list()} == {"p-1": "accepted", "p-2": "rejected"}
    finally:
        kb.close()


# -- faults and the switch -------------------------------------------------------------------------
def test_a_server_that_cannot_be_reached_is_a_clear_error(schema: str):
    store = PostgresKnowledgeStore("postgresql://botkit:secret-pw@127.0.0.1:1/botkit", schema,
                                   source="BOTKIT_DATABASE_URL")
    with pytest.raises(DatabaseUnavailable, match="127.0.0.1:1/botkit.*BOTKIT_DATABASE_URL") as info:
        store.start()
    assert "secret-pw" not in str(info.value) and "secret-pw" not in repr(store)


def test_the_switch_moves_the_knowledge_store(dsn: str, schema: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    from botkit.app.compose import build_knowledge_store
    from botkit.project import Project
    from knowledge.store import KnowledgeStore

    (tmp_path / "bot.yaml").write_text(f"name: t\nstorage:\n  postgres_schema: {schema}\n")
    monkeypatch.delenv("BOTKIT_DATABASE_URL", raising=False)
    assert type(build_knowledge_store(Project.load(tmp_path))) is KnowledgeStore
    monkeypatch.setenv("BOTKIT_DATABASE_URL", dsn)
    store = build_knowledge_store(Project.load(tmp_path))
    assert isinstance(store, PostgresKnowledgeStore) and store.schema == schema and store.shared_index
    with store:
        store.upsert(ARTICLES[:1])
        assert store.count() == 1


def test_the_operator_report_reads_the_proposals_from_postgresql(dsn: str, schema: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    from botkit.app.analytics_data import project_proposals
    from botkit.project import Project
    from training.gaps import Proposal

    (tmp_path / "bot.yaml").write_text(f"name: t\nstorage:\n  postgres_schema: {schema}\n")
    monkeypatch.setenv("BOTKIT_DATABASE_URL", dsn)
    with PostgresKnowledgeStore(dsn, schema).open_proposals() as proposals:
        proposals.add([Proposal("p-9", "Can I pay by invoice", ("Can I pay by invoice?",), "Yes.", 3, ("c1",))])
    refs = project_proposals(Project.load(tmp_path))
    assert [(r.id, r.count) for r in refs] == [("p-9", 3)]
    assert not (tmp_path / ".botkit").exists() or not any((tmp_path / ".botkit").glob("*.sqlite3"))


def test_two_editors_saving_one_revision_on_two_workers_one_wins(dsn: str, schema: str):
    from botkit.store import ConflictError

    with PostgresKnowledgeStore(dsn, schema) as seed:
        seed.upsert(ARTICLES[:1])
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def save(name: str) -> None:
        with PostgresKnowledgeStore(dsn, schema) as store:
            seen = store.get("refunds").rev  # both opened revision 1
            barrier.wait()
            try:
                store.upsert([ArticleDraft("refunds", "Refunds", f"Edited by {name}.", ("billing",))], author=name,
                             expect={"refunds": seen})
                outcomes.append(f"saved:{name}")
            except ConflictError:
                outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(n,)) for n in ("ann", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "saved"]
    winner = next(o for o in outcomes if o.startswith("saved")).split(":")[1]
    with PostgresKnowledgeStore(dsn, schema) as store:
        assert store.get("refunds").body == f"Edited by {winner}." and store.kb_version() == 2
        assert [r.author for r in store.history("refunds")] == ["operator", winner]


def test_a_writer_held_up_by_another_worker_past_the_wait_is_told_and_writes_nothing(dsn: str, schema: str):
    from botkit.errors import DatabaseLocked

    with PostgresKnowledgeStore(dsn, schema, write_wait_s=0.3) as store:
        store.upsert(ARTICLES[:1])
        with admin(dsn) as other:  # another worker in the middle of a long write: it holds the writers' lock
            other.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"botkit.kb.{schema}",))
            with pytest.raises(DatabaseLocked, match="another worker.*0.3 s wait.*nothing was written"):
                store.upsert(ARTICLES[1:])
            assert store.count() == 1 and store.kb_version() == 1  # reads never wait for the writers' lock
        store.upsert(ARTICLES[1:])  # the other finished: writing works again, with no lock left behind
        assert store.count() == 3 and store.kb_version() == 2


@pytest.mark.slow
def test_botkit_kb_import_in_another_process_is_searchable_here(dsn: str, schema: str, embedder, tmp_path: Path):
    import os
    import subprocess
    import sys

    from conftest import REPO, copy_demo

    project = copy_demo(tmp_path / "demo")
    with (project / "bot.yaml").open("a", encoding="utf-8") as f:
        f.write(f"\nstorage:\n  postgres_schema: {schema}\n")
    here = open_worker(dsn, schema, embedder, tmp_path / "here")  # a running worker, its KB still empty
    try:
        assert here.indexed_version == 0
        env = {**os.environ, "PYTHONPATH": str(REPO), "BOTKIT_DATABASE_URL": dsn}
        done = subprocess.run([sys.executable, "-m", "botkit", "--project", str(project), "kb", "import"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        wait_for("the other process's import reaching this worker", lambda: here.indexed_version == 1)
        assert here.search("can I pay with paypal").hits[0].article_id == "faq-paypal"
        # the importing process kept its index in memory: no index file in the shared project directory
        assert not list(project.rglob("vectors.faiss")) and not list(project.rglob("*.sqlite3"))
    finally:
        here.close()
