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
