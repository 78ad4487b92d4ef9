"""A dependency-free :class:`~botkit.seams.Embedder` for fast tests: :class:`HashEmbedder`.

It is not a language model and does not pretend to be one: texts are bags of hashed
features (lower-cased words, and the character trigrams of each word), so texts that share
words or word pieces get a higher cosine than texts that share none. That is enough for a
knowledge base to find the article that uses the customer's words, and it is deterministic
across processes and machines (blake2b, not Python's salted ``hash``), so tests can assert
exact rankings. It keeps every promise of the Embedder protocol (it passes
:class:`~botkit.testing.EmbedderContract`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_EMPTY = "\x00empty"  # the feature of a text with nothing in it: still a unit vector


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.casefold())
    feats: list[tuple[str, float]] = [("w:" + w, 1.0) for w in words]
    for w in words:
        padded = f"#{w}#"
        feats.extend(("c:" + padded[i:i + 3], 0.5) for i in range(len(padded) - 2))
    if not feats:  # punctuation or symbols only: the characters themselves
        feats = [("s:" + ch, 1.0) for ch in text if not ch.isspace()] or [(_EMPTY, 1.0)]
    return feats


class HashEmbedder:
    """Hashed word and character-trigram features in ``dim`` signed buckets, L2-normalised float32.

    ``calls`` counts the ``embed`` calls and ``texts`` the texts embedded (to assert caching
    or batching); neither changes the vectors.
    """

    VERSION = 1  # part of the name: bump when the features change, so cached vectors are not reused

    def __init__(self, dim: int = 256):
        if dim < 8:
            raise ValueError(f"HashEmbedder needs dim >= 8, got {dim}")
        self._dim = dim
        self.started = False
        self.calls = 0
        self.texts = 0

    @property
    def name(self) -> str:
        return f"hash-{self._dim}:v{self.VERSION}"

    @property
    def dim(self) -> int:
        return self._dim

    def start(self) -> None:
        self.started = True

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self._dim, dtype=np.float64)
        for feature, weight in _features(text):
            digest = hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vec[h % self._dim] += weight if (h >> 63) & 1 else -weight  # signed: collisions cancel, not pile up
        norm = np.linalg.norm(vec)
        if norm == 0.0:  # every feature cancelled out (rare): fall back to the empty text's vector
            return self._vector(_EMPTY) if text != _EMPTY else np.eye(1, self._dim, dtype=np.float64)[0]
        return vec / norm

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length; the same text always gives the same row."""
        self.start()
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._vector(text)
        return out


__all__ = ["HashEmbedder"]
