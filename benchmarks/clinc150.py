"""CLINC150 as a 150-entry FAQ with out-of-scope queries: how well the knowledge base answers
in-scope questions and says "no good answer" to the rest, with the no-answer threshold
chosen on validation data only.

The KB has one FAQ entry per intent whose ``questions`` are that intent's ``train``
phrasings (100 each). For each configuration (dense only; hybrid dense + BM25):

1. ``val`` + ``oos_val`` (3,000 + 100 queries) go through ``evaluate_retrieval``; from the
   best hit's score of every query the threshold is chosen that maximises the mean of
   in-scope accuracy (top hit correct AND score >= threshold) and out-of-scope recall
   (score < threshold) -- a balanced criterion, because oos is only 3% of val. The
   threshold that maximises plain accuracy over all val queries is reported too.
2. ``test`` + ``oos_test`` (4,500 + 1,000) go through ``evaluate_retrieval`` with the chosen
   threshold; the same search results also give the figures at the project default (0.45)
   and at the accuracy-criterion threshold.

Baselines in the same run: MiniLM embeddings + logistic regression and TF-IDF + logistic
regression (trained on ``train``; C=10 for embeddings, C=100 for TF-IDF as chosen by CV on
BANKING77's train set, or by 3-fold CV on CLINC150 train with ``--cv``), answering "out of scope" when
the top class probability is under a threshold chosen on val with the same criterion.
``oos_train`` is not used by anything.

    python benchmarks/clinc150.py [--data ../shared/datasets] [--weight 0.3] [--limit N]
                                  [--cache benchmarks/out/cache] [--cv] [--no-baselines]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.banking77 import build_kb, humanise, no_router, open_kb
from benchmarks.common import log

DEFAULT_THRESHOLD = 0.45  # botkit's default knowledge.retrieval.threshold
ORIGIN = "the value 3-fold CV chose on BANKING77 train, not searched on CLINC150; --cv searches it"


def load(data_dir: Path) -> dict[str, list[tuple[str, str]]]:
    data = json.loads((data_dir / "data_full.json").read_text(encoding="utf-8"))
    return {k: [(t, i) for t, i in v] for k, v in data.items()}


def drafts(train: list[tuple[str, str]]):
    from knowledge.types import ArticleDraft

    by_intent: dict[str, list[str]] = {}
    for text, intent in train:
        by_intent.setdefault(intent, []).append(text)
    return [ArticleDraft(id=i, title=humanise(i), body=humanise(i) + ".", tags=("clinc150",), questions=tuple(q))
            for i, q in sorted(by_intent.items())]


def queries(rows: list[tuple[str, str]]):
    from knowledge.evaluate import EvalQuery

    return [EvalQuery(t, None if i == "oos" else i, n) for n, (t, i) in enumerate(rows, 1)]


# -- thresholds -----------------------------------------------------------------------------
def outcomes(top_ids: list[str | None], top_scores: np.ndarray, expected: list[str | None]):
    """(is_oos, top_correct) boolean arrays."""
    is_oos = np.array([e is None for e in expected])
    correct = np.array([t is not None and t == e for t, e in zip(top_ids, expected)])
    return is_oos, correct


def metrics_at(threshold: float, scores: np.ndarray, is_oos: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    answered = scores >= threshold
    ins = ~is_oos
    declined = ~answered
    return {
        "inscope_acc": float((correct & answered)[ins].mean()),
        "oos_recall": float(declined[is_oos].mean()) if is_oos.any() else float("nan"),
        "oos_precision": float(is_oos[declined].mean()) if declined.any() else float("nan"),
        "accuracy_all": float(((correct & answered) | (is_oos & declined)).mean()),
    }


def choose_threshold(scores: np.ndarray, is_oos: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Thresholds maximising (a) the mean of in-scope accuracy and oos recall, (b) accuracy over
    all queries. Candidates: every observed score (answer iff score >= t), plus +inf; a tie is
    broken towards the middle of the run of equally good candidates."""
    cands = np.unique(np.concatenate([scores, [np.inf]]))
    ins = ~is_oos
    order = np.argsort(scores)
    s_sorted = scores[order]
    # for threshold t: answered = scores >= t; count via searchsorted on the sorted scores
    good_ins = (correct & ins)[order]
    oos_sorted = is_oos[order]
    cum_good = np.concatenate([[0], np.cumsum(good_ins)])  # good in-scope among the lowest j
    cum_oos = np.concatenate([[0], np.cumsum(oos_sorted)])
    j = np.searchsorted(s_sorted, cands, side="left")  # how many are below t (declined)
    good_answered = cum_good[-1] - cum_good[j]
    oos_declined = cum_oos[j]
    inscope_acc = good_answered / max(ins.sum(), 1)
    oos_recall = oos_declined / max(is_oos.sum(), 1)
    balanced = (inscope_acc + oos_recall) / 2
    acc_all = (good_answered + oos_declined) / len(scores)

    def best(obj: np.ndarray) -> float:
        idx = np.flatnonzero(obj == obj.max())
        lo, hi = idx[0], idx[-1]
        if hi > lo and np.all(np.diff(idx) == 1) and np.isfinite(cands[hi]):
            return float((cands[lo] + cands[hi]) / 2)
        return float(cands[lo])

    return {"balanced": best(balanced), "accuracy": best(acc_all)}


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--weight", type=float, default=0.3, help="lexical weight of the hybrid run")
    p.add_argument("--limit", type=int, default=0,
                   help="use every Nth val/test query (0 = all); for quick checks only")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-router", action="store_true", help="skip the 'KB + router' rows")
    p.add_argument("--cv", action="store_true", help="choose LR's C by 3-fold CV on train (slow)")
    args = p.parse_args()
    data_dir = common.data_path(args, "clinc150")

    from knowledge.evaluate import evaluate_retrieval
    from knowledge.types import ChunkDraft

    common.print_header("CLINC150 as a 150-entry FAQ, with out-of-scope queries", [
        f"data: {data_dir}/data_full.json (train -> FAQ questions; val+oos_val -> threshold; "
        f"test+oos_test -> figures), k={args.k}",
        "threshold criterion: maximise the mean of in-scope accuracy and out-of-scope recall on val+oos_val "
        "(the threshold maximising plain accuracy over all val queries is shown too)",
    ])
    data = load(data_dir)
    val_rows, test_rows = data["val"] + data["oos_val"], data["test"] + data["oos_test"]
    if args.limit:
        val_rows, test_rows = val_rows[:: args.limit], test_rows[:: args.limit]
    arts = drafts(data["train"])
    val_q, test_q = queries(val_rows), queries(test_rows)
    val_exp, test_exp = [q.expected for q in val_q], [q.expected for q in test_q]
    log(f"{len(arts)} FAQ entries, {len(data['train'])} phrasings; val {len(val_q)}, test {len(test_q)} queries")

    state = common.state_dir(args, "clinc150-torch-fp32")
    configs: list[tuple[str, dict, tuple[str, ...]]] = [
        ("KB dense", no_router(common.knowledge_config(hybrid=False)), ("score",)),
        (f"KB hybrid w={args.weight}", no_router(common.knowledge_config(hybrid=True, lexical_weight=args.weight)),
         ("score",))]
    if not args.no_router:  # its router_weight is chosen on val (in scope) once the KB is built, below
        configs.append(("KB + router", common.knowledge_config(hybrid=True, lexical_weight=args.weight),
                        ("score", "confidence")))
    thr_rows, test_rows_out, misc = [], [], []
    embedder = None
    train_hashes = [ChunkDraft(0, "question", "", t, t).hash for t, _ in data["train"]]
    cached: dict = {}
    for n_cfg, (name, cfg, decisions) in enumerate(configs):
        if "router" in name:  # router_weight: the best val acc@1 (in-scope val only; BM25 left out of the proxy)
            from benchmarks.router_choice import choose_router_weight

            E_tr = np.stack([cached[h] for h in train_hashes]).astype(np.float32)
            vin = [(t, q.expected) for (t, _), q in zip(val_rows, val_q) if q.expected is not None]
            w_router, accs = choose_router_weight(E_tr, [i for _, i in data["train"]],
                                                  embedder.embed([t for t, _ in vin]), [e for _, e in vin])
            misc.append(f"router_weight {w_router} chosen on val (in scope), acc@1 by w: "
                        + ", ".join(f"{w}: {a:.4f}" for w, a in accs.items()))
            log(misc[-1])
            cfg["retrieval"].update({"router": "on", "router_weight": w_router})
        project = common.make_project(cfg, state_dir=state)
        if n_cfg == 0:
            log("building the KB (embedding all phrasings)...")
            kb, build_s, n_emb = build_kb(project, arts)
            misc.append(f"KB: {len(arts)} FAQ entries, {kb.index.ntotal} chunks, index {kb.index.kind}, "
                        f"embedder {kb.embedder.name}; filled in {build_s:.1f}s with {n_emb} texts embedded "
                        "in this run (the rest from the --cache embedding cache)")
            log(misc[-1])
            embedder = kb.embedder
            cached = kb.store.cached_embeddings(embedder.name, train_hashes)
        else:
            kb, report = open_kb(project)
            log(f"{name}: index {report.status} in {report.seconds:.1f}s")
        log(f"{name}: val ({len(val_q)} queries)...")
        rec = common.RecordingKB(kb)
        evaluate_retrieval(rec, val_q, args.k, threshold=-np.inf)  # figures come from the recorded searches
        v_res = rec.results[1:]  # the first search is evaluate_retrieval's warm-up
        log(f"{name}: test ({len(test_q)} queries)...")
        rec = common.RecordingKB(kb)
        rt = evaluate_retrieval(rec, test_q, args.k, threshold=-np.inf)
        t_res = rec.results[1:]
        for decision in decisions:
            label = name if decision == "score" else f"{name} + calibrated decision"

            def decided_by(r, decision=decision):
                if not r.hits:
                    return -np.inf
                return r.hits[0].score if decision == "score" else r.confidence

            v_scores = np.array([decided_by(r) for r in v_res])
            v_is_oos, v_correct = outcomes([r.hits[0].article_id if r.hits else None for r in v_res], v_scores,
                                           val_exp)
            thr = choose_threshold(v_scores, v_is_oos, v_correct)
            for crit, t in thr.items():
                m = metrics_at(t, v_scores, v_is_oos, v_correct)
                thr_rows.append((label, crit, t, m["inscope_acc"], m["oos_recall"], m["oos_precision"],
                                 m["accuracy_all"]))
            t_scores = np.array([decided_by(r) for r in t_res])
            t_is_oos, t_correct = outcomes([r.hits[0].article_id if r.hits else None for r in t_res], t_scores,
                                           test_exp)
            fixed = ((f"default {DEFAULT_THRESHOLD}", DEFAULT_THRESHOLD) if decision == "score" else
                     (f"min_confidence {kb.config.retrieval.min_confidence} (KB's own calibration)",
                      kb.config.retrieval.min_confidence))
            for row_label, t in ((f"val-balanced {thr['balanced']:.3f}", thr["balanced"]),
                                 (f"val-accuracy {thr['accuracy']:.3f}", thr["accuracy"]), fixed):
                m = metrics_at(t, t_scores, t_is_oos, t_correct)
                test_rows_out.append((label, row_label, m["inscope_acc"], m["oos_recall"], m["oos_precision"],
                                      m["accuracy_all"], rt["accuracy_at_1"], rt["recall_at_k"],
                                      rt["latency_ms_p50"], rt["latency_ms_p95"]))
            m = metrics_at(thr["balanced"], t_scores, t_is_oos, t_correct)
            log(f"{label}: test in-scope acc {m['inscope_acc']:.4f}, oos recall {m['oos_recall']:.4f}")
        kb.close()
        del kb, rec

    # -- baselines ------------------------------------------------------------------------
    if not args.no_baselines:
        from sklearn.feature_extraction.text import TfidfVectorizer

        intents = sorted({i for _, i in data["train"]})
        idx = {c: n for n, c in enumerate(intents)}
        y_train = np.array([idx[i] for _, i in data["train"]])
        val_texts, test_texts = [t for t, _ in val_rows], [t for t, _ in test_rows]

        def classifier_rows(name: str, proba_val: np.ndarray, proba_test: np.ndarray, notes: str) -> None:
            for proba, exp, where in ((proba_val, val_exp, "val"), (proba_test, test_exp, "test")):
                top = proba.argmax(1)
                scores = proba.max(1)
                is_oos, correct = outcomes([intents[i] for i in top], scores, exp)
                if where == "val":
                    thr = choose_threshold(scores, is_oos, correct)
                    v_is_oos, v_correct, v_scores = is_oos, correct, scores
                else:
                    for crit in ("balanced", "accuracy"):
                        mv = metrics_at(thr[crit], v_scores, v_is_oos, v_correct)
                        thr_rows.append((name, crit, thr[crit], mv["inscope_acc"], mv["oos_recall"],
                                         mv["oos_precision"], mv["accuracy_all"]))
                        m = metrics_at(thr[crit], scores, is_oos, correct)
                        ins = ~is_oos
                        test_rows_out.append((name, f"val-{crit} {thr[crit]:.3f}", m["inscope_acc"],
                                              m["oos_recall"], m["oos_precision"], m["accuracy_all"],
                                              float(correct[ins].mean()), None, None, None))
            misc.append(notes)

        log("baseline: MiniLM + LR...")
        missing = [i for i, h in enumerate(train_hashes) if h not in cached]
        if missing:
            extra = embedder.embed([data["train"][i][0] for i in missing])
            cached.update({train_hashes[i]: v for i, v in zip(missing, extra)})
        E_train = np.stack([cached[h] for h in train_hashes]).astype(np.float32)
        t0 = time.perf_counter()
        E_val, E_test = embedder.embed(val_texts), embedder.embed(test_texts)
        log(f"  embedded val+test in {time.perf_counter() - t0:.1f}s; fitting LR...")
        lr, c, cv = common.fit_logreg(E_train, y_train, (1.0, 10.0, 100.0) if args.cv else (10.0,))
        classifier_rows("MiniLM + LR (max prob)", lr.predict_proba(E_val), lr.predict_proba(E_test),
                        common.describe_c("MiniLM + LR", c, cv, ORIGIN))
        log("baseline: TF-IDF + LR...")
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        Xtr = vec.fit_transform([t for t, _ in data["train"]])
        lr, c, cv = common.fit_logreg(Xtr, y_train, (1.0, 10.0, 100.0) if args.cv else (100.0,))
        classifier_rows("TF-IDF + LR (max prob)", lr.predict_proba(vec.transform(val_texts)),
                        lr.predict_proba(vec.transform(test_texts)), common.describe_c("TF-IDF + LR", c, cv, ORIGIN))

    for line in misc:
        print(line)
    print()
    common.print_table(
        ["method", "criterion", "threshold", "in-scope acc", "oos recall", "oos precision", "acc (all)"],
        thr_rows, title=f"Threshold chosen on val+oos_val ({len(val_q)} queries; figures on val)")
    common.print_table(
        ["method", "threshold", "in-scope acc", "oos recall", "oos precision", "acc (all)", "acc@1 (no thr)",
         f"recall@{args.k}", "p50 ms", "p95 ms"],
        test_rows_out, title=f"test+oos_test ({len(test_q)} queries: {sum(e is not None for e in test_exp)} in scope, "
                             f"{sum(e is None for e in test_exp)} out of scope)")
    print("in-scope acc = top hit correct AND score >= threshold (over in-scope queries); oos recall = share of "
          "out-of-scope queries declined; oos precision = share of declined queries that were out of scope; "
          "acc (all) = correct answer or correct decline over all queries. KB latency is SearchResult.latency_ms "
          "over the test queries (the same searches give every threshold's row).")
    common.print_footer()
    log("done")


if __name__ == "__main__":
    main()
