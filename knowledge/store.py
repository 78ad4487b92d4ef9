"""The knowledge store: articles, their revisions, their chunks and cached embeddings in SQLite.

Every change is a revision (when, by whom, what); a batch of changes made together (one
import, one edit) is one transaction and raises the KB version by one, so every answer can
cite the version it was grounded in. Chunk ids come from an AUTOINCREMENT column and are
never reused: an id in the vector index always means the same text, which is what makes
checking the index against the store (``live_chunk_ids``) sufficient.

The logic lives in :class:`KnowledgeStoreBase`, written against a small SQL seam (read rows,
write, one serialised write transaction) in the SQL that SQLite and PostgreSQL share;
:class:`KnowledgeStore` is its SQLite form and ``botkit.backends.pg_knowledge`` its PostgreSQL
form, chosen by the same switch as the conversation store (``BOTKIT_DATABASE_URL``). The
PostgreSQL form is shared by several workers, each with its own in-memory index: it pushes
each new KB version to them (:meth:`KnowledgeStoreBase.watch`) so they catch up without a
query per search.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import difflib
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from botkit.errors import ArticleNotFound, KnowledgeError
from botkit.sqlite import SQLiteDatabase, translate_errors
from botkit.store import ConflictError
from knowledge.chunking import chunk_article
from knowledge.imports import IMPORT_BASES_SQL, ImportBase, ImportChange, Latest, Resolve, decide, migrate
from knowledge.types import Article, ArticleDraft, Chunk, ChunkDraft, Revision

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, tags TEXT NOT NULL,
    questions TEXT NOT NULL, source TEXT, rev INTEGER NOT NULL, content_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL, updated_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revisions (
    article_id TEXT NOT NULL, rev INTEGER NOT NULL, kb_version INTEGER NOT NULL,
    at TEXT NOT NULL, author TEXT NOT NULL, action TEXT NOT NULL, title TEXT NOT NULL,
    body TEXT NOT NULL, tags TEXT NOT NULL, questions TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (article_id, rev));
CREATE TABLE IF NOT EXISTS kb_versions (
    version INTEGER PRIMARY KEY, at TEXT NOT NULL, author TEXT NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT, article_id TEXT NOT NULL, ord INTEGER NOT NULL,
    kind TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL, embed_text TEXT NOT NULL,
    text_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_article ON chunks (article_id);
CREATE TABLE IF NOT EXISTS embeddings (
    text_hash TEXT NOT NULL, model TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (text_hash, model));
""" + IMPORT_BASES_SQL  # an older database gets import_bases filled in from its history: knowledge.imports.migrate


@dataclass(frozen=True)
class ChangeSummary:
    kb_version: int
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    # a file import only (knowledge.imports): entries changed in the store since their last import
    kept: tuple[ImportChange, ...] = ()  # ... whose file is unchanged: the store's change stands
    conflicts: tuple[ImportChange, ...] = ()  # ... whose file changed too: not imported
    resolved: tuple[ImportChange, ...] = ()  # conflicts settled by resolve="theirs" or "ours"

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


Row = Mapping[str, Any]  # a row by column name (sqlite3.Row, or psycopg's dict_row)


def _article(row: Row) -> Article:
    return Article(
        id=row["id"], title=row["title"], body=row["body"], tags=tuple(json.loads(row["tags"])),
        questions=tuple(json.loads(row["questions"])), source=row["source"], rev=row["rev"],
        updated_at=row["updated_at"], updated_by=row["updated_by"],
    )


def _revision(row: Row) -> Revision:
    return Revision(
        article_id=row["article_id"], rev=row["rev"], kb_version=row["kb_version"], at=row["at"],
        author=row["author"], action=row["action"], title=row["title"], body=row["body"],
        tags=tuple(json.loads(row["tags"])), questions=tuple(json.loads(row["questions"])),
        note=row["note"],
    )


def _base(row: Row) -> ImportBase:
    return ImportBase(row["article_id"], row["rev"], row["content_hash"], row["source"], row["at"])


def _chunk(row: Row) -> Chunk:
    return Chunk(row["chunk_id"], row["article_id"], row["ord"], row["kind"], row["heading"],
                 row["text"], row["embed_text"], row["text_hash"])


