"""LoRA (or full) fine-tuning of a local causal LM on a prepared transcript data set.

``train(config, train_dir)`` writes into ``config.output_dir``::

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (dialogue.local_lm.adapter_path)
                                                     (full_finetune: config.json + model weights)
    tokenizer files                                   the base model's tokenizer, for merging/serving
    train_config.yaml                                 the resolved config (target modules filled in)
    metrics.json                                      losses, perplexity, tokens/s, steps, runtime, memory, dtype,
                                                      data hash
    loss.png                                          train and eval loss curves
    checkpoints/checkpoint-N/                         Trainer checkpoints; a rerun resumes from the newest

Runs unchanged under ``torchrun --nproc_per_node N``: the Trainer sets up DDP (gloo on CPU,
nccl on GPUs); only rank 0 writes the artefacts. ``batch_size`` is per process.

Loss on reply tokens only, logits on reply tokens only: labels are -100 everywhere except the
agent reply, and with a large vocabulary (Gemma 3: 262,144) the LM head over every prompt
position costs more than the transformer body. ``label_positions_loss`` runs the model with a
forward pre-hook on its output layer (``get_output_embeddings()``) that keeps only the hidden
states whose *next* token has a label, so the head (and whatever the architecture does to its
output: Gemma's ``final_logit_softcapping``, Granite's ``logits_scaling``, Cohere's
``logit_scale``) sees N label rows instead of batch x length. Cross-entropy is in fp32 and
reduced exactly as transformers' ``ForCausalLMLoss`` (shift by one; a sum divided by
``num_items_in_batch`` under gradient accumulation, a mean otherwise). ``SlicedLossTrainer``
uses it for the train and eval loss.

``bf16: auto`` (the default) turns bf16 autocast on only where it is native (``choose_bf16``);
the choice is recorded in metrics.json as ``dtype``. Progress: on a terminal the Trainer's tqdm
bar; otherwise (CI logs, ``botkit train transcripts`` piped) ``ProgressLines`` writes one line
per logging step to stderr: step/total, epoch, loss, tokens/s, elapsed, ETA.

Heavy imports (torch, transformers, peft, matplotlib) happen inside the functions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botkit.generation.local import CAUSAL_LM_DIR_HINT, check_causal_lm_dir
from training.config import TrainConfig, TrainingError, dump_train_config
from training.sft import DEFAULT_HISTORY_TURNS, DataCollator, Retrieve, SFTStats, build_examples
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
    return check_causal_lm_dir(path, key, error=TrainingError,
                               if_not_causal="it cannot be fine-tuned to write replies. "
                                             f"{CAUSAL_LM_DIR_HINT[0].upper()}{CAUSAL_LM_DIR_HINT[1:]}")


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


def _load_model(base: Path, *, progress_bar: bool) -> Any:
    """The base model (fp32); transformers' "Loading weights" bar only on a terminal."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on and not progress_bar:
        hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    finally:
        if was_on and not progress_bar:
            hf_logging.enable_progress_bar()


