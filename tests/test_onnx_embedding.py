"""OnnxEmbedder against the torch reference: same vectors (fp32), close vectors (int8), one export per cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: `pip install onnxruntime onnx`")

from botkit.errors import EmbeddingError  # noqa: E402
from knowledge import onnx_embedding  # noqa: E402
from knowledge.embedding import SentenceTransformerEmbedder  # noqa: E402
from knowledge.models import default_model_path  # noqa: E402
from knowledge.onnx_embedding import OnnxEmbedder  # noqa: E402

pytestmark = pytest.mark.slow

LONG = " ".join(f"Paragraph {i}: the customer asked about refunds, shipping times and warranty terms."
                for i in range(40))
SENTENCES = [
    "hi", "ok", "Thanks!!", "no", "refund policy",
    "How do I reset my password?",
    "Can I change the shipping address after placing an order?",
    "Where is my order #12345?!",
    "error code 0x80070005 when installing — what now???",
    "email: john.doe@example.com, phone: +1-555-0100; ref=ABC/42",
    "Wie kann ich mein Passwort zurücksetzen?",
    "¿Dónde está mi pedido? Lo pedí hace dos semanas.",
    "Мой заказ не пришёл, что делать?",
    "配送にはどのくらい時間がかかりますか？",
    "Est-ce que je peux annuler mon abonnement à tout moment ?",
    "...!!!???",
    "The quick brown fox jumps over the lazy dog.",
    "Our warranty covers manufacturing defects for two years from the date of purchase, excluding accidental damage.",
    LONG,
    "cancel   my\tsubscription\nplease",
]
# Measured on this model (per-sentence cosine to torch fp32): fp32 min 1.0000. int8 (dynamic, per-channel
# weights, the encoding int8_weights_for_cpu picks):
#   Intel Xeon (VNNI, s8 weights): batch of 1: min 0.972, mean 0.990; all 20 in one batch: min 0.949, mean 0.987.
#   AMD EPYC (AVX2 only, u8 weights): batch 1: min 0.9640, mean 0.9895; batch 8: min 0.9582, mean 0.9874;
#     batch 64: min 0.9525, mean 0.9868. With s8 weights there (vpmaddubsw saturates in int16) batch 64 gave
#     min 0.9468, mean 0.9846, under the bound; with 7-bit s8 (reduce_range) min 0.9401, mean 0.9834.
# So one bound holds on both kinds. The worst are one- or two-token texts ("Thanks!!"), where mean pooling
# averages away little noise, and activation scales are per batch tensor, so a short text batched with a
# 256-token one is quantised more coarsely.
THRESHOLDS = {False: (0.999, 0.9999), True: (0.94, 0.985)}  # quantized -> (per-sentence min, mean)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return SentenceTransformerEmbedder(default_model_path()).embed(SENTENCES)


@pytest.fixture(scope="module", params=[False, True], ids=["fp32", "int8"])
def embedder(request: pytest.FixtureRequest, cache_dir: Path) -> OnnxEmbedder:
    emb = OnnxEmbedder(default_model_path(), quantized=request.param, batch_size=8, threads=2, cache_dir=cache_dir)
    emb.start()
    return emb


def test_long_sentence_is_truncated_input() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    assert len(tok(LONG)["input_ids"]) > 256  # so the truncation path is really exercised


@pytest.mark.parametrize("batch_size", [8, 64])
def test_matches_torch_reference(embedder: OnnxEmbedder, reference: np.ndarray, cache_dir: Path,
                                 batch_size: int) -> None:
    # 8: several length-sorted batches; 64 (the default): every text in one padded batch, the int8 worst case.
    emb = OnnxEmbedder(default_model_path(), quantized=embedder.quantized, batch_size=batch_size, cache_dir=cache_dir)
    cosines = (emb.embed(SENTENCES) * reference).sum(axis=1)
    min_cos, mean_cos = THRESHOLDS[embedder.quantized]
    worst = int(np.argmin(cosines))
    assert cosines.min() >= min_cos, f"{SENTENCES[worst][:40]!r}: cosine {cosines[worst]:.4f}"
    assert cosines.mean() >= mean_cos, f"mean cosine {cosines.mean():.4f}"


def test_shape_dtype_and_unit_norms(embedder: OnnxEmbedder) -> None:
    vectors = embedder.embed(SENTENCES)
    assert embedder.dim == 384
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_name(embedder: OnnxEmbedder) -> None:
    assert embedder.name == ("all-MiniLM-L6-v2:onnx-int8" if embedder.quantized else "all-MiniLM-L6-v2:onnx-fp32")


def test_order_preserved_with_mixed_lengths(embedder: OnnxEmbedder, reference: np.ndarray) -> None:
    # Interleave long and short texts so length-sorting reorders them across several batches.
    perm = np.random.default_rng(0).permutation(len(SENTENCES))
    vectors = embedder.embed([SENTENCES[i] for i in perm])
    similarity = vectors @ reference.T
    assert (similarity.argmax(axis=1) == perm).all()
    if not embedder.quantized:  # int8 activation scales depend on the batch; fp32 must not
        singles = np.vstack([embedder.embed([SENTENCES[i]]) for i in perm])
        np.testing.assert_allclose(vectors, singles, atol=1e-4)


def test_empty_input(embedder: OnnxEmbedder) -> None:
    out = embedder.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_second_start_reuses_cached_file(embedder: OnnxEmbedder, cache_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = embedder.onnx_path
    assert path is not None and path.parent == cache_dir and path.exists()
    mtime = path.stat().st_mtime_ns

    def fail(*_: object) -> None:
        raise AssertionError("the model was exported/quantised again")

    monkeypatch.setattr(onnx_embedding, "_export_fp32", fail)
    monkeypatch.setattr(onnx_embedding, "_quantize", fail)
    again = OnnxEmbedder(default_model_path(), quantized=embedder.quantized, cache_dir=cache_dir)
    again.start()
    again.start()  # idempotent
    assert again.onnx_path == path and path.stat().st_mtime_ns == mtime
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
    np.testing.assert_allclose(again.embed(SENTENCES[:3]), embedder.embed(SENTENCES[:3]), atol=1e-6)


def test_int8_weights_follow_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_embedding, "has_vnni", lambda: True)
    assert OnnxEmbedder(default_model_path(), quantized=True).int8_weights == "s8"
    monkeypatch.setattr(onnx_embedding, "has_vnni", lambda: False)
    assert OnnxEmbedder(default_model_path(), quantized=True).int8_weights == "u8"
    assert OnnxEmbedder(default_model_path(), quantized=True, int8_weights="s8").int8_weights == "s8"
    with pytest.raises(EmbeddingError, match="allowed: auto, s8, u8"):
        OnnxEmbedder(default_model_path(), quantized=True, int8_weights="int4")


def test_int8_kernel_chosen_for_this_cpu_is_exact() -> None:
    # The invariant behind int8_weights_for_cpu, checked on whatever CPU runs this: onnxruntime's
    # MatMulInteger with the chosen weight type equals exact integer arithmetic (no int16 saturation).
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weights = onnx_embedding.int8_weights_for_cpu()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 384)).astype(np.uint8)
    b = (rng.integers(0, 256, (384, 384)).astype(np.uint8) if weights == "u8"
         else rng.integers(-128, 128, (384, 384)).astype(np.int8))
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "g",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, list(a.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [64, 384])],
                              [onnx.numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"A": a})[0]
    assert (out == a.astype(np.int64) @ b.astype(np.int64)).all(), f"{weights} weights saturate on this CPU"


def test_int8_weight_encoding_is_part_of_the_cache_name(embedder: OnnxEmbedder, cache_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if not embedder.quantized:
        pytest.skip("int8 only")
    built: list[str] = []

    def fake_quantize(weights: str, _src: Path, dest: Path) -> None:
        built.append(weights)
        dest.write_bytes(b"not a model")

    monkeypatch.setattr(onnx_embedding, "_quantize", fake_quantize)
    other = next(w for w in onnx_embedding.INT8_WEIGHTS if w != embedder.int8_weights)
    path = OnnxEmbedder(default_model_path(), quantized=True, int8_weights=other, cache_dir=cache_dir)._ensure_files()
    assert built == [other] and path != embedder.onnx_path and path.name.endswith(f"-int8-{other}.onnx")
    assert embedder.onnx_path is not None and embedder.onnx_path.name.endswith(f"-int8-{embedder.int8_weights}.onnx")
    path.unlink()


def test_missing_onnxruntime_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(EmbeddingError, match="pip install onnxruntime onnx"):
        OnnxEmbedder(default_model_path(), cache_dir=tmp_path).start()


@pytest.mark.parametrize(("vnni", "expected"), [(True, "onnx-int8"), (False, "torch-fp32")])
def test_the_auto_backend_is_int8_only_where_the_cpu_has_vnni(monkeypatch: pytest.MonkeyPatch, vnni: bool,
                                                              expected: str) -> None:
    from knowledge import embedding

    monkeypatch.setattr(embedding, "has_vnni", lambda: vnni)
    assert embedding.auto_backend() == expected
    built = embedding.make_embedder("default", "auto")
    assert built.name == f"all-MiniLM-L6-v2:{expected}"  # the name (index, caches) is the concrete backend's
    if vnni:
        assert isinstance(built, OnnxEmbedder) and built.quantized


def test_the_auto_backend_falls_back_to_torch_without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from knowledge import embedding

    monkeypatch.setattr(embedding, "has_vnni", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(embedding.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert embedding.auto_backend() == "torch-fp32"


def test_auto_is_a_valid_backend_and_a_wrong_one_names_it() -> None:
    from pydantic import ValidationError

    from botkit.config import EmbeddingConfig
    from knowledge.embedding import make_embedder

    assert EmbeddingConfig.model_validate({"backend": "auto"}).backend == "auto"
    with pytest.raises(ValidationError, match="auto"):
        EmbeddingConfig.model_validate({"backend": "onnx-int4"})
    with pytest.raises(EmbeddingError, match="allowed: auto, torch-fp32"):
        make_embedder("default", "onnx-int4")
