"""Retriever fine-tuning (``training.retriever.train_retriever``) on intent data sets turned into
a small FAQ: accuracy@1 of 1-nearest-neighbour over the KB phrasings, before and after.

For each intent, ``--kb-per-intent`` training phrasings (the first ones in file order) are the
"KB" (the phrasings of that intent's FAQ entry). Training pairs are OTHER training phrasings of
the intent -> one of that intent's KB phrasings (picked with a seeded RNG), article id = the
intent, so a batch never holds the same intent twice. ``--pairs`` pairs are drawn (seeded)
from all candidates; 1 epoch, batch 32, lr 2e-5, MultipleNegativesRankingLoss.

Evaluation, in the same run, on the data set's test split (CLINC150: in-scope test only):
embed the KB phrasings and the test queries with the base MiniLM ("before") and with the
fine-tuned model ("after"); the predicted intent is the intent of the most cosine-similar KB
phrasing. Test queries are never used for training.

    python benchmarks/retriever_training.py [--data ../shared/datasets] [--datasets banking77[,clinc150]]
                                            [--pairs 1000] [--kb-per-intent 10] [--seed 0]
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import log


# -- data -------------------------------------------------------------------------------------
def load_banking77(args) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from benchmarks.banking77 import load

    train, test, _ = load(common.data_path(args, "banking77"))
    return train, [(t, c) for t, c, _ in test]


def load_clinc150(args) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    data = json.loads(common.data_path(args, "clinc150", "data_full.json").read_text(encoding="utf-8"))
    return [(t, c) for t, c in data["train"]], [(t, c) for t, c in data["test"]]


LOADERS = {"banking77": load_banking77, "clinc150": load_clinc150}


def split_kb(train: list[tuple[str, str]], per_intent: int) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """(KB phrasings [(text, intent)], remaining phrasings by intent)."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in train:
        by_intent[intent].append(text)
    kb, rest = [], {}
    for intent in sorted(by_intent):
        texts = by_intent[intent]
        kb += [(t, intent) for t in texts[:per_intent]]
        rest[intent] = texts[per_intent:]
    return kb, rest


def make_pairs(kb: list[tuple[str, str]], rest: dict[str, list[str]], n: int, seed: int):
    from training.retriever import Pair

    rng = random.Random(seed)
    kb_by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in kb:
        kb_by_intent[intent].append(text)
    candidates = [(q, intent) for intent in sorted(rest) for q in rest[intent]]
    rng.shuffle(candidates)
    chosen = candidates[:n] if n else candidates
    return [Pair(q, rng.choice(kb_by_intent[intent]), intent) for q, intent in chosen], len(candidates)


def acc_at_1(model_dir: Path, kb: list[tuple[str, str]], test: list[tuple[str, str]]) -> tuple[float, float]:
    """(accuracy@1 of 1-NN over the KB phrasings, seconds spent embedding)."""
    import numpy as np

    from knowledge.embedding import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(model_dir)
    emb.start()  # model load (and the first import of sentence-transformers) is not embedding time
    t0 = time.perf_counter()
    K = emb.embed([t for t, _ in kb])
    Q = emb.embed([t for t, _ in test])
    seconds = time.perf_counter() - t0
    nearest = np.argmax(Q @ K.T, axis=1)
    correct = sum(kb[j][1] == intent for j, (_, intent) in zip(nearest, test))
    return correct / len(test), seconds


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="banking77", help="comma-separated: banking77, clinc150")
    p.add_argument("--pairs", type=int, default=1000, help="training pairs per data set (0 = every candidate)")
    p.add_argument("--kb-per-intent", type=int, default=10)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for n in names:
        if n not in LOADERS:
            sys.exit(f"unknown data set {n!r}; choose from {', '.join(LOADERS)}")

    from knowledge.models import default_model_path
    from training.retriever import train_retriever

    base = default_model_path()
    common.print_header("Retriever fine-tuning: 1-NN accuracy@1 over a 10-phrasings-per-intent KB, before/after", [
        f"base model: {base}",
        f"KB: first {args.kb_per_intent} train phrasings per intent; pairs: other train phrasings -> a KB phrasing "
        f"of the same intent (seeded); {args.pairs or 'all'} pairs, {args.epochs} epoch(s), batch {args.batch_size}, "
        f"lr {args.lr}, seed {args.seed}",
        "eval: test split (CLINC150 in-scope only); predicted intent = intent of the most cosine-similar KB phrasing",
        "training seconds = train_retriever's own train_seconds (model load + training, not saving); "
        "embed seconds = KB + test embedding for one model",
    ])
    rows = []
    for name in names:
        train, test = LOADERS[name](args)
        kb, rest = split_kb(train, args.kb_per_intent)
        pairs, n_cand = make_pairs(kb, rest, args.pairs, args.seed)
        log(f"{name}: {len(kb)} KB phrasings ({len(rest)} intents), {len(test)} test queries, "
            f"{len(pairs)} pairs of {n_cand} candidates")
        acc0, emb0 = acc_at_1(base, kb, test)
        log(f"{name}: base acc@1 {acc0:.4f} (embedding {emb0:.1f}s); training...")
        out = common.workdir() / f"retriever-{name}"
        t0 = time.perf_counter()
        metrics = train_retriever(pairs, base, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed, progress=False)
        wall = time.perf_counter() - t0
        log(f"{name}: trained {metrics['steps']} steps in {metrics['train_seconds']}s (wall incl. save {wall:.1f}s), "
            f"loss {metrics['loss_mean_first_10pct']} -> {metrics['loss_mean_last_10pct']}")
        acc1, emb1 = acc_at_1(out, kb, test)
        log(f"{name}: fine-tuned acc@1 {acc1:.4f} (embedding {emb1:.1f}s)")
        rows.append((name, "all-MiniLM-L6-v2 (base)", acc0, 0, None, None, None, emb0))
        rows.append((name, "fine-tuned (train_retriever)", acc1, len(pairs), metrics["steps"],
                     float(metrics["train_seconds"]),
                     f"{metrics['loss_mean_first_10pct']:.3f}->{metrics['loss_mean_last_10pct']:.3f}", emb1))
    common.print_table(["dataset", "model", "acc@1", "training pairs", "steps", "training s",
                        "loss (first->last 10%)", "embed s"], rows)
    common.print_footer()


if __name__ == "__main__":
    main()
