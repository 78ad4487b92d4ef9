"""train.yaml: the configuration of one fine-tuning run, validated at load, saved beside the adapter.

Errors name the key, the bad value and what is allowed (the same wording as bot.yaml)::

    train.yaml: lora.r: bad value 0 (Input should be greater than or equal to 1)
    --set lora.rank=4: lora.rank: unknown key (allowed: alpha, dropout, r, target_modules; did you mean 'r'?)

Overrides are CLI-style ``key.sub=value`` strings; the value is parsed as YAML (``4`` is an int,
``true`` a bool, ``[q_proj, v_proj]`` a list, ``null`` None), so they type like the file does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from botkit.config import describe_validation_error
from botkit.errors import BotkitError


class TrainingError(BotkitError):
    """A fine-tuning run could not start or failed: bad config, unusable base model, too little data."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank")
    alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="module names to adapt; None = peft's default for the architecture "
        "(c_attn for GPT-2, q_proj/v_proj for Llama-like models)")


class TrainConfig(_Strict):
    base_model: str = Field(..., description="local causal-LM directory (never downloaded)")
    output_dir: str = Field(..., description="adapter, checkpoints/, metrics.json, loss.png go here")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    full_finetune: bool = Field(False, description="train every weight instead of a LoRA adapter")
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0)
    epochs: float = Field(3.0, gt=0.0, le=1000.0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(4, ge=1, le=4096, description="per device (per process under torchrun)")
    grad_accum: int = Field(1, ge=1, le=4096)
    max_length: int = Field(1024, ge=16, le=1_000_000, description="tokens per example; prompts are cut from the left")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    seed: int = 42
    with_passages: bool = Field(False,
                                description="put the KB passages retrieval would have given into the system prompt")
    bot_name: str = Field("Support", description="the bot name used in the system prompt (as in bot.yaml)")
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(10, ge=1)
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept in output_dir/checkpoints")
    min_examples: int = Field(20, ge=1, description="refuse data sets with fewer training examples (agent replies)")
    bf16: Literal["auto"] | bool = Field(
        "auto", description="bf16 autocast: auto = on where it is native (a GPU that supports it, a CPU with "
        "AVX512-BF16/AMX: 1.7-2.1x faster), off where it would be emulated (AVX2-only CPUs: many times slower)")
    threads: int = Field(0, ge=0, le=256, description="torch intra-op threads; 0 = library default")
    resume: bool = Field(True, description="continue from the newest checkpoint in output_dir/checkpoints")


def _set_key(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise TrainingError(f"override {override!r}: expected key=value, e.g. lora.r=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise TrainingError(f"override {override!r}: the value is not valid YAML ({exc})") from None
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TrainingError(f"override {override!r}: {'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def parse_train_config(data: Any, source: str = "train.yaml") -> TrainConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrainingError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise TrainingError("\n".join(f"{source}: {describe_validation_error(e, TrainConfig)}"
                                      for e in exc.errors())) from None


def load_train_config(yaml_path: Path | str | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read ``yaml_path`` (or start from nothing when None), apply ``key.sub=value`` overrides, validate.

    Raises:
        TrainingError: the file is missing or not YAML, an override is malformed, or a key or
            value is not allowed (the message names the key and, for overrides, the override).
    """
    data: Any = {}
    source = "train config"
    if yaml_path is not None:
        path = Path(yaml_path)
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise TrainingError(f"{path}: not found") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise TrainingError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(data, dict):
            raise TrainingError(f"{path}: expected a mapping at the top level")
    for override in overrides:
        _set_key(data, override)
    if overrides:
        source = f"{source} (overrides: {' '.join(overrides)})"
    return parse_train_config(data, source)


def dump_train_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (what ``load_train_config`` reads back)."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
