"""LoRA (or full) fine-tuning of a local causal LM on a prepared transcript data set.

``train(config, train_dir)`` writes into ``config.output_dir``::

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (dialogue.local_lm.adapter_path)
                                                     (full_finetune: config.json + model weights)
    tokenizer files                                   the base model's tokenizer, for merging/serving
    train_config.yaml                                 the resolved config (target modules filled in)
    metrics.json                                      losses, perplexity, tokens/s, steps, runtime, memory, data hash
    loss.png                                          train and eval loss curves
    checkpoints/checkpoint-N/                         Trainer checkpoints; a rerun resumes from the newest

Runs unchanged under ``torchrun --nproc_per_node N``: the Trainer sets up DDP (gloo on CPU,
nccl on GPUs); only rank 0 writes the artefacts. ``batch_size`` is per process.

Heavy imports (torch, transformers, peft, matplotlib) happen inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainConfig, TrainingError, dump_train_config
from training.sft import DataCollator, Retrieve, SFTStats, build_examples
from training.types import read_prepared

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.yaml"
LOSS_PLOT = "loss.png"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path  # == output_dir; the LoRA adapter (or full model) lives there
    metrics: dict[str, Any]
    resumed_from: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the trained model in memory (PeftModel for LoRA)


# --- checks -----------------------------------------------------------------------------------

def check_causal_lm(path: Path, key: str = "base_model") -> Any:
    """The model's AutoConfig, or TrainingError saying why ``path`` is not a usable causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from botkit.generation.local import _ENCODER_TYPES

    what = "set it to a local causal-LM directory (config.json, tokenizer and weights, e.g. a GPT-2, Llama or Qwen export)"
    if not path.exists():
        raise TrainingError(f"{key}: {path} does not exist; {what}")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise TrainingError(f"{key}: {path} is not a Hugging Face model directory (no config.json); {what}")
    try:
        cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises ValueError/OSError/KeyError here
        raise TrainingError(f"{key}: {path}/config.json could not be read ({exc}); {what}") from exc
    causal_names = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for n in ((v,) if isinstance(v, str) else v)}
    archs = list(getattr(cfg, "architectures", None) or [])
    causal = (not getattr(cfg, "is_encoder_decoder", False)
              and cfg.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
              and (any(a in causal_names or a.endswith("ForCausalLM") for a in archs) if archs
                   else cfg.model_type not in _ENCODER_TYPES or bool(getattr(cfg, "is_decoder", False))))
    if not causal:
        is_st = (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file()
        kind = "a sentence-transformers embedding model" if is_st else "not a causal (decoder) language model"
        raise TrainingError(f"{key}: {path} holds {', '.join(archs) or cfg.model_type}, {kind}; it cannot be "
                            f"fine-tuned to write replies. {what[0].upper()}{what[1:]}")
    return cfg


def data_hash(train_dir: Path) -> str:
    """sha256 over train.jsonl and validation.jsonl (names and bytes), the data set's identity."""
    h = hashlib.sha256()
    for name in ("train.jsonl", "validation.jsonl"):
        p = train_dir / name
        if p.is_file():
            h.update(name.encode() + b"\0")
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def default_target_modules(model: Any) -> list[str]:
    """peft's per-architecture default (c_attn for GPT-2, q_proj/v_proj for Llama-like models)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    found = MAPPING.get(model.config.model_type)
    if found:
        return list(found)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for guess in (["q_proj", "v_proj"], ["query", "value"], ["c_attn"], ["qkv_proj"], ["Wqkv"]):
        if all(g in names for g in guess):
            return guess
    raise TrainingError(f"lora.target_modules: no default for model type {model.config.model_type!r}; set it to "
                        f"the attention projection names (modules here include: {', '.join(sorted(names)[:20])})")


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except Exception:  # noqa: BLE001 - not on every platform
        return float("nan")


def plot_loss(log_history: list[dict[str, Any]], dest: Path) -> None:
    """Train and eval loss against the step (matplotlib, Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("fine-tuning loss")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    fig.savefig(dest, format="png", dpi=100)
    plt.close(fig)


class _ListDataset:
    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


# --- training ---------------------------------------------------------------------------------

def train(config: TrainConfig, train_dir: Path | str, *, retrieve: Retrieve | None = None) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``train_dir`` (train.jsonl, optional validation.jsonl).

    Args:
        retrieve: question -> passage texts, used when ``config.with_passages``.

    Raises:
        TrainingError: the base model is not a local causal LM (checked before anything is
            loaded), the data set is missing or has fewer than ``min_examples`` agent replies,
            or ``with_passages`` is set without ``retrieve``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    train_dir = Path(train_dir)
    base = Path(config.base_model).expanduser()
    check_causal_lm(base)
    train_file, val_file = train_dir / "train.jsonl", train_dir / "validation.jsonl"
    if not train_file.is_file():
        raise TrainingError(f"{train_dir}: no train.jsonl; run `botkit train prepare` (or point at a prepared data set)")
    if config.with_passages and retrieve is None:
        raise TrainingError("with_passages: true needs a retriever (the knowledge base) to find the passages")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    stats = SFTStats()
    train_ts = read_prepared(train_file)
    train_ex = build_examples(train_ts, tokenizer, config.max_length, with_passages=config.with_passages,
                              retrieve=retrieve, bot_name=config.bot_name, stats=stats)
    if len(train_ex) < config.min_examples:
        raise TrainingError(
            f"{train_file}: {len(train_ex)} training examples (agent replies) from {len(train_ts)} conversations; "
            f"at least {config.min_examples} are needed (min_examples). Add more transcripts with agent replies, "
            f"or lower min_examples if you accept a model that learns little")
    val_ex = (build_examples(read_prepared(val_file), tokenizer, config.max_length, with_passages=config.with_passages,
                             retrieve=retrieve, bot_name=config.bot_name) if val_file.is_file() else [])

    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    resolved = config.model_copy(deep=True)
    if not config.full_finetune:
        from peft import LoraConfig, get_peft_model

        targets = config.lora.target_modules or default_target_modules(model)
        resolved.lora.target_modules = list(targets)
        conv1d = any(type(m).__name__ == "Conv1D" and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules())
        lora_cfg = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=list(targets), fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
        try:
            model = get_peft_model(model, lora_cfg)
        except ValueError as exc:
            raise TrainingError(f"lora.target_modules: {targets} ({exc})") from exc

    out = Path(config.output_dir).expanduser()
    ckpt_dir = out / CHECKPOINTS
    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        seed=config.seed,
        eval_strategy="steps" if val_ex else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to=[],
        use_cpu=not cuda,
        bf16=config.bf16,
        ddp_backend=("nccl" if cuda else "gloo") if distributed else None,
        ddp_find_unused_parameters=False if distributed else None,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_ListDataset(train_ex),
                      eval_dataset=_ListDataset(val_ex) if val_ex else None,
                      data_collator=DataCollator(tokenizer.pad_token_id))
    resume = _latest_checkpoint(ckpt_dir) if config.resume else None
    if resume:
        log.info("resuming from %s", resume)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume or None)
    runtime = time.perf_counter() - t0
    eval_loss = None
    if val_ex:
        eval_loss = float(trainer.evaluate()["eval_loss"])

    hist = trainer.state.log_history
    losses = [e["loss"] for e in hist if "loss" in e]
    tokens_seen = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    metrics: dict[str, Any] = {
        "train_loss": float(result.training_loss),
        "first_loss": float(losses[0]) if losses else None,
        "last_loss": float(losses[-1]) if losses else None,
        "eval_loss": eval_loss,
        "perplexity": (math.exp(eval_loss) if eval_loss is not None and eval_loss < 50 else None),
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "runtime_s": round(runtime, 3),
        "tokens_seen": tokens_seen,  # all processes, non-padding
        "tokens_per_s": round(tokens_seen / runtime, 1) if runtime > 0 else None,
        "peak_memory_mb": round(_peak_memory_mb(), 1),
        "world_size": int(args.world_size),
        "train_examples": len(train_ex),
        "eval_examples": len(val_ex),
        "train_conversations": stats.conversations,
        "truncated": stats.truncated,
        "dropped_too_long": stats.dropped_too_long,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "full_finetune": config.full_finetune,
        "resumed_from": resume,
        "data_sha256": data_hash(train_dir),
        "device": "cuda" if cuda else "cpu",
    }
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        trainer.model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        dump_train_config(resolved, out / CONFIG_FILE)
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        (out / "data.sha256").write_text(metrics["data_sha256"] + "\n", encoding="utf-8")
        plot_loss(hist, out / LOSS_PLOT)
        log.info("saved %s to %s (train loss %.4f, %s tokens/s)", "model" if config.full_finetune else "adapter",
                 out, metrics["train_loss"], metrics["tokens_per_s"])
    return TrainResult(out, out, metrics, resume, asdict(stats), trainer.model)


def merge_adapter(adapter_dir: Path | str, out_dir: Path | str, base_model: Path | str | None = None) -> Path:
    """Fold a LoRA adapter into its base model and save a plain model directory for serving.

    ``base_model`` defaults to the path recorded in the adapter (``base_model_name_or_path``) or
    in its ``train_config.yaml``.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_config.json)")
    if base_model is None:
        cfg_file = adapter_dir / CONFIG_FILE
        if cfg_file.is_file():
            import yaml

            base_model = (yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}).get("base_model")
        base_model = base_model or PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    base = Path(str(base_model)).expanduser()
    check_causal_lm(base)
    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    merged = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    AutoTokenizer.from_pretrained(str(tok_src), local_files_only=True).save_pretrained(str(out_dir))
    return out_dir


__all__ = ["TrainResult", "check_causal_lm", "data_hash", "default_target_modules", "merge_adapter",
           "plot_loss", "train"]
