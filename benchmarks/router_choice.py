"""Choose knowledge.retrieval.router_weight on a validation split, offline.

The KB's score for an FAQ entry is (about) its best phrasing's cosine; with the router it is
that + w * P(entry). This replays that on embeddings (no BM25: the proxy leaves the lexical
term out) for a grid of w and returns the w with the best validation acc@1. Only train and
validation data go in; the test split is never looked at.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)


def choose_router_weight(E_tr: np.ndarray, y_tr: Sequence[str], E_val: np.ndarray, y_val: Sequence[str],
                         grid: Sequence[float] = GRID) -> tuple[float, dict[float, float]]:
    """(best w, {w: validation acc@1}); ties go to the smaller w."""
    from knowledge.router import train

    classes = sorted(set(y_tr))
    col = {c: i for i, c in enumerate(classes)}
    y = np.array([col[c] for c in y_tr])
    order = np.argsort(y, kind="stable")
    starts = np.searchsorted(y[order], np.arange(len(classes)))
    E_sorted = E_tr[order]
    keep = [i for i, c in enumerate(y_val) if c in col]
    truth = np.array([col[y_val[i]] for i in keep])
    Ev = E_val[keep]
    nn = np.vstack([np.maximum.reduceat(Ev[s:s + 512] @ E_sorted.T, starts, axis=1) for s in range(0, len(Ev), 512)])
    router = train(E_tr, list(y_tr), classes)
    proba = router.proba(Ev)
    accs = {w: float(((nn + w * proba).argmax(1) == truth).mean()) for w in grid}
    best = max(grid, key=lambda w: (accs[w], -w))
    return best, accs
