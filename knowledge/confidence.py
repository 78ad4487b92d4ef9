"""Calibrated answer confidence: P(the top hit answers the question), fitted per knowledge base.

A single cosine threshold cannot tell "Do you sell dog beds?" (close to the physical-store FAQ
in wording, answered by nothing) from a right answer phrased unusually: both score ~0.45.
What does tell them apart is everything known at search time together: the best hit's dense
and lexical scores, its margin to the next entry, whether dense and lexical matching agree on
the entry, the query's length, whether the hit is an FAQ phrasing or an article passage, and
the router's probability for it. :class:`Calibration` combines these with a small logistic
model, fitted from the knowledge base itself whenever it changes (:func:`fit`):

- positives: the KB's own FAQ phrasings used as queries with their own chunk held out
  (leave-one-phrasing-out), and its article titles and section headings used as queries
  (label = "the top hit is that entry", so a phrasing the KB confuses counts as a miss);
- negatives: the out-of-domain questions shipped in ``knowledge/data/out_of_domain.txt``
  (weather, sport, recipes, other companies, trivia...), and near-domain questions made from
  the KB: a phrasing searched with its *whole entry* held out, whose best hit is necessarily
  wrong (exactly the "a question the help centre does not answer" case).

Classes are weighted to balance, so 0.5 means "as likely right as wrong when half the traffic
is unanswerable". With too little data to fit (a tiny KB) the documented default mapping
``sigmoid(DEFAULT_SLOPE * (score - threshold))`` is used: with ``min_confidence: 0.5`` it
declines exactly what the old threshold declined.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FEATURES = ("score", "dense", "lexical", "margin", "agree", "log_words", "faq", "router")
# Which features the fit uses. Query length and "the hit is an FAQ phrasing" are computed but
# left out: the KB's own calibration queries (short phrasings, titles) differ from real
# questions in exactly those two, so the fit learned "long question or article hit = wrong"
# (on the demo KB: most right answers to long article questions fell under 0.1).
FITTED = (True, True, True, True, True, False, False, True)
CALIBRATION_VERSION = 8  # part of the fingerprint: bump when the features or the fit change
DEFAULT_SLOPE = 20.0  # default mapping: 0.1 above the threshold -> 0.88, 0.1 below -> 0.12
MIN_POSITIVES = 30  # fewer held-out KB queries than this: too little to fit, use the default mapping
MAX_POSITIVES = 3000  # more are subsampled (seeded): the fit stays a few seconds on CPU
L2 = 1.0  # ridge penalty on the standardised weights (a few hundred examples; keeps it smooth)
OUT_OF_DOMAIN_FILE = Path(__file__).with_name("data") / "out_of_domain.txt"


def out_of_domain_questions() -> list[str]:
    """The shipped off-topic questions (one a line; # comments and blank lines skipped)."""
    lines = OUT_OF_DOMAIN_FILE.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def feature_vector(score: float, dense: float, lexical: float, margin: float, agree: bool, words: int,
                   faq: bool, router: float) -> np.ndarray:
    """The features of one search's best hit, in :data:`FEATURES` order."""
    return np.array([score, dense, lexical, margin, float(agree), math.log1p(words), float(faq), router],
                    dtype=np.float64)


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


@dataclass(frozen=True)
class Calibration:
    """A fitted (or default) mapping from a search's features to a probability."""

    weights: tuple[float, ...] = ()
    bias: float = 0.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    threshold: float = 0.45  # the default mapping's centre (knowledge.retrieval.threshold)
    fitted: bool = False
    fingerprint: str = ""
    stats: dict[str, float] = field(default_factory=dict)  # examples used, fit accuracy: for logs and docs

    @classmethod
    def default(cls, threshold: float, fingerprint: str = "") -> "Calibration":
        """The mapping used without enough KB data to fit: a steep sigmoid around the threshold."""
        return cls(threshold=threshold, fingerprint=fingerprint)

    def confidence(self, x: np.ndarray) -> float:
        return float(self.batch(np.atleast_2d(x))[0])

    def batch(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if not self.fitted:
            return _sigmoid(DEFAULT_SLOPE * (X[:, 0] - self.threshold))
        z = ((X - np.asarray(self.mean)) / np.asarray(self.std)) @ np.asarray(self.weights) + self.bias
        return _sigmoid(z)

    # -- persistence: the index dir, so a restart with an unchanged KB does not refit --------
    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Calibration | None":
        """The stored calibration, or None when it is missing or unreadable (then it is refitted)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["weights"], data["mean"], data["std"] = (tuple(data[k]) for k in ("weights", "mean", "std"))
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None


def fit(X: np.ndarray, y: np.ndarray, *, threshold: float, fingerprint: str = "", l2: float = L2,
        iterations: int = 25) -> Calibration:
    """Class-balanced L2 logistic regression by Newton's method (8 features: milliseconds).

    Returns the default mapping when there are fewer than :data:`MIN_POSITIVES` positives or
    no negatives: a model fitted on a handful of examples would be confidently arbitrary.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos < MIN_POSITIVES or n_neg < 10:
        return Calibration.default(threshold, fingerprint)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std < 1e-6] = 1.0  # a constant feature (router off, no lexical) keeps weight ~0
    std[~np.asarray(FITTED)] = np.inf  # features left out of the fit (see FITTED): weight 0
    Z = np.hstack([(X - mean) / std, np.ones((len(X), 1))])
    sw = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg) * len(y)  # balanced classes
    w = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0  # the bias is not penalised
    for _ in range(iterations):
        p = _sigmoid(Z @ w)
        grad = Z.T @ (sw * (p - y)) + reg * w
        hess = (Z * (sw * p * (1 - p))[:, None]).T @ Z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    p = _sigmoid(Z @ w)
    acc = float(np.average((p >= 0.5) == (y > 0), weights=sw))
    return Calibration(tuple(float(v) for v in w[:-1]), float(w[-1]), tuple(float(v) for v in mean),
                       tuple(float(v) for v in std), threshold, True, fingerprint,
                       {"positives": float(n_pos), "negatives": float(n_neg), "balanced_fit_accuracy": acc})


def fingerprint(parts: Sequence[object]) -> str:
    """What a stored calibration was fitted for (KB version, embedder, retrieval settings)."""
    return json.dumps([CALIBRATION_VERSION, *parts], sort_keys=True, default=str)
