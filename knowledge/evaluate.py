"""Retrieval evaluation: how often the knowledge base finds the right article, and how well
it says "no good answer" when there is none."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botkit.errors import ImportFailed, InputProblem
from knowledge.base import KnowledgeBase


@dataclass(frozen=True)
class EvalQuery:
    query: str
    expected: str | None
    line: int


def load_queries(path: Path, known_ids: set[str] | None = None) -> list[EvalQuery]:
    """Read ``{"query": ..., "expected": id | null}`` lines; every bad line is reported."""
    problems: list[InputProblem] = []
    out: list[EvalQuery] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed([InputProblem(str(path), None, f"cannot read: {exc}")]) from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(InputProblem(str(path), lineno, f"malformed JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), str) or not obj["query"].strip():
            problems.append(InputProblem(str(path), lineno,
                                         'each line needs {"query": "<text>", "expected": "<id>" | null}'))
            continue
        expected = obj.get("expected")
        if expected is not None and not isinstance(expected, str):
            problems.append(InputProblem(str(path), lineno,
                                         f"expected must be an article id or null, got {expected!r}"))
            continue
        if expected is not None and known_ids is not None and expected not in known_ids:
            problems.append(InputProblem(str(path), lineno, f"expected id {expected!r} is not in the knowledge base"))
            continue
        out.append(EvalQuery(obj["query"], expected, lineno))
    if not out and not problems:
        problems.append(InputProblem(str(path), None, "no queries in the file"))
    if problems:
        raise ImportFailed(problems)
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def evaluate_retrieval(kb: KnowledgeBase, queries: list[EvalQuery], k: int = 5,
                       threshold: float | None = None) -> dict[str, Any]:
    # threshold=None: the KB's own decision (SearchResult.answered: the calibrated confidence);
    # a number: the old rule, best-hit score >= threshold (benchmarks sweep it)
    decide_by_score = threshold is not None
    threshold = kb.config.retrieval.threshold if threshold is None else threshold
    kb.search(queries[0].query, k)  # warm-up: model and caches, not measured
    ranks: list[int | None] = []
    no_answer_pred: list[bool] = []
    correct_end_to_end = 0
    latencies: list[float] = []
    misses: list[dict[str, Any]] = []
    for q in queries:
        result = kb.search(q.query, k)
        latencies.append(result.latency_ms)
        ids = [h.article_id for h in result.hits]
        top = result.hits[0].score if result.hits else float("-inf")
        predicted_none = top < threshold if decide_by_score else not result.answered
        no_answer_pred.append(predicted_none)
        if q.expected is None:
            ranks.append(None)
            correct_end_to_end += predicted_none
            if not predicted_none:
                misses.append({"line": q.line, "query": q.query, "expected": None, "got": ids[0], "score": top})
        else:
            rank = ids.index(q.expected) + 1 if q.expected in ids else 0
            ranks.append(rank)
            correct_end_to_end += rank == 1 and not predicted_none
            if rank != 1 or predicted_none:
                misses.append({"line": q.line, "query": q.query, "expected": q.expected,
                               "got": ids[0] if ids else None, "score": top})
    answerable = [r for r in ranks if r is not None]
    expected_none = [p for p, q in zip(no_answer_pred, queries) if q.expected is None]
    declined_right = [q.expected is None for p, q in zip(no_answer_pred, queries) if p]  # per declined query
    n_ans = len(answerable)
    return {
        "n": len(queries),
        "n_answerable": n_ans,
        "n_no_answer": len(expected_none),
        "k": k,
        "threshold": threshold,
        "decision": "score >= threshold" if decide_by_score else "confidence >= min_confidence",
        "kb_version": kb.indexed_version,
        "accuracy_at_1": sum(r == 1 for r in answerable) / n_ans if n_ans else None,
        "recall_at_k": sum(r > 0 for r in answerable) / n_ans if n_ans else None,
        "mrr": sum(1 / r for r in answerable if r) / n_ans if n_ans else None,
        "no_answer_precision": sum(declined_right) / len(declined_right) if declined_right else None,
        "no_answer_recall": sum(expected_none) / len(expected_none) if expected_none else None,
        "end_to_end_accuracy": correct_end_to_end / len(queries),
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_p95": round(_percentile(latencies, 0.95), 3),
        "misses": misses,
    }
