"""BANKING77 as a 77-entry FAQ: retrieval quality and latency of the knowledge base
(dense only, and hybrid dense + BM25 at two lexical weights), beside classic intent
classifiers trained on the same phrasings.

The KB has one FAQ entry per category; its ``questions`` are that category's training
phrasings (train.csv) and its answer is the category name humanised. Every test.csv row is a
query whose expected answer is its category's entry; queries go through
``knowledge.evaluate.evaluate_retrieval`` (the code behind ``botkit eval retrieval``).

Baselines, in the same run and on the same split:
- TF-IDF (word 1-2 grams) + logistic regression;
- the KB's own embedder (MiniLM) + logistic regression;
- 1-nearest-neighbour over the training phrasings with the raw embeddings.
Logistic regression uses C=100 (TF-IDF) and C=10 (embeddings): the values a 3-fold
cross-validation on train only picked from {1, 10, 100} (``--cv`` redoes that search; it
takes several minutes on 2 cores).

    python benchmarks/banking77.py [--data ../shared/datasets] [--weights 0.3,0.1] [--limit N]
                                   [--cache benchmarks/out/cache] [--cv]
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import log

REFERENCE = "earlier measurement on this KB setup: 1-NN over raw embeddings 0.920, LR on embeddings 0.930 (acc@1)"


# -- data -------------------------------------------------------------------------------------
def article_id(category: str) -> str:
    """Category name as a valid article id ('reverted_card_payment?' has a '?')."""
    return re.sub(r"[^A-Za-z0-9._-]", "", category)


def humanise(category: str) -> str:
    text = category.replace("_", " ").replace("?", "").strip()
    return text[:1].upper() + text[1:]


def load(data_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]], list[str]]:
    """(train [(text, category)], test [(text, category, csv line)], categories)."""
    categories = json.loads((data_dir / "categories.json").read_text(encoding="utf-8"))
    with open(data_dir / "train.csv", newline="", encoding="utf-8") as fh:
        train = [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    with open(data_dir / "test.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        test = [(r["text"], r["category"], reader.line_num) for r in reader]
    return train, test, categories


def drafts(train: list[tuple[str, str]], categories: list[str]):
    from knowledge.types import ArticleDraft

    by_cat: dict[str, list[str]] = {c: [] for c in categories}
    for text, cat in train:
        by_cat[cat].append(text)
    return [ArticleDraft(id=article_id(c), title=humanise(c), body=humanise(c) + ".", tags=("banking77",),
                         questions=tuple(by_cat[c])) for c in categories]


def queries(test: list[tuple[str, str, int]]):
    from knowledge.evaluate import EvalQuery

    return [EvalQuery(text, article_id(cat), line) for text, cat, line in test]


def build_kb(project, article_drafts):
    """Open, start and fill a KB; returns (kb, seconds spent filling it, texts embedded now).
    With a cached state dir the content is usually there already and nothing is embedded."""
    from knowledge.base import KnowledgeBase

    kb = KnowledgeBase.open(project)
    kb.start()
    t0 = time.perf_counter()
    kb.upsert(article_drafts, author="benchmark")
    return kb, time.perf_counter() - t0, kb.embedded_total


def open_kb(project):
    from knowledge.base import KnowledgeBase

    kb = KnowledgeBase.open(project)
    report = kb.start()
    return kb, report


def no_router(cfg: dict) -> dict:
    """The rows before the router: router off (auto would turn it on for this FAQ-heavy KB)."""
    cfg["retrieval"]["router"] = "off"
    return cfg


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--weights", default="0.3,0.1", help="lexical weights for the hybrid runs (comma-separated)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N test queries (0 = all 3,080)")
    p.add_argument("--latency-queries", type=int, default=200, help="single queries timed for the baselines")
    p.add_argument("--cv", action="store_true", help="choose LR's C by 3-fold CV on train (slow)")
    args = p.parse_args()
    data_dir = common.data_path(args, "banking77")
    weights = [float(w) for w in args.weights.split(",") if w.strip()]

    import numpy as np

    from knowledge.evaluate import evaluate_retrieval
    from knowledge.types import ChunkDraft

    common.print_header("BANKING77 as a 77-entry FAQ knowledge base", [
        f"data: {data_dir} (train.csv phrasings -> FAQ questions; test.csv -> queries), k={args.k}",
        REFERENCE,
    ])
    train, test, categories = load(data_dir)
    if args.limit:
        test = test[: args.limit]
    arts, qs = drafts(train, categories), queries(test)
    log(f"{len(arts)} FAQ entries, {len(train)} phrasings, {len(qs)} test queries")

    state = common.state_dir(args, "banking77-torch-fp32")  # one database + index for every configuration
    rows = []
    notes: list[str] = []

    # dense only: this run builds the KB (embeds every phrasing once)
    project = common.make_project(no_router(common.knowledge_config(hybrid=False)), state_dir=state)
    log("building the KB (embedding all phrasings)...")
    kb, build_s, n_embedded = build_kb(project, arts)
    n_chunks = kb.index.ntotal
    log(f"built: {n_chunks} chunks in {build_s:.1f}s ({n_embedded} embedded now), index {kb.index.kind}")
    log("evaluating dense...")
    r = evaluate_retrieval(kb, qs, args.k)
    rows.append(("KB dense (hybrid: false)", r["accuracy_at_1"], r["recall_at_k"], r["mrr"],
                 r["latency_ms_p50"], r["latency_ms_p95"]))
    log(f"dense acc@1 {r['accuracy_at_1']:.4f}")
    embedder, index_kind = kb.embedder, kb.index.kind
    train_hashes = [ChunkDraft(0, "question", "", t, t).hash for t, _ in train]
    cached = kb.store.cached_embeddings(embedder.name, train_hashes)
    kb.close()

    for w in weights:
        project = common.make_project(no_router(common.knowledge_config(hybrid=True, lexical_weight=w)),
                                      state_dir=state)
        kb, report = open_kb(project)
        log(f"hybrid w={w}: index {report.status} in {report.seconds:.1f}s; evaluating...")
        r = evaluate_retrieval(kb, qs, args.k)
        rows.append((f"KB hybrid (lexical_weight {w})", r["accuracy_at_1"], r["recall_at_k"], r["mrr"],
                     r["latency_ms_p50"], r["latency_ms_p95"]))
        log(f"hybrid w={w} acc@1 {r['accuracy_at_1']:.4f}")
        kb.close()
        del kb

    # -- the router: router_weight chosen on a validation split of train (90/10, seeded) ----------
    from benchmarks.router_choice import choose_router_weight

    E_all = np.stack([cached[h] for h in train_hashes if h in cached]).astype(np.float32)
    if len(E_all) == len(train):
        rng = np.random.default_rng(0)
        is_val = rng.random(len(train)) < 0.1
        cats = [c for _, c in train]
        w_router, accs = choose_router_weight(E_all[~is_val], [c for c, v in zip(cats, is_val) if not v],
                                              E_all[is_val], [c for c, v in zip(cats, is_val) if v])
        log(f"router_weight on the train/val split: {accs} -> {w_router}")
        rcfg = common.knowledge_config(hybrid=True, lexical_weight=weights[0])
        rcfg["retrieval"].update({"router": "on", "router_weight": w_router})
        project = common.make_project(rcfg, state_dir=state)
        kb, report = open_kb(project)
        log(f"router (w={w_router}): index {report.status}, router and calibration in {report.seconds:.1f}s; "
            "evaluating...")
        r = evaluate_retrieval(kb, qs, args.k)
        rows.append((f"KB + router (lexical_weight {weights[0]}, router_weight {w_router})", r["accuracy_at_1"],
                     r["recall_at_k"], r["mrr"], r["latency_ms_p50"], r["latency_ms_p95"]))
        rows.append((f"KB + router + calibrated decision (min_confidence {kb.config.retrieval.min_confidence}; "
                     "acc@1 = right AND answered)", r["end_to_end_accuracy"], r["recall_at_k"],
                     r["mrr"], r["latency_ms_p50"], r["latency_ms_p95"]))
        notes.append(f"router_weight {w_router} chosen on a 10% validation split of train.csv (val acc@1 by w, "
                     f"proxy without BM25: {', '.join(f'{w}: {a:.4f}' for w, a in accs.items())}); the calibration "
                     "is the KB's own (its phrasings, off-topic file), nothing from test.csv")
        kb.close()
        del kb

    # -- baselines ------------------------------------------------------------------------
    from sklearn.feature_extraction.text import TfidfVectorizer

    cat_index = {c: i for i, c in enumerate(categories)}
    y_train = np.array([cat_index[c] for _, c in train])
    y_test = [cat_index[c] for _, c, _ in test]
    test_texts = [t for t, _, _ in test]
    n_lat = min(args.latency_queries, len(test_texts))
    lat_texts = test_texts[:n_lat]

    log("baseline: TF-IDF + LR...")
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    Xtr = vec.fit_transform([t for t, _ in train])
    lr_tfidf, c_tfidf, cv_tfidf = common.fit_logreg(Xtr, y_train, (1.0, 10.0, 100.0) if args.cv else (100.0,))
    proba = lr_tfidf.predict_proba(vec.transform(test_texts))
    m = common.ranking_metrics(common.ranks_from_scores(proba, y_test, args.k))
    lat = common.time_single(lambda q: lr_tfidf.predict_proba(vec.transform([q])), lat_texts)
    rows.append(("TF-IDF 1-2gram + LR", m["acc1"], m["recall"], m["mrr"],
                 common.percentile(lat, 0.5), common.percentile(lat, 0.95)))
    notes.append(common.describe_c("TF-IDF + LR", c_tfidf, cv_tfidf))

    log(f"baseline: embedding the {len(test_texts)} test queries with {embedder.name}...")
    missing = [i for i, h in enumerate(train_hashes) if h not in cached]
    if missing:  # should not happen: every phrasing went through the KB's cache
        log(f"  {len(missing)} training phrasings not in the KB cache: embedding them")
        extra = embedder.embed([train[i][0] for i in missing])
        cached.update({train_hashes[i]: v for i, v in zip(missing, extra)})
    E_train = np.stack([cached[h] for h in train_hashes]).astype(np.float32)
    t0 = time.perf_counter()
    E_test = embedder.embed(test_texts)
    log(f"  embedded in {time.perf_counter() - t0:.1f}s")

    # 1-NN over phrasings: a category's score is its best phrasing's cosine
    order = np.argsort(y_train, kind="stable")
    starts = np.searchsorted(y_train[order], np.arange(len(categories)))
    E_sorted = E_train[order]

    def cat_scores(E):
        return np.maximum.reduceat(E @ E_sorted.T, starts, axis=1)

    m = common.ranking_metrics(common.ranks_from_scores(cat_scores(E_test), y_test, args.k))
    lat = common.time_single(lambda q: cat_scores(embedder.embed([q])), lat_texts)
    rows.append(("1-NN over phrasings (MiniLM)", m["acc1"], m["recall"], m["mrr"],
                 common.percentile(lat, 0.5), common.percentile(lat, 0.95)))

    log("baseline: MiniLM embeddings + LR...")
    lr_emb, c_emb, cv_emb = common.fit_logreg(E_train, y_train, (1.0, 10.0, 100.0) if args.cv else (10.0,))
    m = common.ranking_metrics(common.ranks_from_scores(lr_emb.predict_proba(E_test), y_test, args.k))
    lat = common.time_single(lambda q: lr_emb.predict_proba(embedder.embed([q])), lat_texts)
    rows.append(("MiniLM embeddings + LR", m["acc1"], m["recall"], m["mrr"],
                 common.percentile(lat, 0.5), common.percentile(lat, 0.95)))
    notes.append(common.describe_c("MiniLM + LR", c_emb, cv_emb))

    print(f"KB: {len(arts)} FAQ entries, {n_chunks} chunks (phrasings + one answer passage each), "
          f"index {index_kind}, embedder {embedder.name}; filled in {build_s:.1f}s with {n_embedded} texts "
          f"embedded in this run (the rest from the --cache embedding cache); {len(qs)} test queries")
    common.print_table(
        ["method", "acc@1", f"recall@{args.k}", "MRR", "p50 ms", "p95 ms"],
        [(n, a, rc, mrr, float(p50), float(p95)) for n, a, rc, mrr, p50, p95 in rows],
        title="BANKING77 test",
    )
    print("latency: KB rows = SearchResult.latency_ms over every test query (query embedding + index + "
          f"BM25 + SQLite); baseline rows = one query at a time over the first {n_lat} test queries "
          "(embedding included where the method embeds).")
    for note in notes:
        print(note)
    print(f"reference: {REFERENCE}")
    common.print_footer()
    log("done")


if __name__ == "__main__":
    main()
