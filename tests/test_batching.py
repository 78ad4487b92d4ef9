"""Query micro-batching gives the same vectors as one-by-one embedding, from many threads."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from knowledge.batching import BatchingEmbedder

pytestmark = pytest.mark.slow


def test_concurrent_single_queries_are_batched_and_identical(embedder):
    texts = [f"where is my order number {i}, it is late" for i in range(48)]
    expected = embedder.embed(texts)
    batching = BatchingEmbedder(embedder)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda t: batching.embed([t])[0], texts))
    assert np.allclose(np.stack(got), expected, atol=1e-5)  # each caller got its own vector back
    assert batching.queries == 48 and batching.batches < 48  # and some were embedded together
    assert batching.name == embedder.name and batching.dim == embedder.dim


def test_bulk_calls_pass_through_and_errors_reach_every_waiter(embedder):
    batching = BatchingEmbedder(embedder)
    assert batching.embed(["a", "b"]).shape == (2, embedder.dim) and batching.batches == 0

    class Failing:
        name, dim = "failing", 3

        def start(self):
            pass

        def embed(self, texts):
            raise RuntimeError("model exploded")

    broken = BatchingEmbedder(Failing())
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(broken.embed, [f"q{i}"]) for i in range(8)]
        errors = [f.exception(timeout=10) for f in futures]
    assert all(isinstance(e, RuntimeError) for e in errors)


def test_an_embedder_with_its_own_query_embedding_is_batched_apart():
    """e5-style embedders embed queries with a prefix: single queries are batched through
    embed_queries, never mixed with passages in one forward pass."""
    import threading
    import time

    class Prefixed:
        name, dim = "prefixed", 4

        def __init__(self):
            self.calls: list[tuple[str, int]] = []
            self.lock = threading.Lock()

        def start(self):
            pass

        def _vec(self, texts, kind):
            with self.lock:
                self.calls.append((kind, len(texts)))
            time.sleep(0.02)  # a forward pass takes a while: callers queue up behind it
            return np.array([[float(len(t)), 1.0 if kind == "query" else 0.0, 0.0, 0.0] for t in texts])

        def embed(self, texts):
            return self._vec(texts, "passage")

        def embed_queries(self, texts):
            return self._vec(texts, "query")

    inner = Prefixed()
    batching = BatchingEmbedder(inner)
    texts = [f"question {'x' * i}" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        queries = list(pool.map(lambda t: batching.embed_queries([t])[0], texts))
        passages = list(pool.map(lambda t: batching.embed([t])[0], texts))
    assert [q[0] for q in queries] == [float(len(t)) for t in texts] and all(q[1] == 1.0 for q in queries)
    assert all(p[1] == 0.0 for p in passages)  # a passage never went through embed_queries
    query_calls = [n for kind, n in inner.calls if kind == "query"]
    assert sum(query_calls) == 24 and len(query_calls) < 24  # batched, not one call per query
    assert batching.queries == 48 and batching.batches == len(inner.calls)
    assert batching.embed_queries(["a", "b"]).shape == (2, 4) and inner.calls[-1] == ("query", 2)
