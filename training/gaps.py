"""Knowledge gaps: questions the bot could not answer and a human agent did, proposed as FAQ
entries for an operator to review.

    proposals = find_gaps(transcripts, kb)            # cluster + redact, nothing is live
    store = proposals_for(kb.store)                   # beside the KB: its SQLite file, or PostgreSQL
    store.add(proposals)
    store.accept(pid, kb, reviewer="olivia")          # only now does an FAQ entry go live
    store.reject(pid, reviewer="olivia")

A conversation counts when its ``meta`` says ``resolved_by_agent``, or it was ``escalated`` and
an agent replied. Each customer question that an agent answered and that the knowledge base
does not answer (its best search score is under the retrieval threshold) is redacted, embedded
and clustered with the others (greedy, by cosine to each cluster's centroid >= ``threshold``).
A cluster becomes a proposal: its distinct phrasings, the agent answer nearest the cluster's
centre, how many conversations asked, and their ids.
"""

from __future__ import annotations

import abc
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from botkit.errors import BotkitError
from botkit.sqlite import SQLiteDatabase
from knowledge.types import ArticleDraft, content_hash
from training.retriever import exchanges
from training.types import Transcript

DEFAULT_THRESHOLD = 0.72  # cosine (all-MiniLM-L6-v2): paraphrases ~0.75-0.95, other questions < 0.6
STATUSES = ("proposed", "accepted", "rejected")
SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    questions TEXT NOT NULL,      -- JSON list of redacted phrasings, most frequent first
    answer TEXT NOT NULL,         -- the redacted agent answer
    count INTEGER NOT NULL,       -- conversations that asked
    sources TEXT NOT NULL,        -- JSON list of conversation ids
    status TEXT NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed', 'accepted', 'rejected')),
    created_at TEXT NOT NULL,
    reviewed_at TEXT,
    reviewer TEXT,
    article_id TEXT,              -- the FAQ entry an acceptance created
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS proposals_status ON proposals(status);
"""


class ProposalError(BotkitError):
    """A proposal cannot be reviewed as asked (unknown id, already reviewed)."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Proposal:
    id: str
    title: str
    questions: tuple[str, ...]
    answer: str
    count: int
    sources: tuple[str, ...]
    status: str = "proposed"
    created_at: str = ""
    reviewed_at: str | None = None
    reviewer: str | None = None
    article_id: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "questions": list(self.questions), "answer": self.answer,
                "count": self.count, "sources": list(self.sources), "status": self.status,
                "created_at": self.created_at, "reviewed_at": self.reviewed_at, "reviewer": self.reviewer,
                "article_id": self.article_id, "note": self.note}


@dataclass(frozen=True)
class GapQuestion:
    conversation_id: str
    question: str  # redacted
    answer: str  # redacted
    score: float  # the KB's best score for the question (under the threshold)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_redact() -> Callable[[str], str]:
    from training.redact import Redactor

    redactor = Redactor()
    return lambda text: redactor.redact(text)[0]


def agent_resolved(t: Transcript) -> bool:
    has_agent = any(m.role == "agent" and m.text.strip() for m in t.messages)
    return has_agent and bool(t.meta.get("resolved_by_agent") or t.meta.get("escalated"))


def gap_questions(transcripts: Iterable[Transcript], kb: Any | None, *, redact: Callable[[str], str] | None = None,
                  score_threshold: float | None = None) -> list[GapQuestion]:
    """Questions from agent-resolved conversations that the KB does not answer (redacted)."""
    redact = redact or default_redact()
    if score_threshold is None and kb is not None:
        score_threshold = kb.config.retrieval.threshold
    out: list[GapQuestion] = []
    for t in transcripts:
        if not agent_resolved(t):
            continue
        for question, answer in exchanges(t):
            score = float("-inf")
            if kb is not None:
                result = kb.search(question[: kb.config.retrieval.max_query_chars], 1)
                # Semantic similarity alone decides "the KB covers this": shared everyday words
                # lift the hybrid score of unrelated articles above the threshold.
                score = result.hits[0].dense_score if result.hits else float("-inf")
                if score_threshold is not None and score >= score_threshold:
                    continue  # the KB answers this already
            q, a = redact(question).strip(), redact(answer).strip()
            if q and a:
                out.append(GapQuestion(t.id, q, a, score))
    return out


