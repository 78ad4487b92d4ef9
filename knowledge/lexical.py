"""Lexical matching with BM25 (bm25s), for what embeddings blur: product names, order
numbers, error codes.

Scores are normalised to [0, 1) per query: the BM25 score divided by the most the query's
terms could score (the sum of their idf; an unknown term counts as the rarest possible).
So 0.5 means "this chunk matches about half the query's weight", whatever the query's
length, which is what lets a fixed weight and threshold work across queries.

Chinese writes no spaces between words, so the word pattern would make a whole Chinese
sentence one token, which no query ever matches. With ``cjk=True`` (the default;
``knowledge.retrieval.tokenizer: auto``) every run of Han characters is first cut into words
by jieba (the ``languages`` extra; MIT, pure Python, its dictionary ships in the package, no
download), in search mode (long words also yield their parts: 退货政策 -> 退货 政策 退货政策),
and a few Chinese function words are dropped like English stop words. Everything else is
tokenised as before, so English chunks index exactly as they did, and mixed text (a Chinese
sentence naming "Pine Points") gets both. Without jieba installed, Han runs stay whole (the
old behaviour) and a warning says how to install it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from typing import Any

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN
from bm25s.tokenization import Tokenizer

logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG and logs every index build

_SPLIT = r"(?u)\b\w\w+\b"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# Chinese function words of two or more characters (single characters never become terms:
# the word pattern needs two), the counterpart of bm25s's English stop words.
STOPWORDS_ZH = frozenset(
    "什么 怎么 怎样 如何 为什么 可以 能否 是否 我们 你们 他们 您好 你好 请问 一下 一个 这个 那个 "
    "哪个 哪些 这些 那些 没有 还是 或者 如果 因为 所以 但是 已经 现在 需要 应该 的话 吗 呢 吧".split())
_jieba_lock = threading.Lock()
_jieba: Any = None  # a jieba.Tokenizer once loaded; False when jieba is not installed


def _segmenter() -> Any:
    """jieba's tokenizer, loaded once (~1 s the first time, then from its cache); None without jieba."""
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            try:
                import jieba
            except ImportError:
                logging.getLogger(__name__).warning(
                    "Chinese text is in the knowledge base but jieba is not installed, so BM25 cannot match "
                    "Chinese words: pip install -e '.[languages]' (or set knowledge.retrieval.tokenizer: whitespace)")
                _jieba = False
            else:
                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _jieba = tokenizer
    return _jieba or None


def segment(text: str) -> str:
    """``text`` with every run of Han characters cut into space-separated words (jieba search mode)."""
    if not _HAN.search(text):
        return text
    seg = _segmenter()
    if seg is None:
        return text

    def cut(m: re.Match[str]) -> str:
        words = [w for w in seg.cut_for_search(m.group(0)) if w not in STOPWORDS_ZH]
        return " " + " ".join(words) + " "

    return _HAN.sub(cut, text)


def _stemmer():  # PyStemmer is optional: without it, terms are matched unstemmed
    try:
        import Stemmer

        return Stemmer.Stemmer("english").stemWord
    except ImportError:  # pragma: no cover
        return None


class LexicalIndex:
    def __init__(self, chunk_ids: np.ndarray, texts: list[str], k1: float = 1.2, b: float = 0.75, *,
                 cjk: bool = True):
        self.chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        self.cjk = cjk
        if cjk:
            texts = [segment(t) for t in texts]
        self._stem = _stemmer()
        self._stop = set(STOPWORDS_EN)
        self._tokenizer = Tokenizer(splitter=_SPLIT, stopwords="en", stemmer=self._stem)
        self.bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.vocab: dict[str, int] = {}
        self.idf: dict[str, float] = {}
        n = len(texts)
        self.max_idf = math.log(1 + (n + 0.5) / 0.5) if n else 1.0
        if not n:
            return
        tokens = self._tokenizer.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
        self.bm25.index(tokens, show_progress=False)
        self.vocab = dict(tokens.vocab)
        df = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        for doc in tokens.ids:
            df[np.unique(np.asarray(doc, dtype=np.int64))] += 1
        self.idf = {term: math.log(1 + (n - df[i] + 0.5) / (df[i] + 0.5)) for term, i in self.vocab.items() if term}

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def terms(self, query: str) -> list[str]:
        if self.cjk:
            query = segment(query)
        words = [w for w in re.findall(_SPLIT, query.lower()) if w not in self._stop]
        stems = [self._stem(w) for w in words] if self._stem else words
        return list(dict.fromkeys(stems))

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalised scores, chunk ids) of the best k chunks with any lexical match."""
        terms = self.terms(query)
        known = [t for t in terms if t in self.idf]
        if not known or not len(self):
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        upper = sum(self.idf[t] for t in known) + self.max_idf * (len(terms) - len(known))
        scores = self.bm25.get_scores(known) / upper
        k = min(k, int(np.count_nonzero(scores)))
        if k == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return scores[top].astype(np.float32), self.chunk_ids[top]
