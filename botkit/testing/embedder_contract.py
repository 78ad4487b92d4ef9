"""The contract every :class:`~botkit.seams.Embedder` backend must pass.

A backend's tests subclass :class:`EmbedderContract` and provide an ``embedder`` fixture
(started or not; share one across the class or module where loading the model is slow)::

    from botkit.testing import EmbedderContract

    class TestMyEmbedder(EmbedderContract):
        min_batch_cosine = 0.95  # a quantised backend: batching changes activation scales

        @pytest.fixture(scope="class")
        def embedder(self):
            return MyEmbedder(...)

What it checks is what the knowledge base relies on: vectors of the promised shape, dtype
and unit length (the index uses inner product as cosine), one row per text in input order
(also when a backend reorders texts to batch them), the same vector for the same text (the
embedding cache is keyed by ``name`` and the text), meaning in the vectors (a paraphrase is
closer than an unrelated text), texts of any script and length, and threads embedding at once
(the retriever embeds from a thread pool).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from botkit.seams import Embedder

SENTENCES = ["refund policy", "How do I reset my password?",
             "Can I change the shipping address after placing an order? I typed the wrong street.",
             "Thanks!!"]
ODD = ["", "   ", "...!!!???", "Мой заказ не пришёл, что делать?", "配送にはどのくらい時間がかかりますか？",
       "emoji 👍🏽 and a tab\tand a\nnewline", "\x00\x01 control characters", "ß" * 3]
PARAPHRASE = ("How do I reset my password?", "I forgot my password, how can I reset it?")
UNRELATED = "The parcel was delivered to the wrong street address."


def _unit_rows(vectors: np.ndarray, atol: float = 1e-4) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0, atol=atol))


class EmbedderContract:
    min_batch_cosine: float = 0.9999  # a text alone vs in a batch: exact kernels stay this close
    repeat_atol: float = 1e-6  # the same batch twice: element-wise

    def test_it_is_an_embedder_with_a_stable_name_and_width(self, embedder: Embedder) -> None:
        assert isinstance(embedder, Embedder)
        name, dim = embedder.name, embedder.dim
        assert isinstance(name, str) and name.strip() == name and name
        assert isinstance(dim, int) and dim > 0
        embedder.start()
        embedder.start()  # idempotent
        embedder.embed(["warm up"])
        assert (embedder.name, embedder.dim) == (name, dim)  # the cache key does not change once loaded

    def test_rows_are_unit_float32_vectors_one_per_text(self, embedder: Embedder) -> None:
        vectors = embedder.embed(tuple(SENTENCES))  # any Sequence[str]
        assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
        assert vectors.shape == (len(SENTENCES), embedder.dim)
        assert np.isfinite(vectors).all() and _unit_rows(vectors)
        cos = vectors @ vectors.T
        assert (cos[~np.eye(len(SENTENCES), dtype=bool)] < 0.999).all(), "different texts got the same vector"

    def test_no_texts_give_an_empty_matrix_of_the_right_width(self, embedder: Embedder) -> None:
        vectors = embedder.embed([])
        assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
        assert vectors.shape == (0, embedder.dim)

    def test_the_same_text_gives_the_same_vector(self, embedder: Embedder) -> None:
        first, again = embedder.embed(SENTENCES), embedder.embed(SENTENCES)
        np.testing.assert_allclose(first, again, atol=self.repeat_atol, rtol=0)

    def test_a_row_does_not_depend_on_the_batch_or_its_order(self, embedder: Embedder) -> None:
        alone = np.stack([embedder.embed([s])[0] for s in SENTENCES])
        together = embedder.embed(SENTENCES)
        backwards = embedder.embed(SENTENCES[::-1])[::-1]
        for batch in (together, backwards):
            cosines = np.sum(alone.astype(np.float64) * batch, axis=1)
            assert cosines.min() >= self.min_batch_cosine, cosines

    def test_a_paraphrase_is_closer_than_an_unrelated_text(self, embedder: Embedder) -> None:
        question, paraphrase = embedder.embed(list(PARAPHRASE))
        (unrelated,) = embedder.embed([UNRELATED])
        assert float(question @ paraphrase) > float(question @ unrelated) + 0.05

    def test_any_script_and_empty_or_odd_texts_give_unit_rows(self, embedder: Embedder) -> None:
        vectors = embedder.embed(ODD)
        assert vectors.shape == (len(ODD), embedder.dim) and vectors.dtype == np.float32
        assert np.isfinite(vectors).all() and _unit_rows(vectors)

    def test_a_huge_text_is_embedded_not_refused(self, embedder: Embedder) -> None:
        huge = " ".join(f"Paragraph {i}: refunds, shipping times and warranty terms." for i in range(3000))
        vectors = embedder.embed([huge, "refund policy"])
        assert vectors.shape == (2, embedder.dim) and np.isfinite(vectors).all() and _unit_rows(vectors)
        np.testing.assert_allclose(vectors[1], embedder.embed(["refund policy"])[0],
                                   atol=max(self.repeat_atol, 1 - self.min_batch_cosine) * 10, rtol=0)

    def test_threads_embedding_at_once_each_get_their_own_rows(self, embedder: Embedder) -> None:
        texts = SENTENCES + list(PARAPHRASE[1:]) + [UNRELATED, "warranty", "opening hours"]
        expected = np.stack([embedder.embed([t])[0] for t in texts])
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(3):
                rows = np.stack(list(pool.map(lambda t: embedder.embed([t])[0], texts)))
                cosines = np.sum(expected.astype(np.float64) * rows, axis=1)
                assert cosines.min() >= self.min_batch_cosine, cosines


__all__ = ["EmbedderContract"]
