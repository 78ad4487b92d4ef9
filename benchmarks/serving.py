"""Serving Gemma 3 270M on this CPU: time to first token and tokens/s per backend, side by side,
then p95 time to first token and total latency at N concurrent generations.

Backends (one run, same prompts):

* transformers fp32, KV cache on (what ``backend: transformers`` serves);
* transformers bf16 (``model.to(torch.bfloat16)``): native only with AVX512-BF16/AMX, labelled
  "emulated" elsewhere (botkit.cpu.has_native_bf16());
* transformers fp32 with dynamic int8 linear layers (``torch.ao.quantization.quantize_dynamic``);
* llama.cpp on the shipped Q4_K_M GGUF (``backend: llama-cpp``), cold (no cached prefix) and
  warm (the previous request's prefix cached, the serving steady state);
* llama.cpp on a GGUF exported by training/export_gguf.py (``--exported FILE``), if given.

A typical prompt is the real system prompt (``botkit.generation.prompt.build_messages``) with 3
demo help-centre passages and a demo customer question, rendered with the model's chat template.
Each timed request is a different question with its own passages. For tokens/s every backend
generates exactly ``--new-tokens`` tokens (EOS ignored); the concurrency runs go through the
serving generators (LocalCausalLM, LlamaCppLM: FIFO turns, stop at end of turn).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, log, parser, percentile, print_footer, print_header, print_table

KB = REPO / "demo" / "kb"


# --- prompts -------------------------------------------------------------------------------

def demo_hits(article_id: str) -> list[Any]:
    """Three passages as retrieval would return them: the article's intro and its first sections."""
    from botkit.types import Hit

    text = (KB / f"{article_id}.md").read_text(encoding="utf-8")
    _, front, body = text.split("---", 2)
    m = re.search(r"^title:\s*(.+)$", front, re.MULTILINE)
    title = m.group(1).strip() if m else article_id
    parts = [p.strip() for p in re.split(r"\n## ", body.strip()) if p.strip()]
    hits = []
    for i, part in enumerate(parts[:3]):
        heading, _, passage = part.partition("\n") if i else ("", "", part)
        hits.append(Hit(article_id=article_id, title=title, kind="article", score=0.8 - 0.05 * i,
                        dense_score=0.8 - 0.05 * i, lexical_score=0.0, chunk_id=i,
                        heading=" > ".join(x for x in (title, heading.strip()) if x), passage=passage.strip() or part))
    return hits


def typical_requests(n: int) -> list[list[Any]]:
    """``n`` message lists: demo questions, each with 3 passages of its expected article (padded from others)."""
    from botkit.generation.prompt import build_messages
    from botkit.types import IncomingMessage, ResponderRequest, SearchResult

    rows = [json.loads(line) for line in (REPO / "demo" / "eval" / "queries.jsonl").read_text().splitlines()
            if line.strip()]
    out = []
    articles = sorted(p.stem for p in KB.glob("*.md"))
    for row in rows:
        if not (KB / f"{row['expected']}.md").is_file():
            continue
        hits = demo_hits(row["expected"])
        k = 0
        while len(hits) < 3:
            extra = demo_hits(articles[(articles.index(row["expected"]) + 1 + k) % len(articles)])
            hits.append(extra[0])
            k += 1
        req = ResponderRequest(query=row["query"], message=IncomingMessage(f"bench-{len(out)}", row["query"]),
                               history=(),
                               retrieval=SearchResult(row["query"], tuple(hits), kb_version=1, threshold=0.45),
                               bot_name="Tallow & Pine help")
        out.append(build_messages(req, hits, 0))
        if len(out) == n:
            break
    return out


# --- transformers --------------------------------------------------------------------------

def hf_variant(hf_dir: Path, variant: str, threads: int) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True, dtype=torch.float32).eval()
    if variant == "bf16":
        model = model.to(torch.bfloat16)
    elif variant == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tok, model


def hf_time(tok: Any, model: Any, messages: list[Any], new_tokens: int) -> dict[str, float]:
    """One greedy generate() of exactly ``new_tokens`` with the KV cache: TTFT and decode tokens/s."""
    import torch

    from botkit.generation.prompt import render_prompt

    ids = tok(render_prompt(tok, messages, 1536), add_special_tokens=False, return_tensors="pt")["input_ids"]
    stamps: list[float] = []
    out: list[int] = []

    class Clock:
        def put(self, value: Any) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) > 1:
                out.extend(int(v) for v in value.reshape(-1).tolist())

        def end(self) -> None:
            pass

    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, temperature=None, top_p=None, top_k=None, streamer=Clock(),
                       pad_token_id=tok.pad_token_id)
    new = stamps[1:]  # the first put() is the prompt
    return {"prompt": ids.shape[1], "ttft": new[0] - t0, "tps": (len(new) - 1) / (new[-1] - new[0]), "n": len(new),
            "ids": out}


