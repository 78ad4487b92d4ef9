"""A learned router: which entry does a query belong to, from the KB's own phrasings.

Nearest-neighbour retrieval scores an FAQ entry by its single closest phrasing, so two
entries whose phrasings overlap ("card not arrived" vs "card delivery estimate") are
confused by whichever stray phrasing lies nearest. A multinomial logistic regression on the
same embeddings learns what separates the entries from *all* their phrasings at once
(BANKING77: 1-NN 0.920, LR 0.929 acc@1). :class:`Router` is that model, trained at
import/sync time on the cached chunk vectors (no extra embedding except one title per entry):
each FAQ phrasing is an example of its entry, and each entry's title one more, so articles
without phrasings are classes too. :meth:`KnowledgeBase.search` adds ``router_weight *
P(entry)`` to the retrieval score, so retrieval still decides where the router knows little.

Training is full-batch gradient descent (Adam, L2) in torch on CPU: a few hundred steps,
about a second for 10k phrasings x 77 entries. Only torch/numpy: no new dependency.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STEPS = 300
LEARNING_RATE = 0.05
L2 = 1e-4  # on the weights, per example (mean loss): keeps probabilities from saturating
TEMPERATURE_INIT = 10.0  # cosine-scale inputs: logits start as 10 * x.W
MAX_EXAMPLES = 50_000  # more are subsampled (seeded) so a sync stays a few seconds
MAX_CLASSES = 5_000  # the weight matrix is dim x classes; above this the router stays off


def eligible(phrasing_counts: Sequence[int], min_entries: int) -> bool:
    """``router: auto``: on for an FAQ-heavy KB, where at least ``min_entries`` entries, and at least
    half of all entries, have 3 or more phrasings (``phrasing_counts``: one count per entry, 0 for
    an article). On an article-heavy KB (the demo: 23 of 53 entries) the router, which knows an
    article only from its passages and title, pulled right article answers down to FAQ entries."""
    rich = sum(1 for n in phrasing_counts if n >= 3)
    return rich >= min_entries and 2 * rich >= len(phrasing_counts)


@dataclass(frozen=True)
class Router:
    classes: tuple[str, ...]  # article ids, in column order
    W: np.ndarray  # (dim, classes)
    b: np.ndarray  # (classes,)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_col", {a: i for i, a in enumerate(self.classes)})

    def column(self, article_id: str) -> int | None:
        return self._col.get(article_id)  # type: ignore[attr-defined]

    def proba(self, X: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities for (n, dim) query vectors."""
        z = np.atleast_2d(X).astype(np.float32) @ self.W + self.b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, W=self.W, b=self.b, classes=np.array(self.classes, dtype=object),
                 fingerprint=np.array(self.fingerprint))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Router | None":
        """The stored router, or None when missing or unreadable (then it is retrained)."""
        try:
            with np.load(path, allow_pickle=True) as data:
                return cls(tuple(str(c) for c in data["classes"]), data["W"].astype(np.float32),
                           data["b"].astype(np.float32), str(data["fingerprint"]))
        except (OSError, ValueError, KeyError):
            return None


def train(X: np.ndarray, labels: Sequence[str], classes: Sequence[str] | None = None, *,
          steps: int = STEPS, seed: int = 0, fingerprint: str = "", pause: Callable[[], None] | None = None) -> Router:
    """Fit the router on (n, dim) example vectors and their entry ids (``pause`` is called between
    steps: a background refit lets a customer's search go first)."""
    import torch

    classes = tuple(classes) if classes is not None else tuple(dict.fromkeys(labels))
    col = {a: i for i, a in enumerate(classes)}
    X = np.asarray(X, dtype=np.float32)
    y = np.array([col[a] for a in labels], dtype=np.int64)
    if len(X) > MAX_EXAMPLES:
        keep = np.random.default_rng(seed).choice(len(X), MAX_EXAMPLES, replace=False)
        X, y = X[keep], y[keep]
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        W = (torch.randn(X.shape[1], len(classes), generator=gen) * 0.01).requires_grad_()
        b = torch.zeros(len(classes), requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=LEARNING_RATE)
        for _ in range(steps):
            if pause is not None:
                pause()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(TEMPERATURE_INIT * (Xt @ W) + b, yt) + L2 * (W * W).sum()
            loss.backward()
            opt.step()
    return Router(classes, (TEMPERATURE_INIT * W.detach()).numpy().astype(np.float32),
                  b.detach().numpy().astype(np.float32), fingerprint)


def cross_fitted(X: np.ndarray, labels: Sequence[str], classes: Sequence[str], folds: int = 5,
                 seed: int = 0, pause: Callable[[], None] | None = None) -> np.ndarray:
    """Each example's probability for its *own* class from a router not trained on it.

    The calibration uses these for its router feature: a router's probability for a
    phrasing it was trained on is near 1 and says nothing about an unseen question.
    Returns (n, classes) probabilities.
    """
    n = len(X)
    out = np.zeros((n, len(classes)), dtype=np.float32)
    fold = np.random.default_rng(seed).integers(0, folds, n)
    labels = list(labels)
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        train_idx = np.flatnonzero(fold != f)
        if not len(test) or not len(train_idx):
            continue
        r = train(X[train_idx], [labels[i] for i in train_idx], classes, seed=seed, pause=pause)
        out[test] = r.proba(X[test])
    return out
