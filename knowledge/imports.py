"""Who owns an entry, files or the editor: the three-way check ``botkit kb import`` makes.

Every entry a file import wrote (or found already equal) gets an **import base**: the store
revision that import left current and the content hash of the file's entry at that time.
On the next import each entry in the files is compared with its base, like a merge in Git:

========================  ========================  ==========================================
store since the base      file since the base       outcome
========================  ========================  ==========================================
unchanged                 unchanged                 nothing to do
unchanged                 changed                   **update** (the file's new content)
changed (edit, rollback,  unchanged                 **kept**: the store's change stands and is
delete)                                             reported; the base stays where it was
changed                   changed                   **conflict**: reported, nothing imported,
                                                    unless ``theirs`` (the file wins) or
                                                    ``ours`` (the store wins; the base advances
                                                    so it is no longer reported)
========================  ========================  ==========================================

"The store unchanged" means it still holds the content the file had at that import; when
the store already holds exactly the file's content the two sides agree, whatever happened in
between, and the base advances to it. After ``ours`` the store keeps a version the file does
not have: it is not reported while the file stays as it was, and a later change to the file
is a conflict again (an import replaces a whole entry, so importing it would drop the kept
version). An entry with no base that exists in the
store with other content (created in the editor, uploaded, or proposed, under an id a file
now uses) is a conflict too: nothing is ever overwritten that no file import wrote.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Literal

from knowledge.types import content_hash

Resolve = Literal["refuse", "theirs", "ours"]
Outcome = Literal["create", "update", "unchanged", "kept", "conflict", "theirs", "ours"]
SCHEMA_VERSION = 2  # 2: import_bases (who owns an entry); 1 (no schema_version in meta): before it

IMPORT_BASES_SQL = """
CREATE TABLE IF NOT EXISTS import_bases (
    article_id TEXT PRIMARY KEY, rev INTEGER NOT NULL, content_hash TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '', at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ImportBase:
    """What the last file import of one entry saw: the revision it left current, the file's content hash."""

    article_id: str
    rev: int
    content_hash: str
    source: str  # "file:line" the entry came from
    at: str


@dataclass(frozen=True)
class Latest:
    """An entry's newest revision (a deletion included) and whether it is live now."""

    rev: int
    action: str
    author: str
    at: str
    content_hash: str | None  # of the live article; None when it is deleted


@dataclass(frozen=True)
class ImportChange:
    """An entry changed in the knowledge base since its last file import (kept or in conflict)."""

    article_id: str
    source: str  # the file (and line) that defines it
    base_rev: int | None  # the revision the last import left; None: never imported from a file
    rev: int  # the newest revision (for a deleted entry, its deletion)
    action: str  # what that revision did: update, rollback, delete, create
    author: str
    at: str
    deleted: bool
    resolution: str = ""  # "" (left as it is), "theirs" (the file was imported), "ours" (the store kept)

    def to_json(self) -> dict[str, object]:
        return {"id": self.article_id, "source": self.source, "import_rev": self.base_rev, "rev": self.rev,
                "action": self.action, "by": self.author, "at": self.at, "deleted": self.deleted,
                **({"resolution": self.resolution} if self.resolution else {})}


def decide(draft_hash: str, latest: Latest | None, base: ImportBase | None, resolve: Resolve) -> Outcome:
    """The outcome for one entry of the files (see the module docstring)."""
    if latest is None:  # never existed
        return "create"
    if latest.content_hash == draft_hash:
        return "unchanged"  # the store has the file's content: the base advances to it if it is not there yet
    if base is None:
        return _conflict(resolve)
    file_changed = draft_hash != base.content_hash
    if latest.content_hash == base.content_hash:  # the store still says what the file said at the import
        return "update" if file_changed else "unchanged"
    # The store differs from the file as last imported (an edit, a rollback, a deletion): the
    # file never replaces it unasked, so no change made here is lost.
    if file_changed:
        return _conflict(resolve)
    return "unchanged" if latest.rev == base.rev else "kept"  # unchanged: --ours chose this version over the file


def _conflict(resolve: Resolve) -> Outcome:
    return "conflict" if resolve == "refuse" else resolve


def revision_hash(row: sqlite3.Row) -> str:
    """The content hash of a revision row (the same as ArticleDraft.hash of its content)."""
    return content_hash(row["title"], row["body"], json.loads(row["tags"]), json.loads(row["questions"]))


def migrate(db: sqlite3.Connection) -> None:
    """Bring a knowledge database up to :data:`SCHEMA_VERSION` (one transaction; idempotent, and
    safe when two processes open an old database at once: the second finds it done).

    Version 2 adds ``import_bases``. A database from before it gets its bases from its history:
    each entry's newest revision written by ``botkit kb import`` (note "import of N entries"),
    so an edit made in the editor after that import is recognised as one by the next import.
    """
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is not None and int(row[0]) >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None or int(row[0]) < SCHEMA_VERSION:
            _backfill_import_bases(db)
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _backfill_import_bases(db: sqlite3.Connection) -> None:
    rows = db.execute(
        "SELECT r.*, a.source AS live_source FROM revisions r "
        "JOIN (SELECT article_id, max(rev) AS rev FROM revisions WHERE action IN ('create', 'update') "
        "      AND note LIKE 'import of %' GROUP BY article_id) last "
        "  ON r.article_id = last.article_id AND r.rev = last.rev "
        "LEFT JOIN articles a ON a.id = r.article_id"
    ).fetchall()
    db.executemany(
        "INSERT OR IGNORE INTO import_bases (article_id, rev, content_hash, source, at) VALUES (?,?,?,?,?)",
        [(r["article_id"], r["rev"], revision_hash(r), r["live_source"] or "", r["at"]) for r in rows],
    )


__all__ = ["IMPORT_BASES_SQL", "SCHEMA_VERSION", "ImportBase", "ImportChange", "Latest", "Resolve", "decide",
           "migrate", "revision_hash"]