# --- llama.cpp -----------------------------------------------------------------------------

async def llama_lm(hf_dir: Path, gguf: Path, threads: int, new_tokens: int) -> Any:
    from botkit.config import LocalLMConfig
    from botkit.generation.llamacpp import LlamaCppLM

    cfg = LocalLMConfig(model_path=str(hf_dir), backend="llama-cpp", gguf_path=str(gguf), threads=threads,
                        max_new_tokens=new_tokens, max_time_s=600)
    lm = LlamaCppLM(cfg, Path("/"))
    await lm.start()
    return lm


def llama_time(lm: Any, messages: list[Any], new_tokens: int, cold: bool) -> dict[str, float]:
    ids, _ = lm._prepare(messages)
    llm = lm.llm
    cached = 0
    if cold:
        llm.reset()
    else:
        for a, b in zip(llm._input_ids, ids):
            if a != b:
                break
            cached += 1
    stamps: list[float] = []
    t0 = time.perf_counter()
    gen = llm.generate(ids, temp=0.0, repeat_penalty=1.0)
    try:
        out: list[int] = []
        for token in gen:
            stamps.append(time.perf_counter())
            out.append(int(token))
            if len(stamps) >= new_tokens:
                break
    finally:
        gen.close()
    tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"prompt": len(ids), "ttft": stamps[0] - t0, "tps": tps,
            "n": len(stamps), "cached": cached, "ids": out}


# --- concurrency ---------------------------------------------------------------------------

async def concurrent(lm: Any, requests: list[list[Any]]) -> dict[str, float]:
    """All requests at once through the serving generator: p50/p95 TTFT and total latency."""
    ttft: list[float] = []
    total: list[float] = []
    tokens = 0

    async def one(msgs: list[Any]) -> None:
        nonlocal tokens
        t0 = time.perf_counter()
        first = None
        pieces = []
        async with aclosing(lm.stream(msgs)) as deltas:
            async for d in deltas:
                if first is None:
                    first = time.perf_counter() - t0
                pieces.append(d)
        total.append(time.perf_counter() - t0)
        ttft.append(first if first is not None else total[-1])
        tokens += len(lm.tokenizer("".join(pieces), add_special_tokens=False)["input_ids"])

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in requests))
    wall = time.perf_counter() - t0
    return {"n": len(requests), "ttft50": percentile(ttft, 0.5), "ttft95": percentile(ttft, 0.95),
            "tot50": percentile(total, 0.5), "tot95": percentile(total, 0.95), "wall": wall,
            "tokens": tokens / len(requests)}