class KnowledgeStoreBase(abc.ABC):
    """Articles, revisions, chunks and cached embeddings over a small SQL seam (the statements
    are in the SQL SQLite and PostgreSQL share; ``?`` placeholders).

    A subclass gives the seam: :meth:`_rows`, :meth:`_row`, :meth:`_exec`, :meth:`_exec_many`
    (run under :attr:`_lock`, a reentrant lock: locked methods call each other) and
    :meth:`_transaction`, one write transaction serialised with every other writer of the same
    store (other threads, other processes: that is what keeps KB versions gap-free and every
    batch one version). It may override :meth:`latest_version` and :meth:`watch` (a store shared
    by several processes that tells them about a new version) and sets :attr:`shared_index`
    when every process keeps its own in-memory index rather than index files on disk.
    """

    #: True: several workers share the store and each keeps its index in memory (no index files)
    shared_index = False
    _lock: threading.RLock

    def __init__(self, chunker: Callable[[ArticleDraft], list[ChunkDraft]] | None = None):
        self._chunker = chunker or chunk_article

    # -- the seam ----------------------------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """Open the database now (created or migrated as needed)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close it (and stop any watcher); start() opens it again."""

    @abc.abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Row]:
        """All rows of a query (under ``self._lock``)."""

    @abc.abstractmethod
    def _row(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None (under ``self._lock``)."""

    @abc.abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the rows it changed (under ``self._lock``)."""

    @abc.abstractmethod
    def _exec_many(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per parameter tuple (under ``self._lock``)."""

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """Hold ``self._lock`` and one write transaction, serialised with every other writer of this
        store: all of the block's writes are committed, or none (an exception rolls back)."""

    def _cache_transaction(self) -> contextlib.AbstractContextManager[None]:
        """A transaction for embedding-cache writes (need not wait for the KB writers' lock)."""
        return self._transaction()

    def _version_bumped(self, version: int) -> None:
        """Called inside the transaction that raises the KB version to ``version`` (a shared store
        announces it to the other workers here: delivered when it commits)."""
        return None

    def latest_version(self) -> int:
        """The newest KB version this process knows of, as cheaply as the store can tell (a search
        asks before each query): here, one query; a watched shared store answers from memory."""
        return self.kb_version()

    def watch(self, on_change: Callable[[int], None]) -> None:
        """Call ``on_change(version)`` (from another thread) when another process commits a new KB
        version. Here nothing: :meth:`latest_version` reads the database, so a search notices."""
        return None

    def __enter__(self) -> "KnowledgeStoreBase":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def kb_version(self) -> int:
        with self._lock:
            row = self._row("SELECT value FROM meta WHERE key='kb_version'")
        return int(row["value"]) if row else 0

    def get(self, article_id: str) -> Article:
        with self._lock:
            row = self._row("SELECT * FROM articles WHERE id=?", (article_id,))
        if row is None:
            raise ArticleNotFound(f"no article with id {article_id!r}; `botkit kb list` shows the ids")
        return _article(row)

    def find(self, article_id: str) -> Article | None:
        try:
            return self.get(article_id)
        except ArticleNotFound:
            return None

    def list(self, tag: str | None = None) -> builtins.list[Article]:
        with self._lock:
            rows = self._rows("SELECT * FROM articles ORDER BY id")
        articles = [_article(r) for r in rows]
        return [a for a in articles if tag in a.tags] if tag else articles

    def count(self) -> int:
        with self._lock:
            row = self._row("SELECT count(*) AS n FROM articles")
        return int(row["n"]) if row else 0

    def history(self, article_id: str) -> builtins.list[Revision]:
        with self._lock:
            rows = self._rows("SELECT * FROM revisions WHERE article_id=? ORDER BY rev", (article_id,))
        if not rows:
            raise ArticleNotFound(f"no article with id {article_id!r} has ever existed")
        return [_revision(r) for r in rows]

    def revision(self, article_id: str, rev: int) -> Revision:
        for r in self.history(article_id):
            if r.rev == rev:
                return r
        raise ArticleNotFound(f"article {article_id!r} has no revision {rev}; "
                              f"`botkit kb history {article_id}` lists them")

    def diff(self, article_id: str, from_rev: int, to_rev: int | None = None) -> str:
        """A unified diff of an article between two revisions (default: to the latest)."""
        history = self.history(article_id)
        old = self.revision(article_id, from_rev)
        new = history[-1] if to_rev is None else self.revision(article_id, to_rev)

        def render(r: Revision) -> builtins.list[str]:
            if r.action == "delete":
                return []
            head = [f"title: {r.title}", f"tags: {', '.join(r.tags)}"]
            head += [f"question: {q}" for q in r.questions]
            return [*head, "", *r.body.splitlines()]

        return "\n".join(difflib.unified_diff(
            render(old), render(new), f"{article_id}@{old.rev}", f"{article_id}@{new.rev}", lineterm=""
        ))

    def content_hashes(self) -> dict[str, str]:
        """article id -> content hash of its current revision (what :meth:`upsert` compares drafts with)."""
        with self._lock:
            rows = self._rows("SELECT id, content_hash FROM articles")
        return {r["id"]: r["content_hash"] for r in rows}

    def import_bases(self) -> dict[str, ImportBase]:
        """article id -> what its last file import saw (knowledge.imports); no entry for one never imported."""
        with self._lock:
            rows = self._rows("SELECT * FROM import_bases")
        return {r["article_id"]: _base(r) for r in rows}

    def import_base(self, article_id: str) -> ImportBase | None:
        with self._lock:
            row = self._row("SELECT * FROM import_bases WHERE article_id=?", (article_id,))
        return _base(row) if row else None

    def _latest(self) -> dict[str, Latest]:
        """Every entry that ever existed -> its newest revision, and its content hash if it is live."""
        rows = self._rows(
            "SELECT r.article_id, r.rev, r.action, r.author, r.at, a.content_hash FROM revisions r "
            "JOIN (SELECT article_id, max(rev) AS rev FROM revisions GROUP BY article_id) m "
            "  ON r.article_id = m.article_id AND r.rev = m.rev "
            "LEFT JOIN articles a ON a.id = r.article_id"
        )
        return {r["article_id"]: Latest(r["rev"], r["action"], r["author"], r["at"], r["content_hash"]) for r in rows}

    def chunk(self, draft: ArticleDraft) -> builtins.list[ChunkDraft]:
        """The chunks :meth:`upsert` would store for a draft (their hashes key the embedding cache)."""
        return self._chunker(draft)

    def live_chunk_ids(self) -> np.ndarray:
        with self._lock:
            rows = self._rows("SELECT chunk_id FROM chunks ORDER BY chunk_id")
        return np.fromiter((r["chunk_id"] for r in rows), dtype=np.int64, count=len(rows))

    def chunks(self, chunk_ids: Iterable[int] | None = None) -> builtins.list[Chunk]:
        with self._lock:
            if chunk_ids is None:
                rows = self._rows("SELECT * FROM chunks ORDER BY chunk_id")
            else:
                ids = [int(i) for i in chunk_ids]
                rows = []
                for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                    part = ids[start:start + 900]
                    rows += self._rows(f"SELECT * FROM chunks WHERE chunk_id IN ({','.join('?' * len(part))})", part)
        return [_chunk(r) for r in rows]

    def article_chunks(self, article_id: str) -> builtins.list[Chunk]:
        with self._lock:
            rows = self._rows("SELECT * FROM chunks WHERE article_id=? ORDER BY ord", (article_id,))
        return [_chunk(r) for r in rows]

    def titles(self, article_ids: Iterable[str]) -> dict[str, tuple[str, str, str]]:
        """id -> (title, kind, body) for the given ids."""
        ids = builtins.list(set(article_ids))
        if not ids:
            return {}
        with self._lock:
            rows = self._rows(
                f"SELECT id, title, questions, body FROM articles WHERE id IN ({','.join('?' * len(ids))})", ids
            )
        return {r["id"]: (r["title"], "faq" if r["questions"] != "[]" else "article", r["body"]) for r in rows}

    # -- embedding cache -------------------------------------------------------------------
    def cached_embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(hashes), 900):
                part = builtins.list(hashes[start:start + 900])
                for row in self._rows(
                    "SELECT text_hash, vector FROM embeddings WHERE model=? "
                    f"AND text_hash IN ({','.join('?' * len(part))})",
                    [model, *part],
                ):
                    found[row["text_hash"]] = np.frombuffer(row["vector"], dtype=np.float32)
        return found

    def cache_embeddings(self, model: str, items: dict[str, np.ndarray]) -> None:
        """Add vectors to the cache in one transaction: a crash leaves the whole batch or none of it.

        Several processes share the cache (a writer waits for another's commit).
        """
        if not items:
            return
        with self._cache_transaction():
            self._exec_many(
                "INSERT INTO embeddings (text_hash, model, vector) VALUES (?, ?, ?) "
                "ON CONFLICT (text_hash, model) DO UPDATE SET vector=excluded.vector",
                [(h, model, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()],
            )

    # -- writing ---------------------------------------------------------------------------
    def _bump_version(self, author: str, summary: str) -> int:
        version = self.kb_version() + 1
        self._exec(
            "INSERT INTO meta (key, value) VALUES ('kb_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(version),)
        )
        self._exec(
            "INSERT INTO kb_versions (version, at, author, summary) VALUES (?, ?, ?, ?)",
            (version, _now(), author, summary),
        )
        self._version_bumped(version)
        return version

    def _next_rev(self, article_id: str) -> int:
        row = self._row("SELECT max(rev) AS rev FROM revisions WHERE article_id=?", (article_id,))
        return ((row["rev"] if row else None) or 0) + 1

    def _write(self, d: ArticleDraft, version: int, author: str, action: str, note: str = "") -> int:
        """Write one revision of ``d`` and make it current; returns its revision number."""
        rev, at = self._next_rev(d.id), _now()
        tags, questions = json.dumps(builtins.list(d.tags)), json.dumps(builtins.list(d.questions))
        self._exec(
            "INSERT INTO revisions (article_id, rev, kb_version, at, author, action, title, body, tags, questions, "
            "note) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (d.id, rev, version, at, author, action, d.title, d.body, tags, questions, note),
        )
        self._exec(
            "INSERT INTO articles (id, title, body, tags, questions, source, rev, content_hash, updated_at, "
            "updated_by) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET title=excluded.title, body=excluded.body, tags=excluded.tags, "
            "questions=excluded.questions, source=excluded.source, rev=excluded.rev, "
            "content_hash=excluded.content_hash, updated_at=excluded.updated_at, updated_by=excluded.updated_by",
            (d.id, d.title, d.body, tags, questions, d.source, rev, d.hash, at, author),
        )
        self._replace_chunks(d)
        return rev

    def _replace_chunks(self, d: ArticleDraft) -> None:
        """Keep chunk rows whose text is unchanged (their ids stay in the index), replace the rest."""
        new = self._chunker(d)
        old = self._rows("SELECT chunk_id, text_hash FROM chunks WHERE article_id=?", (d.id,))
        wanted = Counter(c.hash for c in new)
        keep: set[int] = set()
        for row in old:
            if wanted[row["text_hash"]] > 0:
                wanted[row["text_hash"]] -= 1
                keep.add(row["chunk_id"])
        drop = [row["chunk_id"] for row in old if row["chunk_id"] not in keep]
        self._exec_many("DELETE FROM chunks WHERE chunk_id=?", [(i,) for i in drop])
        kept_by_hash: dict[str, builtins.list[int]] = {}
        for row in old:
            if row["chunk_id"] in keep:
                kept_by_hash.setdefault(row["text_hash"], []).append(row["chunk_id"])
        for c in new:
            ids = kept_by_hash.get(c.hash)
            if ids:  # unchanged text: keep the id, refresh its position and display text
                self._exec("UPDATE chunks SET ord=?, heading=?, text=? WHERE chunk_id=?",
                           (c.ord, c.heading, c.text, ids.pop()))
            else:
                self._exec(
                    "INSERT INTO chunks (article_id, ord, kind, heading, text, embed_text, text_hash) "
                    "VALUES (?,?,?,?,?,?,?)",
                    (d.id, c.ord, c.kind, c.heading, c.text, c.embed_text, c.hash),
                )

    def upsert(self, drafts: Sequence[ArticleDraft], author: str = "operator", note: str = "",
               expect: Mapping[str, int | None] | None = None) -> ChangeSummary:
        """Create or update articles in one transaction; unchanged content makes no revision.

        ``expect``: article id -> the revision the writer saw (None: it must not exist). Checked in
        the same transaction as the write, so of two editors (on two workers) saving the same
        revision one wins and the other gets a ConflictError, nothing written.
        """
        created: builtins.list[str] = []
        updated: builtins.list[str] = []
        unchanged: builtins.list[str] = []
        with self._transaction():
            for article_id, rev in (expect or {}).items():
                row = self._row("SELECT rev FROM articles WHERE id=?", (article_id,))
                if (row["rev"] if row else None) != rev:
                    if rev is None:
                        raise ConflictError(f"article {article_id!r} exists already (revision {row and row['rev']}), "
                                            "not None as expected: another writer made it")
                    self._check_rev(article_id, rev)
            current = {r["id"]: r["content_hash"] for r in self._rows("SELECT id, content_hash FROM articles")}
            for d in drafts:
                if d.id not in current:
                    created.append(d.id)
                elif current[d.id] != d.hash:
                    updated.append(d.id)
                else:
                    unchanged.append(d.id)
            version = self.kb_version()
            if created or updated:
                version = self._bump_version(author, note or f"{len(created)} created, {len(updated)} updated")
                changed = set(created) | set(updated)
                for d in drafts:
                    if d.id in changed:
                        self._write(d, version, author, "create" if d.id in created else "update", note)
        return ChangeSummary(version, tuple(created), tuple(updated), tuple(unchanged))

    def import_drafts(self, drafts: Sequence[ArticleDraft], author: str = "operator", note: str = "",
                      resolve: Resolve = "refuse") -> ChangeSummary:
        """A file import, in one transaction: like :meth:`upsert`, but an entry changed in the store
        since its last import (an edit, a rollback, a deletion) is never overwritten. Its file
        unchanged: the change stands (``kept``); its file changed too: a conflict, not imported
        unless ``resolve`` says who wins ("theirs": the file, "ours": the store). See knowledge.imports."""
        created: builtins.list[str] = []
        updated: builtins.list[str] = []
        unchanged: builtins.list[str] = []
        kept: builtins.list[ImportChange] = []
        conflicts: builtins.list[ImportChange] = []
        resolved: builtins.list[ImportChange] = []
        writes: builtins.list[tuple[ArticleDraft, str, str]] = []  # draft, action, note
        seen: builtins.list[tuple[ArticleDraft, int]] = []  # import bases to record: the draft and its revision
        with self._transaction():
            latest = self._latest()
            bases = {r["article_id"]: _base(r) for r in self._rows("SELECT * FROM import_bases")}
            for d in drafts:
                now, base = latest.get(d.id), bases.get(d.id)
                outcome = decide(d.hash, now, base, resolve)
                live = now is not None and now.content_hash is not None
                if outcome in ("create", "update"):
                    (updated if live else created).append(d.id)
                    writes.append((d, "update" if live else "create", note))
                    continue
                assert now is not None  # only a new entry has no revision
                if outcome == "unchanged":
                    unchanged.append(d.id)
                    in_step = (now.rev, d.hash, d.source or "")  # the store has the file's content: the base follows
                    if now.content_hash == d.hash and (base is None or (base.rev, base.content_hash, base.source)
                                                       != in_step):
                        seen.append((d, now.rev))
                    continue
                change = ImportChange(d.id, d.source or "", base.rev if base else None, now.rev, now.action,
                                      now.author, now.at, deleted=not live)
                if outcome == "kept":
                    kept.append(change)
                elif outcome == "conflict":
                    conflicts.append(change)
                elif outcome == "ours":
                    resolved.append(replace(change, resolution="ours"))
                    seen.append((d, now.rev))
                else:  # theirs
                    resolved.append(replace(change, resolution="theirs"))
                    (updated if live else created).append(d.id)
                    writes.append((d, "update" if live else "create",
                                   f"{note}; the file won a conflict (--theirs) over rev {now.rev} by {now.author}"))
            version = self.kb_version()
            if writes:
                version = self._bump_version(author, f"{note or 'file import'}: {len(created)} created, "
                                                     f"{len(updated)} updated")
                for d, action, why in writes:
                    seen.append((d, self._write(d, version, author, action, why)))
            at = _now()
            self._exec_many(
                "INSERT INTO import_bases (article_id, rev, content_hash, source, at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(article_id) DO UPDATE SET rev=excluded.rev, content_hash=excluded.content_hash, "
                "source=excluded.source, at=excluded.at",
                [(d.id, rev, d.hash, d.source or "", at) for d, rev in seen],
            )
        return ChangeSummary(version, tuple(created), tuple(updated), tuple(unchanged), kept=tuple(kept),
                             conflicts=tuple(conflicts), resolved=tuple(resolved))

    def _check_rev(self, article_id: str, rev: int | None) -> None:
        """In a write transaction: a ConflictError unless the article is at revision ``rev`` (None: not checked)."""
        if rev is None:
            return
        row = self._row("SELECT rev FROM articles WHERE id=?", (article_id,))
        now = row["rev"] if row else None
        if now != rev:
            raise ConflictError(f"article {article_id!r} is at revision {now}, not {rev}: it changed since it was "
                                "read; reload it and apply the change again")

    def delete(self, article_id: str, author: str = "operator", note: str = "",
               expect_rev: int | None = None) -> ChangeSummary:
        """Delete an article (its history stays); ``expect_rev``: the revision the caller saw (ConflictError if not)."""
        with self._transaction():
            article = self.get(article_id)
            self._check_rev(article_id, expect_rev)
            version = self._bump_version(author, note or f"deleted {article_id}")
            self._exec(
                "INSERT INTO revisions (article_id, rev, kb_version, at, author, action, title, body, tags, questions, "
                "note) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (article_id, self._next_rev(article_id), version, _now(), author, "delete", article.title,
                 article.body, json.dumps(builtins.list(article.tags)), json.dumps(builtins.list(article.questions)),
                 note),
            )
            self._exec("DELETE FROM articles WHERE id=?", (article_id,))
            self._exec("DELETE FROM chunks WHERE article_id=?", (article_id,))
        return ChangeSummary(version, deleted=(article_id,))

    def rollback(self, article_id: str, to_rev: int, author: str = "operator",
                 expect_rev: int | None = None) -> ChangeSummary:
        """Restore the content of an earlier revision as a new revision (works for deleted articles too).
        ``expect_rev``: the live revision the caller saw (ConflictError if it moved; a deleted one is not checked)."""
        with self._transaction():
            if expect_rev is not None and self.find(article_id) is not None:
                self._check_rev(article_id, expect_rev)
            target = self.revision(article_id, to_rev)
            if target.action == "delete":
                raise KnowledgeError(
                    f"revision {to_rev} of {article_id!r} is a deletion; roll back to a revision before it"
                )
            current = self.find(article_id)
            draft = ArticleDraft(article_id, target.title, target.body, target.tags, target.questions,
                                 source=current.source if current else None)
            if current is not None and current.hash == draft.hash:
                return ChangeSummary(self.kb_version(), unchanged=(article_id,))
            version = self._bump_version(author, f"rolled {article_id} back to revision {to_rev}")
            self._write(draft, version, author, "rollback", f"to revision {to_rev}")
        return ChangeSummary(version, updated=(article_id,))


class KnowledgeStore(KnowledgeStoreBase):
    """SQLite-backed articles, revisions and chunks. Thread-safe; WAL so several processes
    (a running server and the CLI) can share one database.

    :meth:`start` (or ``with``) opens the database; a caller that never calls it gets it
    opened on first use. synchronous=NORMAL (as always): a killed process loses nothing
    committed; a power cut may lose the latest commits but never corrupts the file.
    """

    def __init__(self, path: Path | str, chunker: Callable[[ArticleDraft], list[ChunkDraft]] | None = None):
        super().__init__(chunker)
        self.path = Path(path)
        self._sql = SQLiteDatabase(self.path, SCHEMA, what="the knowledge database", synchronous="NORMAL",
                                   reentrant=True, open_error=KnowledgeError)
        self._lock = self._sql.lock  # type: ignore[assignment]  # reentrant: upsert -> kb_version
        self._migrated = False

    def start(self) -> None:
        """Open the database now (created with its schema if missing, an older one migrated);
        raises KnowledgeError if the file is not a SQLite database."""
        self._sql.start()
        self._db  # noqa: B018 - migrates an older database now rather than on first use

    def close(self) -> None:
        self._sql.close()
        self._migrated = False

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (opened on first use, an older database migrated); use it under ``self._lock``."""
        db = self._sql.connection
        if not self._migrated:
            with self._lock, self._writing():
                if not self._migrated:
                    migrate(db)
                    self._migrated = True
        return db

    def __enter__(self) -> "KnowledgeStore":
        self.start()
        return self

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """A lock held by another process, or a full disk, as the error that says what to do."""
        return translate_errors(self.path, "the knowledge base")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Row]:
        return self._db.execute(sql, params).fetchall()

    def _row(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._db.execute(sql, params).fetchone()
        return row

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def _exec_many(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, seq)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes SQLite's write lock now: another process's writer waits (up to
        # 30 s) for this one's commit, so versions never interleave
        with self._lock, self._writing(), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield
