"""Retriever fine-tuning: (customer question -> answer that resolved it) pairs, mined from
transcripts and from the knowledge base itself, train the sentence-transformers embedder with
MultipleNegativesRankingLoss (every other answer in the batch is a negative).

    pairs = mine_pairs(transcripts, kb)
    metrics = train_retriever(pairs, default_model_path(), Path("out/retriever"))
    # out/retriever is a sentence-transformers directory: set knowledge.embedding.model to it
    # (or register it: ModelRegistry(root).register("retriever", out_dir, metrics))

The training loop is written directly on torch with the loss module of sentence-transformers:
``SentenceTransformerTrainer`` and ``model.fit`` both need the ``datasets`` package, which is
not a botkit dependency. Batches never hold two pairs for the same article, so an in-batch
negative is never a second copy of the positive.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from botkit.errors import BotkitError
from training.types import Transcript

log = logging.getLogger(__name__)
MIN_PAIRS = 50  # below this, in-batch negatives are too few to teach the model anything reliable
DEFAULT_FLOOR = 0.5  # an agent reply must match an article at least this well (cosine) to count
METRICS_FILE = "metrics.json"


class RetrieverTrainingError(BotkitError):
    """Retriever training was refused (too few pairs, bad output directory, ...)."""


@dataclass(frozen=True)
class Pair:
    query: str  # what the customer asked
    positive_text: str  # the text of the article / FAQ answer that resolved it
    article_id: str


def pairs_hash(pairs: Sequence[Pair]) -> str:
    """sha256 of the pairs in order (identifies the training data in metrics and registry)."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.query, p.positive_text, p.article_id], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# -- mining ------------------------------------------------------------------------------------

def exchanges(t: Transcript) -> Iterable[tuple[str, str]]:
    """(customer question, agent reply that answered it) for each agent reply block."""
    asked: list[str] = []
    i, msgs = 0, t.messages
    while i < len(msgs):
        m = msgs[i]
        if m.role == "customer":
            asked.append(m.text.strip())
            i += 1
        elif m.role == "agent":
            reply = []
            while i < len(msgs) and msgs[i].role == "agent":
                reply.append(msgs[i].text.strip())
                i += 1
            question = pick_question(asked)
            if question and any(reply):
                yield question, "\n".join(r for r in reply if r)
            asked = []
        else:
            i += 1


def pick_question(turns: Sequence[str]) -> str:
    """The customer's question among their turns since the last agent reply: the last one with a
    question mark, else the longest one with at least three words."""
    turns = [t for t in turns if t]
    for t in reversed(turns):
        if "?" in t and len(t.split()) >= 3:
            return t
    long = [t for t in turns if len(t.split()) >= 3]
    return max(long, key=len) if long else ""


def _positive(kb: Any, article_id: str) -> tuple[str, str] | None:
    a = kb.store.find(article_id)
    if a is None:
        return None
    return a.body, a.kind


def mine_pairs(transcripts: Iterable[Transcript], kb: Any, *, floor: float = DEFAULT_FLOOR,
               include_faq: bool = True) -> list[Pair]:
    """Pairs for retriever training, deduplicated, in a stable order.

    From transcripts: each customer question answered by an agent is paired with the KB article
    whose text best matches the agent's reply (dense cosine through ``kb.search``), when that
    match is at least ``floor``; replies that match nothing are skipped (they are knowledge gaps,
    see :mod:`training.gaps`). From the KB: every FAQ phrasing is paired with its answer.
    The positive text is the article body (for an FAQ entry: the answer).
    """
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()

    def add(query: str, text: str, article_id: str) -> None:
        key = (query.strip().lower(), article_id)
        if query.strip() and text.strip() and key not in seen:
            seen.add(key)
            pairs.append(Pair(query.strip(), text.strip(), article_id))

    bodies: dict[str, str | None] = {}
    for t in transcripts:
        for question, reply in exchanges(t):
            result = kb.search(reply[: kb.config.retrieval.max_query_chars], 1)
            if not result.hits:
                continue
            hit = result.hits[0]
            if hit.dense_score < floor:
                continue
            if hit.article_id not in bodies:
                found = _positive(kb, hit.article_id)
                bodies[hit.article_id] = found[0] if found else None
            body = bodies[hit.article_id]
            if body:
                add(question, body, hit.article_id)
    if include_faq:
        for a in kb.store.list():
            for q in a.questions:
                add(q, a.body, a.id)
    return pairs


# -- training ----------------------------------------------------------------------------------

def _batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches with no article twice in a batch (its twin would be a false negative)."""
    order = list(pairs)
    rng.shuffle(order)
    batches: list[list[Pair]] = []
    open_batches: list[tuple[list[Pair], set[str]]] = []
    for p in order:
        for batch, ids in open_batches:
            if p.article_id not in ids:
                batch.append(p)
                ids.add(p.article_id)
                if len(batch) == batch_size:
                    batches.append(batch)
                    open_batches.remove((batch, ids))
                break
        else:
            if batch_size == 1:
                batches.append([p])
            else:
                open_batches.append(([p], {p.article_id}))
    batches += [b for b, _ in open_batches if len(b) >= 2]  # a batch of one has no negative
    rng.shuffle(batches)
    return batches


def train_retriever(pairs: Sequence[Pair], base_model_dir: Path | str, out_dir: Path | str, *, epochs: int = 1,
                    batch_size: int = 32, lr: float = 2e-5, seed: int = 0, min_pairs: int = MIN_PAIRS,
                    warmup_ratio: float = 0.1, progress: bool = True, threads: int = 0) -> dict[str, Any]:
    """Fine-tune the model in ``base_model_dir`` on ``pairs``; save it to ``out_dir``.

    ``out_dir`` receives a sentence-transformers model directory (loadable by
    :class:`knowledge.embedding.SentenceTransformerEmbedder` and usable as
    ``knowledge.embedding.model``), ``metrics.json`` (losses, timings, settings, ``pairs_sha256``)
    and ``pairs.sha256``. The directory is written under a temporary name and renamed into
    place, so a crash never leaves half a model. Returns the metrics.
    """
    pairs = list(pairs)
    if len(pairs) < min_pairs:
        raise RetrieverTrainingError(
            f"too few training pairs: {len(pairs)}; at least {min_pairs} are needed "
            f"({min_pairs - len(pairs)} more). Mine more transcripts, or add FAQ phrasings to the knowledge base.")
    if len({p.article_id for p in pairs}) < 2:
        raise RetrieverTrainingError("all pairs point at one article: in-batch negatives need at least two articles")
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise RetrieverTrainingError("epochs must be >= 1, batch_size >= 2 and lr > 0")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RetrieverTrainingError(f"{out} exists and is not empty; choose a new output directory")
    base = Path(base_model_dir)
    if not (base / "config.json").exists():
        raise RetrieverTrainingError(f"{base} is not a sentence-transformers model directory (no config.json)")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # older layout
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]

    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    loss_fn = MultipleNegativesRankingLoss(model)
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # 6.x renamed tokenize
    plan = [_batches(pairs, batch_size, rng) for _ in range(epochs)]
    total = sum(len(b) for b in plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * warmup_ratio), total)
    losses: list[float] = []
    model.train()
    with tqdm(total=total, desc="training retriever", unit="batch", disable=not progress) as bar:
        for epoch in plan:
            for batch in epoch:
                features = [tokenize([p.query for p in batch]), tokenize([p.positive_text for p in batch])]
                loss = loss_fn(features, None)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    digest = pairs_hash(pairs)
    metrics = {
        "kind": "retriever", "base_model": str(base), "loss": "MultipleNegativesRankingLoss",
        "pairs": len(pairs), "articles": len({p.article_id for p in pairs}), "pairs_sha256": digest,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "steps": total,
        "loss_first": round(losses[0], 5) if losses else None,
        "loss_last": round(losses[-1], 5) if losses else None,
        "loss_mean_first_10pct": round(float(np.mean(losses[: max(1, total // 10)])), 5) if losses else None,
        "loss_mean_last_10pct": round(float(np.mean(losses[-max(1, total // 10):])), 5) if losses else None,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (tmp / "pairs.sha256").write_text(digest + "\n", encoding="utf-8")
    if out.exists():
        out.rmdir()  # empty (checked above)
    tmp.rename(out)
    log.info("retriever trained on %d pairs in %.1fs -> %s", len(pairs), metrics["train_seconds"], out)
    return metrics


def register_retriever(registry_root: Path | str, model_dir: Path | str, metrics: dict[str, Any]) -> Any:
    """Register a trained retriever in the model registry (``training.registry``); not promoted."""
    from training.registry import ModelRegistry

    return ModelRegistry(Path(registry_root)).register("retriever", Path(model_dir), metrics)


__all__ = ["MIN_PAIRS", "Pair", "RetrieverTrainingError", "mine_pairs", "pairs_hash", "pick_question",
           "register_retriever", "train_retriever"]
