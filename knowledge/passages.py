"""The right passage: within the article a search picked, the section that answers the query.

Search ranks *articles* by their best chunk's hybrid score (cosine + BM25 over the whole KB).
That is the right evidence for "which article", but a poor judge of "which section": inside
one article every chunk shares the title and most of the vocabulary, so the cosine of a short
section ("Express shipping: CA$29.95 in Canada ...") can beat the section that holds the
answer (the Standard shipping table's "Canada | CA$12.95" row) by a few hundredths. So the
article's passages are re-ranked here with features the embedding blurs:

* **heading**: query terms in the chunk's own section path (the title is left out: every
  chunk of the article shares it, so it cannot tell sections apart); an acronym written in
  capitals ("US") matches a heading spelt out ("United States");
* **key**: query terms that label a row of the chunk, i.e. a table row's first cell
  ("| Canada | CA$12.95 |") or a list/definition label ("- **Canada**: ..."); a question that
  names a row is answered by that row;
* **exact**: the query's codes (TP-123456, PAY-409), prices and numbers found verbatim in the
  chunk;
* **entity**: query words that are names in the chunk (capitalised mid-sentence or in a table
  cell: countries, products, plans), matched case-insensitively since customers type
  "canada";
* **overlap**: how much of the query the chunk's text covers.

The features are kept apart so each one can decide a case alone: overlap counts the text and
not the heading, and words are matched without the numbers (those are ``exact``'s).

Term weights are idf *within the article* (a term every section mentions counts for almost
nothing), and a query term no chunk of the article contains is left out of the normaliser.
Each feature is in [0, 1]; the passage score is the cosine plus the weighted features. The
weights (:class:`PassageWeights`) were set by hand on the demo's shipping-costs article and
the synthetic cases in tests/test_passages.py, then the heading weight raised to 0.2 after the
dev split of benchmarks/data/passages.jsonl, and the overlap weight to 0.2, the smallest of
0.1/0.2/0.3 that keeps the demo's conversation test "I forgot my password" on the Resetting
section (benchmarks/passages.py; docs/confidence.md says what each split chose).

A short intro above the sections that states no fact (a lead-in such as "Here's how
cancellation works at each stage") never stands for the article when a section can: it answers
nothing alone. An intro that does state one (a number, price or code: "you can return it within
30 days of delivery") competes like any section.

Only the shown passage changes (``Hit.chunk_id``, ``heading``, ``passage``); the hit's scores
stay the article's retrieval evidence, so article ranking, the threshold and calibration are
untouched. FAQ entries keep their answer as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from knowledge.store import KnowledgeStoreBase
from knowledge.types import Chunk, Hit

MIN_PASSAGE_CHARS = 200  # a shorter best passage runs on into its own section's next chunk(s)
MAX_PASSAGE_CHARS = 1200  # what botkit.text.trim_passage keeps; a neighbour is added only within it
NEIGHBOUR_MARGIN = 0.05  # a same-section neighbour scoring this close to the best joins the passage
MAX_EXTRA_CHUNKS = 2

_WORD = re.compile(r"(?u)\b\w\w+\b")
_CODE = re.compile(r"\b[A-Za-z]{1,6}-\d{2,}\b")  # TP-123456, PAY-409
_PRICE = re.compile(r"[$€£]\s?(\d+(?:[.,]\d+)*)|(\d+(?:[.,]\d+)*)\s?(?:[€£]|(?:eur|usd|cad|gbp)\b)", re.I)
_NUMBER = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)*)(?:[ \t]+([A-Za-z]+))?")  # "30 days", "12.95"
_NAME = re.compile(r"(?<=[^\s.!?:|]\s)[A-Z][\w'-]*|(?<=\|\s)[A-Z][\w'-]*")  # capitalised, not sentence-initial
_ROW_KEY = re.compile(r"^\s*\|\s*([^|]+?)\s*\|")  # a table row's first cell
_LABEL = re.compile(r"^\s*(?:[-*+]|\d+[.)])?\s*(?:\*\*|__)(.+?)(?:\*\*|__)|^\s*(?:[-*+]|\d+[.)])\s+([^:\n]{1,60}):")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_STOP = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with i me my we our you your can do does how what when where which who why".split()
)


@dataclass(frozen=True)
class PassageWeights:
    """How much each feature (each in [0, 1]) adds to a chunk's cosine. Zero turns a feature off."""
    heading: float = 0.20
    key: float = 0.20
    exact: float = 0.30
    entity: float = 0.05
    overlap: float = 0.20


