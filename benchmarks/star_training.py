"""STAR dialogues -> botkit transcripts -> ``training.transcripts.prepare`` -> a tiny GPT-2 base
(``training.tiny.build_tiny_base``) -> a short LoRA run with botkit's ``training.lora.train``,
beside a TRL ``SFTTrainer`` baseline on the same base model and the same examples.

Conversion: the first ``--dialogues`` dialogues of dialogues.jsonl.gz (file order), User
``utter`` -> customer, Wizard ``utter`` -> agent. In STAR most wizard messages are
``pick_suggestion`` events (a suggested reply the wizard picked and sent): they are agent
messages too unless ``--utter-only``. Every other event (instructions, requests for suggestions,
API queries, KB results, "complete") is skipped. UnixTime -> ISO time.

Training: both runs load the same tiny base, the same prepared train.jsonl, the same examples
(botkit's ``build_examples``: system prompt, chat template, one example per agent reply, prompt
cut from the left to ``--max-length``, loss on the reply only) and the same LoRA settings (r,
alpha, dropout, c_attn with fan_in_fan_out), fp32, no gradient checkpointing, same steps, batch,
learning rate, warm-up and seed; both get validation.jsonl as the eval set with botkit's eval_steps (50),
so both evaluate once inside ``train()`` at the last step. TRL gets the examples pre-tokenised (``input_ids`` +
``completion_mask``), so both trainers see identical tokens. Each run is a child process
(``--child``), so its peak RSS is its own (``ru_maxrss`` of the child, cross-checked with
``RUSAGE_CHILDREN`` in the parent). tokens/s = non-padding input tokens seen / ``trainer.train()``
seconds, for both.

    python benchmarks/star_training.py [--data ../shared/datasets] [--dialogues 300] [--max-steps 40]
                                       [--batch-size 4] [--max-length 256] [--threads 2] [--utter-only]
                                       [--base HF_DIR] [--targets q_proj,k_proj,v_proj,o_proj] [--lora-r 16]
                                       [--transcripts demo/transcripts] [--no-eval] [--runs botkit,trl]

``--base`` trains a real model instead of the tiny GPT-2 (e.g. Gemma 3 270M as ``botkit train
base`` installs it); ``--transcripts`` uses botkit transcripts (e.g. the demo's) instead of STAR;
``--no-eval`` leaves validation.jsonl out of both runs (timing the training steps only).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.common import log

LORA_R, LORA_ALPHA, LORA_DROPOUT, TARGETS = 8, 16, 0.05, ["c_attn"]
LR, WARMUP, SEED, BOT_NAME = 2e-4, 0.03, 42, "Support"


# -- conversion -------------------------------------------------------------------------------
def convert(src: Path, dest: Path, n: int, utter_only: bool) -> dict[str, int]:
    counts = {"dialogues": 0, "customer": 0, "agent_utter": 0, "agent_pick_suggestion": 0, "skipped_events": 0}
    agent_actions = {"utter"} if utter_only else {"utter", "pick_suggestion"}
    with gzip.open(src, "rt", encoding="utf-8") as fh, dest.open("w", encoding="utf-8") as out:
        for line in fh:
            if counts["dialogues"] >= n:
                break
            d = json.loads(line)
            msgs = []
            for e in d.get("Events", []):
                agent, action, text = e.get("Agent"), e.get("Action"), e.get("Text")
                when = e.get("UnixTime")
                iso = datetime.fromtimestamp(when, UTC).isoformat() if isinstance(when, (int, float)) else None
                if agent == "User" and action == "utter" and isinstance(text, str):
                    msgs.append({"role": "customer", "text": text, "time": iso})
                    counts["customer"] += 1
                elif agent == "Wizard" and action in agent_actions and isinstance(text, str):
                    msgs.append({"role": "agent", "text": text, "time": iso})
                    counts[f"agent_{action}"] += 1
                else:
                    counts["skipped_events"] += 1
            meta = {"source": "STAR", "scenario": (d.get("Scenario") or {}).get("Domains"),
                    "completion": d.get("CompletionLevel")}
            out.write(json.dumps({"id": f"star-{d['DialogueID']}", "messages": msgs, "meta": meta}) + "\n")
            counts["dialogues"] += 1
    return counts


# -- children -------------------------------------------------------------------------------
def _examples(base: Path, train_dir: Path, max_length: int, split: str = "train"):
    from transformers import AutoTokenizer

    from training.sft import build_examples
    from training.types import read_prepared

    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    path = train_dir / f"{split}.jsonl"
    examples = build_examples(read_prepared(path), tok, max_length, bot_name=BOT_NAME) if path.is_file() else []
    return tok, examples


def _targets(a) -> list[str]:
    return [t for t in (a.targets or ",".join(TARGETS)).split(",") if t]


def child_botkit(a) -> dict:
    from training.config import LoraSettings, TrainConfig
    from training.lora import train

    cfg = TrainConfig(base_model=str(a.base), output_dir=str(a.out), lora=LoraSettings(
        r=a.lora_r, alpha=2 * a.lora_r, dropout=LORA_DROPOUT, target_modules=_targets(a)), learning_rate=LR,
        max_steps=a.max_steps, batch_size=a.batch_size, max_length=a.max_length, warmup_ratio=WARMUP, seed=SEED,
        bot_name=BOT_NAME, threads=a.threads, resume=False)
    t0 = time.perf_counter()
    res = train(cfg, a.train_dir)
    m = res.metrics
    return {"steps": m["steps"], "runtime_s": m["runtime_s"], "tokens_seen": m["tokens_seen"],
            "tokens_per_s": m["tokens_per_s"], "train_loss": m["train_loss"], "examples": m["train_examples"],
            "trainable_params": m["trainable_params"], "eval_loss": m["eval_loss"], "dtype": m.get("dtype"),
            "call_s": time.perf_counter() - t0}


def child_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    if a.threads:
        torch.set_num_threads(a.threads)
    set_seed(SEED)
    t0 = time.perf_counter()
    tok, examples = _examples(a.base, a.train_dir, a.max_length)
    _, val_examples = _examples(a.base, a.train_dir, a.max_length, "validation")

    def dataset(exs):
        return Dataset.from_list([{"input_ids": e["input_ids"],
                                   "completion_mask": [int(x != -100) for x in e["labels"]]}
                                  for e in exs]) if exs else None

    rows, ds, val_ds = examples, dataset(examples), dataset(val_examples)
    model = AutoModelForCausalLM.from_pretrained(str(a.base), local_files_only=True)
    targets = _targets(a)
    conv1d = any(type(m).__name__ == "Conv1D" and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules())
    peft_cfg = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=LORA_DROPOUT, target_modules=targets,
                          fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=str(a.out / "checkpoints"), learning_rate=LR, max_steps=a.max_steps,
                     per_device_train_batch_size=a.batch_size, warmup_steps=WARMUP, seed=SEED,
                     max_length=a.max_length, completion_only_loss=True, packing=False,
                     per_device_eval_batch_size=a.batch_size, eval_strategy="steps" if val_ds else "no", eval_steps=50,
                     gradient_checkpointing=False, bf16=False, logging_steps=10, logging_first_step=True,
                     save_strategy="steps", save_steps=50, save_total_limit=2, report_to=[], use_cpu=True,
                     include_num_input_tokens_seen="non_padding", dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, eval_dataset=val_ds, processing_class=tok,
                         peft_config=peft_cfg)
    t1 = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - t1
    trainer.model.save_pretrained(str(a.out))
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    return {"steps": int(trainer.state.global_step), "runtime_s": round(runtime, 3), "tokens_seen": tokens,
            "tokens_per_s": round(tokens / runtime, 1), "train_loss": float(result.training_loss),
            "examples": len(rows), "trainable_params": sum(p.numel() for p in trainer.model.parameters()
                                                           if p.requires_grad),
            "eval_loss": None, "dtype": "fp32", "call_s": time.perf_counter() - t0}


def child_main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=["botkit", "trl"])
    for k in ("base", "train_dir", "out", "result"):
        p.add_argument(f"--{k.replace('_', '-')}", type=Path)
    for k in ("max_steps", "batch_size", "max_length", "threads", "lora_r"):
        p.add_argument(f"--{k.replace('_', '-')}", type=int)
    p.add_argument("--targets", default="")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = (child_botkit if a.child == "botkit" else child_trl)(a)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a.result.write_text(json.dumps(out), encoding="utf-8")


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--dialogues", type=int, default=300)
    p.add_argument("--utter-only", action="store_true", help="agent messages from Wizard 'utter' events only")
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--runs", default="botkit,trl", help="which trainers, in this order")
    p.add_argument("--base", type=Path, default=None, help="a Hugging Face causal-LM directory instead of the "
                   "tiny GPT-2 (e.g. ~/.cache/botkit/models/gemma-3-270m/hf)")
    p.add_argument("--targets", default=",".join(TARGETS), help="LoRA target modules, comma-separated")
    p.add_argument("--lora-r", type=int, default=LORA_R, help="LoRA rank (alpha = 2 r)")
    p.add_argument("--transcripts", type=Path, default=None, help="botkit transcripts (file or folder, e.g. "
                   "demo/transcripts) instead of STAR")
    p.add_argument("--no-eval", action="store_true", help="no validation set in either run")
    args = p.parse_args()
    src = args.transcripts if args.transcripts else common.data_path(args, "star", "dialogues.jsonl.gz")

    import peft
    import transformers

    try:
        import trl
        trl_v = trl.__version__
    except ImportError:
        trl_v = "absent"
    from botkit.cpu import describe

    common.print_header("STAR -> prepare -> LoRA: botkit training.lora.train vs TRL SFTTrainer", [
        (f"data: botkit transcripts {src}" if args.transcripts else
         f"data: first {args.dialogues} dialogues of {src}; agent = Wizard utter"
         + ("" if args.utter_only else " + pick_suggestion")) + ("; no eval set" if args.no_eval else ""),
        f"base: {args.base}" if args.base else
        f"base: build_tiny_base(n_layer={args.n_layer}, n_embd={args.n_embd}, vocab 2000) on the prepared train text",
        f"cpu: {describe()}",
        f"LoRA r={args.lora_r} alpha={2 * args.lora_r} dropout={LORA_DROPOUT} targets={args.targets}; "
        f"lr {LR}, warmup {WARMUP}, "
        f"seed {SEED}, max_steps {args.max_steps}, batch {args.batch_size}, max_length {args.max_length}, "
        f"torch threads {args.threads}, fp32",
        f"transformers {transformers.__version__}, peft {peft.__version__}, trl {trl_v}",
        "each trainer runs in its own child process; peak RSS = that child's ru_maxrss",
    ])
    from training.redact import Redactor
    from training.tiny import build_tiny_base
    from training.transcripts import prepare
    from training.types import read_prepared

    work = common.workdir()
    raw = work / "raw"
    raw.mkdir()
    t0 = time.perf_counter()
    if args.transcripts:
        sources = [args.transcripts]
        counts = {"dialogues": 0, "customer": 0, "agent_utter": 0, "agent_pick_suggestion": 0, "skipped_events": 0}
    else:
        sources = [raw / "star.jsonl"]
        counts = convert(src, raw / "star.jsonl", args.dialogues, args.utter_only)
    conv_s = time.perf_counter() - t0
    log(f"converted: {counts} in {conv_s:.1f}s")
    prepared = work / "prepared"
    t0 = time.perf_counter()
    report = prepare(sources, prepared, redactor=Redactor())
    prep_s = time.perf_counter() - t0
    log(f"prepare: kept {report.kept} ({report.train} train, {report.validation} validation) in {prep_s:.2f}s")
    common.print_table(["step", "in", "out", "dropped"],
                       [(s["step"], s["in"], s["out"], s["in"] - s["out"]) for s in report.steps],
                       title=f"prepare() on {counts['dialogues']} converted dialogues: {prep_s:.2f}s "
                             f"(conversion {conv_s:.2f}s; {counts['customer']} customer, {counts['agent_utter']} "
                             f"agent utter, {counts['agent_pick_suggestion']} agent pick_suggestion messages, "
                             f"{counts['skipped_events']} other events skipped)")
    print("dropped: " + (", ".join(f"{k} {v}" for k, v in sorted(report.dropped.items())) or "none")
          + "; redactions: " + (", ".join(f"{k} {v}" for k, v in sorted(report.redactions.items())) or "none"))
    print()

    if args.no_eval:
        (prepared / "validation.jsonl").unlink(missing_ok=True)
    if args.base:
        base = args.base.expanduser().resolve()
    else:
        texts = [m.text for t in read_prepared(prepared / "train.jsonl") for m in t.messages]
        t0 = time.perf_counter()
        base = build_tiny_base(texts, work / "base", n_layer=args.n_layer, n_embd=args.n_embd)
        log(f"tiny base built from {len(texts)} messages in {time.perf_counter() - t0:.1f}s")

    results = {}
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        res_file = work / f"{name}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--base", str(base),
               "--train-dir", str(prepared), "--out", str(work / f"out-{name}"), "--result", str(res_file),
               "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--threads", str(args.threads),
               "--lora-r", str(args.lora_r), "--targets", args.targets]
        log(f"{name}: training in a child process...")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0 or not res_file.exists():
            log(f"{name}: FAILED (exit {proc.returncode})")
            results[name] = None
            continue
        r = json.loads(res_file.read_text())
        r["wall_s"] = wall
        r["children_maxrss_mib"] = after if after > before else None  # None: an earlier child was larger
        results[name] = r
        log(f"{name}: {r}")

    labels = {"botkit": "botkit training.lora.train", "trl": f"TRL SFTTrainer {trl_v} + peft LoraConfig"}
    rows = []
    for name, r in results.items():
        if r is None:
            rows.append((labels[name], *(["failed"] + [None] * 8)))
            continue
        rows.append((labels[name], r["examples"], r["steps"], r["tokens_seen"], r["tokens_per_s"], r["runtime_s"],
                     r["wall_s"], r["peak_rss_mib"], r["train_loss"]))
    common.print_table(["trainer", "examples", "steps", "tokens seen", "tokens/s", "train() s", "process wall s",
                        "peak RSS MiB", "train loss"], rows,
                       title="same base, same examples, same LoRA settings (tokens = non-padding input tokens)")
    common.print_footer()


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(sys.argv[1:])
    else:
        main()
