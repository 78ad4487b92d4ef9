"""Fit a knowledge base's router and confidence calibration from the KB itself.

Run at start (unless the stored fit matches the KB version and settings) and after every
change, where the BM25 index is rebuilt. Everything comes from vectors the index already
holds, plus one embedding per title, heading and shipped off-topic question (cached in the
embedding cache, so a refit embeds only what is new). See :mod:`knowledge.confidence` for
what the examples are and why.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from botkit.config import RetrievalConfig
from knowledge.confidence import MAX_POSITIVES, Calibration, fit, out_of_domain_questions
from knowledge.lexical import LexicalIndex
from knowledge.ranking import Ranking, fuse
from knowledge.router import MAX_CLASSES, Router, cross_fitted, eligible, train
from knowledge.types import Chunk

MAX_NEAR_NEGATIVES = 0  # phrasings searched with their whole entry held out (few: they look like hard positives)
MAX_PASSAGES = 1000  # article passages whose first sentence is used as a query
MAX_TITLES = 2000  # entry titles used as queries (a sample past that: each costs a dense and a BM25 search
# over the whole KB, so all 30k titles of a 30k-entry KB made the fit minutes long at every start)
SEED = 0
# An answerable KB query whose top hit is another entry: a negative (P(correct)) or left out
# (P(answerable)). Left out: most such misses here are generic headings ("Fees", "How it works")
# that several articles could answer, and counting them as negatives pushed right answers to
# real questions under 0.5 on the demo KB.
MISSES_AS_NEGATIVES = False
_SENTENCE = re.compile(r"(?<=[.!?])\s")


_NAME = re.compile(r"\b[A-Z][a-z]+(?: (?:&|and|of) [A-Z][a-z]+| [A-Z][a-z]+)+\b")
BRAND_TEMPLATES = (
    "who founded {b}", "when was {b} founded", "who is the ceo of {b}", "is {b} hiring right now",
    "where is {b}'s head office", "how many people work at {b}", "is {b} a public company",
    "who owns {b}", "what does the name {b} mean", "how much money does {b} make",
)


def brand_questions(titles: dict[str, str], chunks: Sequence[Chunk], names: int = 3) -> list[str]:
    """Questions about the company and its named things that a help centre does not answer
    ("who founded X", "who is the CEO of X"): near-domain negatives made from the KB.

    X: the multi-word proper names (company, programme, product) found in the most entries,
    two at least; their words match BM25 in many chunks, so without these negatives a question
    that merely names them looked answered.
    """
    seen: dict[str, set[str]] = defaultdict(set)
    for c in chunks:
        for name in set(_NAME.findall(c.text)):
            seen[name].add(c.article_id)
    common = sorted((kv for kv in seen.items() if len(kv[1]) >= 2), key=lambda kv: (-len(kv[1]), kv[0]))[:names]
    return [t.format(b=name) for name, _ in common for t in BRAND_TEMPLATES]


def _lead(text: str) -> str:
    """A passage's first sentence (at most 200 characters): how an article's content is asked about."""
    first = _SENTENCE.split(text.strip(), maxsplit=1)[0]
    return first[:200].strip()


@dataclass(frozen=True)
class Fitted:
    router: Router | None
    calibration: Calibration
    seconds: float
    examples: int


class _MemoryLookup:
    """Chunks and vectors in memory (the calibration searches thousands of queries)."""

    def __init__(self, chunks: Sequence[Chunk], vectors: np.ndarray):
        self.by_id = {c.chunk_id: c for c in chunks}
        self.row = {c.chunk_id: i for i, c in enumerate(chunks)}
        self.vectors = vectors
        self.by_article: dict[str, list[Chunk]] = defaultdict(list)
        for c in chunks:
            self.by_article[c.article_id].append(c)

    def chunks(self, ids: Iterable[int]) -> dict[int, Chunk]:
        return {i: self.by_id[i] for i in ids if i in self.by_id}

    def cosines(self, chunks: list[Chunk], qvec: np.ndarray) -> dict[int, float]:
        return {c.chunk_id: float(self.vectors[self.row[c.chunk_id]] @ qvec) for c in chunks}

    def article_chunks(self, article_id: str) -> list[Chunk]:
        return self.by_article.get(article_id, [])


@dataclass(frozen=True)
class _Query:
    text: str
    vec: np.ndarray
    article: str | None  # the entry that answers it; None: nothing in the KB does
    exclude_chunks: frozenset[int] = frozenset()
    exclude_article: str | None = None  # near-domain negative: its own entry held out
    router_row: int | None = None  # the cross-fitted router probabilities to use, when trained on it


def fit_models(chunks: Sequence[Chunk], vectors: np.ndarray, titles: dict[str, str], lexical: LexicalIndex | None,
               cfg: RetrievalConfig, embed: Callable[[list[str]], np.ndarray], *, fingerprint: str = "",
               pause: Callable[[], None] | None = None) -> Fitted:
    """The router (None when off) and the calibration for a KB's chunks and their vectors.

    ``pause`` is called between small steps; a background refit passes one that lets a customer's
    search go first (the fit is Python-heavy and would otherwise slow searches through the GIL)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    lookup = _MemoryLookup(chunks, vectors)
    questions = [i for i, c in enumerate(chunks) if c.kind == "question"]
    counts: dict[str, int] = defaultdict(int)
    for i in questions:
        counts[chunks[i].article_id] += 1
    classes = sorted(titles)
    title_list = [titles[a] for a in classes]
    headings = sorted({c.heading.split(" > ")[-1] for c in chunks if c.kind == "passage" and " > " in c.heading})
    ood = out_of_domain_questions() + brand_questions(titles, chunks)
    extra = embed(title_list + headings + ood) if (title_list or headings or ood) else np.zeros((0, vectors.shape[1]))
    t_vec, h_vec, o_vec = (extra[:len(title_list)], extra[len(title_list):len(title_list) + len(headings)],
                           extra[len(title_list) + len(headings):])

    # -- the router ---------------------------------------------------------------------------
    use_router = cfg.router == "on" or (cfg.router == "auto"
                                        and eligible([counts.get(a, 0) for a in classes], cfg.router_min_entries))
    router: Router | None = None
    crossed: np.ndarray | None = None
    examples: list[int] = []
    if use_router and 2 <= len(classes) <= MAX_CLASSES:
        # examples: every phrasing of an FAQ entry, every passage of an article, and each entry's title
        examples = [i for i, c in enumerate(chunks) if c.kind == "question" or counts.get(c.article_id, 0) == 0]
        X = np.vstack([vectors[examples], t_vec])
        labels = [chunks[i].article_id for i in examples] + classes
        router = train(X, labels, classes, fingerprint=fingerprint, pause=pause)
        crossed = cross_fitted(X, labels, classes, pause=pause)
    q_row = {chunks[i].chunk_id: r for r, i in enumerate(examples)} if router is not None else {}

    # -- the calibration queries --------------------------------------------------------------
    qs: list[_Query] = []
    pos = questions if len(questions) <= MAX_POSITIVES else list(rng.choice(questions, MAX_POSITIVES, replace=False))
    for i in pos:  # leave-one-phrasing-out
        c = chunks[i]
        qs.append(_Query(c.text, vectors[i], c.article_id, frozenset({c.chunk_id}), None, q_row.get(c.chunk_id)))
    title_rows: Sequence[int] = range(len(classes))
    if len(classes) > MAX_TITLES:
        title_rows = sorted(int(j) for j in rng.choice(len(classes), MAX_TITLES, replace=False))
    for j in title_rows:  # titles as queries (the title is in its chunks' text: an easy positive)
        aid = classes[j]
        qs.append(_Query(titles[aid], t_vec[j], aid, frozenset(), None, len(q_row) + j if router else None))
    by_heading: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        if c.kind == "passage" and " > " in c.heading:
            by_heading[c.heading.split(" > ")[-1]].append(c)
    for j, h in enumerate(headings):  # a heading answers to its article; that section's chunks held out
        owners = {c.article_id for c in by_heading[h]}
        if len(owners) == 1:
            qs.append(_Query(h, h_vec[j], next(iter(owners)), frozenset(c.chunk_id for c in by_heading[h])))
    passages = [i for i, c in enumerate(chunks) if c.kind == "passage" and counts.get(c.article_id, 0) == 0]
    if len(passages) > MAX_PASSAGES:
        passages = list(rng.choice(passages, MAX_PASSAGES, replace=False))
    leads = [_lead(chunks[i].text) for i in passages]
    l_vec = embed(leads) if leads else np.zeros((0, vectors.shape[1]))
    for j, i in enumerate(passages):  # a passage's first sentence answers to its article; that chunk held out
        c = chunks[i]
        if len(leads[j].split()) >= 4:
            qs.append(_Query(leads[j], l_vec[j], c.article_id, frozenset({c.chunk_id})))
    n_near = min(MAX_NEAR_NEGATIVES, len(questions))
    near = list(rng.choice(questions, n_near, replace=False)) if n_near else []
    for i in near:  # near-domain: a phrasing whose entry is gone
        c = chunks[i]
        qs.append(_Query(c.text, vectors[i], None, frozenset(), c.article_id, q_row.get(c.chunk_id)))
    for j, aid in enumerate(classes):
        if MAX_NEAR_NEGATIVES and len(classes) > 1 and counts.get(aid, 0) == 0:  # an article's title, its article gone
            qs.append(_Query(titles[aid], t_vec[j], None, frozenset(), aid, len(q_row) + j if router else None))
    for j, text in enumerate(ood):
        qs.append(_Query(text, o_vec[j], None))

    X_cal, y_cal = _features(qs, lookup, lexical, cfg, router, crossed, pause)
    calibration = fit(X_cal, y_cal, threshold=cfg.threshold, fingerprint=fingerprint)
    return Fitted(router, calibration, time.perf_counter() - t0, len(qs))