DEFAULT_WEIGHTS = PassageWeights()


@dataclass(frozen=True)
class Candidate:
    """One chunk of the article as the reranker sees it."""
    ord: int
    heading: str  # "Title > Section > Subsection"
    text: str
    dense: float  # cosine with the query


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float
    features: dict[str, float]


@lru_cache(maxsize=1)
def _stemmer() -> Callable[[str], str]:
    try:  # the same optional stemmer BM25 uses (knowledge/lexical.py); unstemmed without it
        import Stemmer

        return Stemmer.Stemmer("english").stemWord
    except ImportError:  # pragma: no cover
        return lambda w: w


def terms(text: str) -> set[str]:
    """Lower-cased, stemmed content words; stop words and bare numbers dropped (numbers are
    matched whole, with their decimals, by :func:`exact_tokens`)."""
    stem = _stemmer()
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and not w.isdigit()}


def exact_tokens(text: str) -> set[str]:
    """Codes, prices and numbers, normalised: ``pay-409``; a price as its amount (``12.95`` for
    CA$12.95, whatever the currency mark); a decimal as itself; a whole number with the word
    after it (``30 day``), so "10 min ago" does not match "5-10 business days"."""
    codes = {c.lower() for c in _CODE.findall(text)}
    text = _CODE.sub(" ", text)
    prices = {(a or b).replace(",", "") for a, b in _PRICE.findall(text)}
    text = _PRICE.sub(" ", text)
    numbers = set()
    stem = _stemmer()
    for number, unit in _NUMBER.findall(text):
        number = number.replace(",", "")
        numbers.add(number if "." in number or not unit else f"{number} {stem(unit.lower())}")
    return codes | prices | numbers


def names(text: str) -> set[str]:
    """Stemmed terms of capitalised words that are not sentence-initial (or are table cells)."""
    return terms(" ".join(_NAME.findall(text)))


def row_keys(text: str) -> set[str]:
    """Terms of the labels of a chunk's rows: table rows' first cells (not the header row) and
    bold or colon-ended list labels."""
    out: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _TABLE_RULE.match(line):
            continue
        m = _ROW_KEY.match(line)
        if m:
            is_header = i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1]))
            if not is_header:
                out |= terms(m.group(1))
            continue
        m = _LABEL.match(line)
        if m:
            out |= terms(m.group(1) or m.group(2) or "")
    return out


def section_path(heading: str) -> str:
    """The heading path without the article title (shared by every chunk of the article)."""
    return " ".join(heading.split(" > ")[1:])


_CAPITALISED_RUN = re.compile(r"\b(?:[A-Z][a-z]+\s+)+[A-Z][a-z]+\b")


def acronyms(text: str) -> set[str]:
    """Initials of runs of capitalised words: "United States" -> "us", "European Union" -> "eu"."""
    return {"".join(w[0] for w in run.split()).lower() for run in _CAPITALISED_RUN.findall(text)}


def is_lead_in(candidate: Candidate, candidates: Sequence[Candidate]) -> bool:
    """A short intro above the article's sections that states no fact ("Here's how it works at
    each stage."): it answers nothing alone, so it never stands for the article when a section
    can. One with a number, price or code ("return it within 30 days") is a summary that can."""
    return (not section_path(candidate.heading) and len(candidate.text) < MIN_PASSAGE_CHARS
            and not exact_tokens(candidate.text)
            and any(section_path(c.heading) for c in candidates))


def rerank(query: str, candidates: Sequence[Candidate], weights: PassageWeights = DEFAULT_WEIGHTS) -> list[Scored]:
    """The article's chunks, best first, each with its score and feature values."""
    if not candidates:
        return []
    q_terms = terms(query)
    q_exact = exact_tokens(query)
    # an acronym the customer wrote in capitals ("US", "EU") names a heading spelt out ("United States")
    q_acronyms = {w.lower() for w in re.findall(r"\b[A-Z]{2,5}\b", query)}
    docs = [(terms(c.text), terms(section_path(c.heading)) | (acronyms(section_path(c.heading)) & q_acronyms))
            for c in candidates]
    n = len(candidates)
    df = {t: sum(1 for body, head in docs if t in body or t in head) for t in q_terms}
    idf = {t: math.log(1 + n / df[t]) for t in q_terms if df[t]}
    total = sum(idf.values())

    def covered(found: set[str]) -> float:
        return sum(w for t, w in idf.items() if t in found) / total if total else 0.0

    scored = []
    for c, (body, head) in zip(candidates, docs):
        found_exact = exact_tokens(c.text) | exact_tokens(section_path(c.heading))
        features = {
            "heading": covered(head),
            "key": covered(row_keys(c.text)),
            "exact": len(q_exact & found_exact) / len(q_exact) if q_exact else 0.0,
            "entity": covered(names(c.text)),
            "overlap": covered(body),
        }
        score = c.dense + sum(getattr(weights, f) * v for f, v in features.items())
        scored.append(Scored(c, score, features))
    return sorted(scored, key=lambda s: (-s.score, s.candidate.ord))