async def main_async(args: Any) -> None:
    import torch

    from botkit import cpu
    from botkit.config import LocalLMConfig
    from botkit.generation.local import LocalCausalLM

    hf_dir, gguf = Path(args.model).expanduser(), Path(args.gguf).expanduser()
    native = cpu.has_native_bf16()
    bf16_label = "transformers bf16" + ("" if native else " (emulated: no avx512_bf16/amx)")
    print_header("serving.py: Gemma 3 270M, time to first token and tokens/s per backend", [
        f"cpu: {cpu.describe()}",
        f"model: {hf_dir} (fp32 safetensors, dequantised from the Q4_K_M GGUF); gguf: {gguf}",
        f"{args.new_tokens} new tokens per timed request (EOS ignored), {args.repeats} timed requests per backend "
        f"after 1 warm-up, threads={args.threads}; concurrency: {args.concurrent} requests at once, "
        f"max_new_tokens={args.new_tokens}, stop at end of turn",
    ])
    requests = typical_requests(args.repeats + 1 + args.concurrent)
    warm, timed, crowd = requests[0], requests[1:args.repeats + 1], requests[args.repeats + 1:]
    rows: list[list[Any]] = []
    reference: list[list[int]] = []  # fp32's greedy tokens per timed request

    def agreement(runs: list[dict[str, Any]]) -> float | None:
        """Mean share of fp32's greedy tokens reproduced before the first difference."""
        if not reference:
            return None
        shares = []
        for ref, r in zip(reference, runs):
            same = next((i for i, (a, b) in enumerate(zip(ref, r["ids"])) if a != b), min(len(ref), len(r["ids"])))
            shares.append(same / max(1, min(len(ref), len(r["ids"]))))
        return sum(shares) / len(shares)

    def add(label: str, runs: list[dict[str, Any]], note: str = "") -> None:
        rows.append([label, round(sum(r["prompt"] for r in runs) / len(runs)),
                     percentile([r["ttft"] * 1000 for r in runs], 0.5), max(r["ttft"] * 1000 for r in runs),
                     percentile([r["tps"] for r in runs], 0.5), agreement(runs), note])
        log(f"{label}: {rows[-1]}")

    for variant in args.hf:
        label = {"fp32": "transformers fp32", "bf16": bf16_label, "int8": "transformers int8 dynamic (Linear)"}[variant]
        log(f"loading {label}")
        tok, model = hf_variant(hf_dir, variant, args.threads)
        n = args.new_tokens if variant != "bf16" or native else max(8, args.new_tokens // 4)
        reps = timed if variant != "bf16" or native else timed[:1]
        hf_time(tok, model, warm, 4)
        runs = [hf_time(tok, model, m, n) for m in reps]
        if variant == "fp32":
            reference[:] = [r["ids"] for r in runs]
        add(label, runs, f"{n} tokens" if n != args.new_tokens else "")
        del model
    ggufs = [("llama.cpp Q4_K_M (shipped)", gguf)]
    for exported in args.exported:
        ggufs.append((f"llama.cpp {Path(exported).stem} (exported)", Path(exported)))
    for label, path in ggufs:
        log(f"loading {label}")
        lm = await llama_lm(hf_dir, path, args.threads, args.new_tokens)
        llama_time(lm, warm, 4, cold=False)
        add(f"{label}, cold", [llama_time(lm, m, args.new_tokens, cold=True) for m in timed], "no cached prefix")
        warm_runs = []
        for m in timed:
            llama_time(lm, warm, 1, cold=True)  # the previous request: another question, other passages
            warm_runs.append(llama_time(lm, m, args.new_tokens, cold=False))
        cached = round(sum(r["cached"] for r in warm_runs) / len(warm_runs))
        add(f"{label}, warm", warm_runs, f"{cached} prompt tokens cached")
        await lm.close()
    print_table(["backend", "prompt tokens", "TTFT p50 ms", "TTFT max ms", "tokens/s", "= fp32 tokens", "note"], rows,
                "Sequential requests (one at a time)")

    crow: list[list[Any]] = []
    servers: list[tuple[str, Any]] = []
    if "fp32" in args.hf and args.concurrent:
        cfg = LocalLMConfig(model_path=str(hf_dir), threads=args.threads, max_new_tokens=args.new_tokens,
                            max_time_s=600)
        servers.append(("transformers fp32", lambda: LocalCausalLM(cfg, Path("/"))))
    if args.concurrent:
        servers.append(("llama.cpp Q4_K_M (shipped)", None))
    for label, make in servers:
        log(f"concurrency {args.concurrent}: {label}")
        lm = make() if make else await llama_lm(hf_dir, gguf, args.threads, args.new_tokens)
        if make:
            await lm.start()
        await concurrent(lm, [warm])
        r = await concurrent(lm, crowd)
        crow.append([label, r["n"], r["tokens"], r["ttft50"] * 1000, r["ttft95"] * 1000, r["tot50"], r["tot95"],
                     r["wall"]])
        log(f"{label}: {crow[-1]}")
        await lm.close()
        del lm
    if crow:
        print_table(["backend", "concurrent", "tokens/reply", "TTFT p50 ms", "TTFT p95 ms", "total p50 s",
                     "total p95 s", "wall s"], crow,
                    f"{args.concurrent} concurrent generations (FIFO turns, one at a time)")
    print(f"torch {torch.__version__}, llama-cpp-python {_version('llama-cpp-python')}")
    print_footer()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    default_hf = default_gguf = None
    try:
        from training.pretrained import installed

        model = installed("gemma-3-270m")
        if model is not None:
            default_hf, default_gguf = model.hf_dir, model.gguf_path
    except ImportError:
        pass
    p.add_argument("--model", default=default_hf, required=default_hf is None,
                   help="HF model directory (default: the installed Gemma 3 270M)")
    p.add_argument("--gguf", default=default_gguf, required=default_gguf is None, help="the GGUF to serve")
    p.add_argument("--exported", nargs="*", default=[],
                   help="also time these GGUFs (e.g. from training/export_gguf.py)")
    p.add_argument("--hf", nargs="*", default=["fp32", "bf16", "int8"], choices=["fp32", "bf16", "int8"])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