def _features(qs: list[_Query], lookup: _MemoryLookup, lexical: LexicalIndex | None, cfg: RetrievalConfig,
              router: Router | None, crossed: np.ndarray | None,
              pause: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    fetch = max(4 * cfg.top_k, 20)
    w = cfg.lexical_weight if lexical is not None else 0.0
    M = lookup.vectors
    article_of = np.array([lookup.by_id[cid].article_id for cid in lookup.row], dtype=object)
    ids = np.fromiter(lookup.row, dtype=np.int64, count=len(lookup.row))
    rows: list[np.ndarray] = []
    labels: list[float] = []
    for start in range(0, len(qs), 256):
        batch = qs[start:start + 256]
        S = np.vstack([q.vec for q in batch]).astype(np.float32) @ M.T
        for q, s in zip(batch, S):
            if pause is not None:
                pause()
            mask = np.zeros(len(s), dtype=bool)
            if q.exclude_chunks:
                mask |= np.isin(ids, np.fromiter(q.exclude_chunks, dtype=np.int64))
            if q.exclude_article is not None:
                mask |= article_of == q.exclude_article
            s = np.where(mask, -np.inf, s)
            n = min(fetch, int((~mask).sum()))
            if n == 0:
                continue
            top = np.argpartition(-s, n - 1)[:n]
            dense = {int(ids[t]): float(s[t]) for t in top}
            lex: dict[int, float] = {}
            if lexical is not None and w > 0:
                extra = len(q.exclude_chunks) + (len(lookup.by_article.get(q.exclude_article, []))
                                                 if q.exclude_article else 0)
                ls, li = lexical.search(q.text, fetch + extra)
                lex = {int(i): float(v) for v, i in zip(ls, li) if int(i) not in q.exclude_chunks}
            dense = {cid: v for cid, v in dense.items() if cid not in q.exclude_chunks}
            lex = {cid: v for cid, v in lex.items() if cid not in q.exclude_chunks}
            rp = None
            if router is not None:
                own = crossed is not None and q.router_row is not None
                rp = crossed[q.router_row] if own else router.proba(q.vec)[0]  # type: ignore[index]
            exclude = frozenset({q.exclude_article}) if q.exclude_article else frozenset()
            ranking: Ranking = fuse(dense, lex, w, lookup, q.vec, router, rp, cfg.router_weight, exclude)
            if not ranking.ranked:
                continue
            hit = q.article is not None and ranking.ranked[0].article_id == q.article
            if q.article is not None and not hit and not MISSES_AS_NEGATIVES:
                continue
            rows.append(ranking.features(q.text))
            labels.append(float(hit))
    if not rows:
        return np.zeros((0, 8)), np.zeros(0)
    return np.vstack(rows), np.array(labels)