def _in_section(chunk: Candidate, section: str) -> bool:
    return chunk.heading == section or chunk.heading.startswith(section + " > ")


def assemble(best: Scored, ranked: Sequence[Scored]) -> tuple[list[Candidate], str]:
    """The best chunk, plus at most two chunks of its own section: the ones that follow while
    it is too short to stand alone, and a split-off neighbour of the same heading that scores
    nearly as well. Never another section (an intro, which has no section, runs on into the
    sections below it, as before)."""
    by_ord = sorted((s.candidate for s in ranked), key=lambda c: c.ord)
    score_of = {s.candidate.ord: s.score for s in ranked}
    b = best.candidate
    pos = next(i for i, c in enumerate(by_ord) if c.ord == b.ord)
    chosen = [b]

    def length() -> int:
        return sum(len(c.text) for c in chosen)

    nxt = pos + 1
    while nxt < len(by_ord) and len(chosen) <= MAX_EXTRA_CHUNKS and _in_section(by_ord[nxt], b.heading):
        c = by_ord[nxt]
        short = length() < MIN_PASSAGE_CHARS  # an intro line or a one-line section: read on
        close = (c.heading == b.heading and score_of[c.ord] >= best.score - NEIGHBOUR_MARGIN
                 and length() + len(c.text) <= MAX_PASSAGE_CHARS)  # the rest of a section split by size
        if not (short or close):
            break
        chosen.append(c)
        nxt += 1
    prev = pos - 1
    if (prev >= 0 and len(chosen) <= MAX_EXTRA_CHUNKS and by_ord[prev].heading == b.heading
            and score_of[by_ord[prev].ord] >= best.score - NEIGHBOUR_MARGIN
            and length() + len(by_ord[prev].text) <= MAX_PASSAGE_CHARS):
        chosen.insert(0, by_ord[prev])
    parts = []
    for i, c in enumerate(chosen):
        label = i > 0 and c.heading != chosen[i - 1].heading
        parts.append(f"{c.heading.split(' > ')[-1]}\n{c.text}" if label else c.text)
    return chosen, "\n\n".join(parts)


def best_passage(query: str, candidates: Sequence[Candidate],
                 weights: PassageWeights = DEFAULT_WEIGHTS) -> tuple[Candidate, str] | None:
    """The chunk that answers best and the passage to show for it (None without candidates)."""
    ranked = rerank(query, candidates, weights)
    if not ranked:
        return None
    best = next((s for s in ranked if not is_lead_in(s.candidate, candidates)), ranked[0])
    _, text = assemble(best, ranked)
    return best.candidate, text


def refine_passage(query: str, qvec: np.ndarray, hit: Hit, store: KnowledgeStoreBase, model: str,
                   weights: PassageWeights = DEFAULT_WEIGHTS) -> Hit:
    """``hit`` with the passage of its article that answers ``query`` best (see the module doc).

    ``qvec`` is the query's embedding and ``model`` the embedder's name (the article's chunk
    vectors come from the embedding cache). A chunk with no cached vector yet (a change still
    being embedded) is scored with cosine 0; an FAQ entry, or an article whose chunks are gone,
    comes back unchanged.
    """
    if hit.kind != "article":
        return hit
    chunks: list[Chunk] = [c for c in store.article_chunks(hit.article_id) if c.kind == "passage"]
    if not chunks:
        return hit
    vectors = store.cached_embeddings(model, [c.text_hash for c in chunks])
    q = np.asarray(qvec, dtype=np.float32).ravel()
    candidates = [Candidate(c.ord, c.heading, c.text,
                            float(vectors[c.text_hash] @ q) if c.text_hash in vectors
                            and vectors[c.text_hash].shape == q.shape else 0.0)
                  for c in chunks]
    found = best_passage(query, candidates, weights)
    if found is None:
        return hit
    best, text = found
    chunk = next(c for c in chunks if c.ord == best.ord)
    return replace(hit, chunk_id=chunk.chunk_id, heading=chunk.heading, passage=text)