def cluster(vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
    """Greedy centroid clustering of unit vectors: each item joins the cluster whose centroid is
    most similar if that cosine is >= threshold, else starts a new one. Deterministic."""
    clusters: list[list[int]] = []
    sums: list[np.ndarray] = []
    for i, v in enumerate(vectors):
        if sums:
            cents = np.stack([s / max(np.linalg.norm(s), 1e-12) for s in sums])
            sims = cents @ v
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                clusters[best].append(i)
                sums[best] = sums[best] + v
                continue
        clusters.append([i])
        sums.append(v.astype(np.float64).copy())
    return clusters


def find_gaps(transcripts: Iterable[Transcript], kb: Any | None = None, *, embedder: Any | None = None,
              redact: Callable[[str], str] | None = None, threshold: float = DEFAULT_THRESHOLD,
              min_count: int = 1, score_threshold: float | None = None) -> list[Proposal]:
    """Proposals (most asked first) for questions agents answered and the KB did not."""
    embedder = embedder or (kb.embedder if kb is not None else None)
    if embedder is None:
        raise ValueError("find_gaps needs a knowledge base or an embedder")
    items = gap_questions(transcripts, kb, redact=redact, score_threshold=score_threshold)
    if not items:
        return []
    qvecs = embedder.embed([g.question for g in items])
    proposals: list[Proposal] = []
    now = _now()
    for members in cluster(qvecs, threshold):
        group = [items[i] for i in members]
        sources = tuple(dict.fromkeys(g.conversation_id for g in group))
        if len(sources) < min_count:
            continue
        counts = Counter(g.question for g in group)
        first = {q: n for n, q in enumerate(g.question for g in reversed(group))}
        questions = tuple(sorted(counts, key=lambda q: (-counts[q], first[q])))
        centre = qvecs[members].mean(axis=0)
        best = max(range(len(members)), key=lambda j: float(qvecs[members[j]] @ centre))
        answer = group[best].answer
        pid = "p-" + content_hash(sorted(sources), list(questions))[:12]
        title = questions[0].rstrip("?!. ")[:200] or "Proposed FAQ entry"
        proposals.append(Proposal(pid, title, questions, answer, len(sources), sources, "proposed", now))
    proposals.sort(key=lambda p: (-p.count, p.id))
    return proposals


# -- review -------------------------------------------------------------------------------------

class ProposalStoreBase(abc.ABC):
    """FAQ proposals over a small SQL seam (the knowledge store's: ``knowledge.store``), in SQL
    SQLite and PostgreSQL share. :class:`ProposalStore` is the SQLite form, in the knowledge
    base's own database; ``botkit.backends.pg_knowledge`` has the PostgreSQL form. Open the one
    that goes with a knowledge store with :func:`proposals_for`.
    """

    _lock: Any  # reentrant: accept() calls get()

    @abc.abstractmethod
    def start(self) -> None:
        """Open the database now (the ``proposals`` table is created if missing)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close it."""

    @abc.abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of a query, by column name (under ``self._lock``)."""

    @abc.abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the rows it changed (under ``self._lock``)."""

    def __enter__(self) -> "ProposalStoreBase":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _proposal(r: Any) -> Proposal:
        return Proposal(r["id"], r["title"], tuple(json.loads(r["questions"])), r["answer"], r["count"],
                        tuple(json.loads(r["sources"])), r["status"], r["created_at"], r["reviewed_at"],
                        r["reviewer"], r["article_id"], r["note"])

    def add(self, proposals: Sequence[Proposal]) -> list[str]:
        """Store new proposals; one with an id already stored (same sources and phrasings) is
        left as it is, so a rerun never revives a rejected proposal. Returns the ids added."""
        added = []
        with self._lock:
            for p in proposals:
                n = self._exec(
                    "INSERT INTO proposals (id, title, questions, answer, count, sources, status, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'proposed', ?) ON CONFLICT (id) DO NOTHING",
                    (p.id, p.title, json.dumps(list(p.questions), ensure_ascii=False), p.answer, p.count,
                     json.dumps(list(p.sources)), p.created_at or _now()))
                if n:
                    added.append(p.id)
        return added

    def list(self, status: str | None = None) -> list[Proposal]:
        if status is not None and status not in STATUSES:
            raise ProposalError(f"unknown status {status!r} (one of {', '.join(STATUSES)})", 400)
        with self._lock:
            if status is None:
                rows = self._rows("SELECT * FROM proposals ORDER BY count DESC, created_at, id")
            else:
                rows = self._rows("SELECT * FROM proposals WHERE status = ? ORDER BY count DESC, created_at, id",
                                  (status,))
        return [self._proposal(r) for r in rows]

    def get(self, pid: str) -> Proposal:
        with self._lock:
            rows = self._rows("SELECT * FROM proposals WHERE id = ?", (pid,))
        if not rows:
            raise ProposalError(f"no proposal {pid!r}", 404)
        return self._proposal(rows[0])

    def _open(self, pid: str) -> Proposal:
        p = self.get(pid)
        if p.status != "proposed":
            raise ProposalError(f"proposal {pid!r} was already {p.status} by {p.reviewer} at {p.reviewed_at}")
        return p

    def draft(self, pid: str, *, questions: Sequence[str] | None = None, answer: str | None = None,
              article_id: str | None = None, title: str | None = None,
              tags: Sequence[str] = ("from-conversations",)) -> ArticleDraft:
        """The FAQ entry accepting ``pid`` would create (operator edits applied)."""
        from knowledge.ingest import slugify

        p = self.get(pid)
        qs = tuple(q.strip() for q in (questions if questions is not None else p.questions) if q.strip())
        body = (answer if answer is not None else p.answer).strip()
        title = (title or "").strip() or (qs[0].rstrip("?!. ") if qs else p.title)
        return ArticleDraft(article_id or slugify(title)[:120] or p.id, title, body, tuple(tags), qs,
                            f"proposal:{p.id}")

    def accept(self, pid: str, kb: Any, reviewer: str, *, draft: ArticleDraft | None = None, **edits: Any) -> Proposal:
        """Create the FAQ entry through ``kb.upsert`` (author: the reviewer) and mark it accepted."""
        with self._lock:
            self._open(pid)
            d = draft or self.draft(pid, **edits)
            if not d.questions or not d.body:
                raise ProposalError("an FAQ entry needs at least one question and an answer", 400)
            if kb.store.find(d.id) is not None:
                raise ProposalError(f"an article with id {d.id!r} exists already; choose another id")
            kb.upsert([d], author=reviewer, note=f"accepted proposal {pid}")
            self._exec("UPDATE proposals SET status = 'accepted', reviewer = ?, reviewed_at = ?, article_id = ?"
                       " WHERE id = ?", (reviewer, _now(), d.id, pid))
            return self.get(pid)

    def reject(self, pid: str, reviewer: str, note: str = "") -> Proposal:
        with self._lock:
            self._open(pid)
            # status='proposed': of two workers reviewing it at once, one wins; the other is told
            if not self._exec("UPDATE proposals SET status = 'rejected', reviewer = ?, reviewed_at = ?, note = ?"
                              " WHERE id = ? AND status = 'proposed'", (reviewer, _now(), note[:1000], pid)):
                self._open(pid)
            return self.get(pid)


class ProposalStore(ProposalStoreBase):
    """The ``proposals`` table in the knowledge base's SQLite database.

    :meth:`start` (or ``with``) opens it; a caller that never calls it gets it opened on first use.
    """

    def __init__(self, db_path: Path | str):
        self.path = Path(db_path)
        # SQLite's default synchronous (FULL), as it always had; reentrant: accept() calls get().
        self._sql = SQLiteDatabase(self.path, SCHEMA, what="the gap proposals", reentrant=True)
        self._lock = self._sql.lock

    def start(self) -> None:
        """Open the database now (the ``proposals`` table is created if missing)."""
        self._sql.start()

    def close(self) -> None:
        self._sql.close()

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (opened on first use); use it under ``self._lock``."""
        return self._sql.connection

    def __enter__(self) -> "ProposalStore":
        self.start()
        return self

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._db.execute(sql, params).fetchall()

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount


def proposals_for(store: Any) -> ProposalStoreBase:
    """The FAQ proposals kept beside a knowledge store (not started): the store's own
    ``open_proposals()`` where it has one (PostgreSQL), else the ``proposals`` table in its
    SQLite file."""
    opener = getattr(store, "open_proposals", None)
    if opener is not None:
        proposals: ProposalStoreBase = opener()
        return proposals
    return ProposalStore(store.path)


__all__ = ["DEFAULT_THRESHOLD", "GapQuestion", "Proposal", "ProposalError", "ProposalStore", "ProposalStoreBase",
           "agent_resolved", "cluster", "default_redact", "find_gaps", "gap_questions", "proposals_for"]