class _ListDataset:
    def __init__(self, items: list[dict[str, list[int]]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


# --- loss on label positions only -------------------------------------------------------------

IGNORE_INDEX = -100


def _unwrap(model: Any) -> Any:
    """The module under DDP / accelerate wrappers (``.module``), peft wrappers left in place."""
    while type(model).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(model, "module"):
        model = model.module
    return model


def output_head(model: Any) -> Any:
    """The module that turns hidden states into vocabulary logits (the LM head), through peft/DDP."""
    head = _unwrap(model).get_output_embeddings()
    if head is None:
        raise TrainingError(f"{type(_unwrap(model)).__name__} has no output embeddings (LM head)")
    return head


class _KeepRows:
    """Forward pre-hook for the LM head: (batch, length, hidden) -> (N, hidden) at ``index``."""

    def __init__(self, index: Any):
        self.index = index
        self.calls = 0

    def __call__(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0]
        if hidden.dim() < 2:
            return None
        self.calls += 1
        flat = hidden.reshape(-1, hidden.shape[-1])
        return (flat.index_select(0, self.index.to(flat.device)), *args[1:])


_warned_full_logits: set[str] = set()


def label_positions_loss(model: Any, inputs: dict[str, Any], labels: Any,
                         num_items_in_batch: Any = None) -> tuple[Any, Any]:
    """Causal-LM loss computing logits only at positions whose next token has a label.

    The same value as ``model(**inputs, labels=labels).loss`` (transformers' ``ForCausalLMLoss``:
    position t predicts ``labels[t + 1]``; fp32 cross-entropy; sum / ``num_items_in_batch`` when
    given, else the mean over label tokens) and the same gradients, without the full
    (batch, length, vocab) logits. Returns (loss, outputs); ``outputs.logits`` is (N, vocab),
    one row per label token in row-major order.
    """
    import torch
    import torch.nn.functional as F

    shift = labels[..., 1:]
    keep = torch.nn.functional.pad(shift != IGNORE_INDEX, (0, 1), value=False)  # position t predicts t + 1
    index = keep.reshape(-1).nonzero().squeeze(-1)
    targets = shift[shift != IGNORE_INDEX]
    hook = _KeepRows(index)
    handle = output_head(model).register_forward_pre_hook(hook)
    try:
        outputs = model(**inputs, use_cache=False)
    finally:
        handle.remove()
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if hook.calls != 1 or logits.dim() != 2 or logits.shape[0] != index.numel():
        # The architecture does not route its final hidden states through get_output_embeddings()
        # once: fall back to the full logits (correct, slower).
        name = type(_unwrap(model)).__name__
        if name not in _warned_full_logits:
            _warned_full_logits.add(name)
            log.warning("%s: LM head not applied once to the final hidden states (%d calls, logits %s); "
                        "computing the loss from full logits", name, hook.calls, tuple(logits.shape))
        if hook.calls:  # the hook changed what the model computed: run it again without
            outputs = model(**inputs, use_cache=False)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, index.to(logits.device))
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = F.cross_entropy(logits.float(), targets.to(logits.device), reduction=reduction)
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss, outputs


@functools.cache
def sliced_loss_trainer() -> type:
    """``transformers.Trainer`` whose train and eval loss is ``label_positions_loss``.

    Gradient accumulation and DDP scaling mirror ``Trainer.compute_loss`` with the model's own
    loss: the Trainer passes ``num_items_in_batch`` (label tokens over the accumulated batch)
    when the model accepts loss kwargs, the loss is then a sum over that count (and counts as
    already scaled for accumulation); otherwise a per-batch mean it divides by the steps.
    """
    from transformers import Trainer

    class SlicedLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if inputs.get("labels") is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            if not self.model_accepts_loss_kwargs:
                num_items_in_batch = None  # the model's own loss would have taken the mean
            loss, outputs = label_positions_loss(model, inputs, labels, num_items_in_batch)
            if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs \
                    and num_items_in_batch is not None:
                tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
                loss = loss * (self.accelerator.num_processes // tp if self.args.n_gpu <= 1 else self.args.n_gpu)
            return (loss, outputs) if return_outputs else loss

    return SlicedLossTrainer


# --- dtype and progress -----------------------------------------------------------------------

def choose_bf16(setting: bool | str, cuda: bool) -> tuple[bool, str]:
    """(use bf16 autocast, why) for the ``bf16`` setting: ``auto``, true or false.

    auto: on a GPU when it supports bf16; on a CPU only with native bf16 (AVX512-BF16 or AMX),
    never where it is emulated (AVX2-only CPUs such as AMD Zen 3, where it is many times slower
    than fp32). An explicit true or false is honoured; true on a CPU without native bf16 logs a
    warning.
    """
    from botkit.cpu import describe, has_native_bf16

    if cuda:
        import torch

        native = bool(torch.cuda.is_bf16_supported())
        where = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        native = has_native_bf16()
        where = f"CPU {describe()}"
    if setting == "auto":
        return native, (f"bf16: auto -> {'bf16' if native else 'fp32'} "
                        f"({'native' if native else 'no native'} bf16 on {where})")
    if setting and not native:
        log.warning("bf16: true, but the %s has no native bf16: it is emulated and training will be much slower "
                    "than fp32 (many times on AVX2-only CPUs); set bf16: auto or false", where)
    return bool(setting), f"bf16: {str(bool(setting)).lower()} (set explicitly; {where})"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_callback(stream: Any = None, write: Callable[[str], None] | None = None) -> Any:
    """A ``TrainerCallback`` writing one line per logging step (and per evaluation) to ``stream``
    (or through ``write``: a tqdm bar's ``write``, so the line goes above the bar).

    ``step 20/120 (17%)  epoch 0.50  loss 2.3456  lr 1.9e-04  412 tokens/s  elapsed 1m23s  ETA 6m55s``;
    tokens/s and the ETA count this run only (not the steps a resumed run starts from).
    """
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def __init__(self) -> None:
            self.stream = stream
            self.t0: float | None = None
            self.step0 = 0
            self.tokens0 = 0
            self.ended = False

        def _out(self, line: str) -> None:
            if write is not None:
                write(line)
            else:
                print(line, file=self.stream or sys.stderr, flush=True)

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.ended = False
            self.t0 = time.perf_counter()
            self.step0 = int(state.global_step)
            self.tokens0 = int(getattr(state, "num_input_tokens_seen", 0) or 0)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero or not logs or self.t0 is None:
                return
            elapsed = time.perf_counter() - self.t0
            step, total = int(state.global_step), int(state.max_steps or 0)
            head = f"step {step}/{total}" + (f" ({100 * step // total}%)" if total else "")
            if "loss" in logs:
                done = step - self.step0
                tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0) - self.tokens0
                eta = elapsed / done * (total - step) if done > 0 and total else None
                parts = [head, f"epoch {float(state.epoch or 0):.2f}", f"loss {float(logs['loss']):.4f}"]
                if "learning_rate" in logs:
                    parts.append(f"lr {float(logs['learning_rate']):.1e}")
                parts += [f"{tokens / elapsed:.0f} tokens/s" if elapsed > 0 and tokens else "- tokens/s",
                          f"elapsed {_duration(elapsed)}", f"ETA {_duration(eta) if eta is not None else '?'}"]
                self._out("  ".join(parts))
            elif "eval_loss" in logs:
                what = "final eval" if self.ended else "eval"
                self._out(f"{head}  {what} loss {float(logs['eval_loss']):.4f}  elapsed {_duration(elapsed)}")

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.ended = True

    return ProgressLines()


def terminal_progress_callback() -> Any:
    """On a terminal: the Trainer's tqdm bar, with each log written above it as a ``ProgressLines``
    line (not a raw dict), and no second bar for an evaluation inside it (which breaks the first:
    one line says that the evaluation runs, the next its loss)."""
    from transformers.trainer_callback import ProgressCallback

    class TidyProgress(ProgressCallback):
        def __init__(self) -> None:
            super().__init__()
            self.lines = progress_callback(write=self._write)
            self.evaluating = False

        def _write(self, line: str) -> None:
            if self.training_bar is not None:
                self.training_bar.write(line, file=sys.stderr)  # above the bar, on the bar's stream
            else:
                print(line, file=sys.stderr, flush=True)

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            super().on_train_begin(args, state, control, **kwargs)
            self.lines.on_train_begin(args, state, control, **kwargs)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and not self.evaluating:
                self.evaluating = True
                n = len(eval_dataloader) if eval_dataloader is not None and hasattr(eval_dataloader, "__len__") else "?"
                self._write(f"step {state.global_step}: evaluating on the held-out examples ({n} batches)...")

        def on_evaluate(self, args, state, control, **kwargs):  # noqa: ANN001
            self.evaluating = False

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero:
                self.lines.on_log(args, state, control, logs=logs, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.lines.on_train_end(args, state, control, **kwargs)
            super().on_train_end(args, state, control, **kwargs)

    return TidyProgress()


# --- training ---------------------------------------------------------------------------------

def train(config: TrainConfig, train_dir: Path | str, *, retrieve: Retrieve | None = None,
          history_turns: int = DEFAULT_HISTORY_TURNS) -> TrainResult:
    """Fine-tune ``config.base_model`` on ``train_dir`` (train.jsonl, optional validation.jsonl).

    Args:
        retrieve: question -> passage texts, used when ``config.with_passages``.

    Raises:
        TrainingError: the base model is not a local causal LM (checked before anything is
            loaded), the data set is missing or has fewer than ``min_examples`` agent replies,
            or ``with_passages`` is set without ``retrieve``.
    """
    from training.quiet import quiet_library_warnings

    quiet_library_warnings()
    import torch
    from transformers import AutoTokenizer, TrainingArguments, set_seed

    train_dir = Path(train_dir)
    base = Path(config.base_model).expanduser()
    check_causal_lm(base)
    train_file, val_file = train_dir / "train.jsonl", train_dir / "validation.jsonl"
    if not train_file.is_file():
        raise TrainingError(f"{train_dir}: no train.jsonl; run `botkit train prepare` "
                            "(or point at a prepared data set)")
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
                              retrieve=retrieve, bot_name=config.bot_name, history_turns=history_turns, stats=stats)
    if len(train_ex) < config.min_examples:
        raise TrainingError(
            f"{train_file}: {len(train_ex)} training examples (agent replies) from {len(train_ts)} conversations; "
            f"at least {config.min_examples} are needed (min_examples). Add more transcripts with agent replies, "
            f"or lower min_examples if you accept a model that learns little")
    val_ex = (build_examples(read_prepared(val_file), tokenizer, config.max_length, with_passages=config.with_passages,
                             retrieve=retrieve, bot_name=config.bot_name, history_turns=history_turns)
              if val_file.is_file() else [])

    tty = sys.stderr.isatty()
    model = _load_model(base, progress_bar=tty)
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
    bf16, bf16_why = choose_bf16(config.bf16, cuda)
    log.info("%s", bf16_why)
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
        bf16=bf16,
        disable_tqdm=not tty,  # off a terminal: ProgressLines instead of carriage-return bars
        ddp_backend=("nccl" if cuda else "gloo") if distributed else None,
        ddp_find_unused_parameters=False if distributed else None,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = sliced_loss_trainer()(model=model, args=args, train_dataset=_ListDataset(train_ex),
                                    eval_dataset=_ListDataset(val_ex) if val_ex else None,
                                    data_collator=DataCollator(tokenizer.pad_token_id))
    if not tty:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it would print every log dict to stdout
        trainer.add_callback(progress_callback())
    else:
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)  # it writes every log as a raw dict, and nests an eval bar
        trainer.add_callback(terminal_progress_callback())
    resume = _latest_checkpoint(ckpt_dir) if config.resume else None
    if resume:
        log.info("resuming from %s", resume)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume or None)
    runtime = time.perf_counter() - t0
    eval_loss = None
    if val_ex:
        # The Trainer often evaluated at the last step already (a full pass over the held-out
        # examples: minutes for a real model on a CPU); evaluate again only when it did not.
        last = next((e for e in reversed(trainer.state.log_history) if "eval_loss" in e), None)
        if last is not None and last.get("step") == trainer.state.global_step:
            eval_loss = float(last["eval_loss"])
        else:
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
        "dtype": "bf16" if bf16 else "fp32",  # autocast dtype of the run (weights stay fp32)
        "bf16_setting": config.bf16,
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
    # accelerate wraps forward() in bf16 autocast for a bf16 run and leaves it there: unwrap it, so
    # the returned model computes as the saved adapter does when it is loaded (fp32 weights, fp32).
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return TrainResult(out, out, metrics, resume, asdict(stats), model)


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


__all__ = ["TrainResult", "check_causal_lm", "choose_bf16", "data_hash", "default_target_modules",
           "label_positions_loss", "merge_adapter", "output_head", "plot_loss", "progress_callback",
           "sliced_loss_trainer", "train"]
