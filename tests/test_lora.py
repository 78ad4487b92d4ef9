"""LoRA fine-tuning on a tiny GPT-2: weights, loss, save/load, resume, refusals, artefacts, config, DDP."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lm_fixtures import non_causal_dir, tiny_lm_dir  # noqa: F401 (pytest fixtures)

from botkit.types import Hit
from training.config import TrainConfig, TrainingError, load_train_config
from training.types import Message, Transcript, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
QA = [("Where is my order?", "Your order ships tomorrow."),
      ("How do I get a refund?", "Refunds take five days."),
      ("Can I change my address?", "Yes, reply with the new address."),
      ("Do you ship abroad?", "We ship to the whole of Europe.")]


def make_dataset(dest: Path, n: int = 24, n_val: int = 4) -> Path:
    """A repetitive corpus: the same four questions and answers, so a tiny model can learn them."""
    dest.mkdir(parents=True, exist_ok=True)

    def convo(i: int) -> Transcript:
        q, a = QA[i % len(QA)]
        return Transcript(f"t{i}", (Message("customer", q), Message("agent", a)))

    write_jsonl(dest / "train.jsonl", [convo(i) for i in range(n)])
    if n_val:
        write_jsonl(dest / "validation.jsonl", [convo(i) for i in range(n_val)])
    return dest


def config_for(base: Path, out: Path, *overrides: str) -> TrainConfig:
    return load_train_config(None, [f"base_model={base}", f"output_dir={out}", "learning_rate=0.01",
                                    "batch_size=4", "max_length=384", "warmup_ratio=0", "logging_steps=1",
                                    "eval_steps=10", "save_steps=10", "min_examples=8", "threads=1",
                                    "lora.dropout=0", *overrides])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:  # noqa: F811
    """The tiny GPT-2 with its (tied) embeddings scaled up 10x.

    Randomly initialised embeddings (std 0.02, 64 dims) cap every logit at about +-1.3, so the
    loss of the plain tiny model cannot fall much below ln(vocab) whatever an adapter on the
    attention does; scaled, they stand in for a pretrained model's and the loss can fall.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = tmp_path_factory.mktemp("lora-base")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir), local_files_only=True)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10.0)
    model.save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(str(tiny_lm_dir), local_files_only=True).save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, base_dir: Path, data_dir: Path):
    from training.lora import train

    out = tmp_path_factory.mktemp("run") / "adapter"
    return train(config_for(base_dir, out, "max_steps=30"), data_dir)


def test_lora_weights_changed_and_base_weights_did_not(trained, base_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True).state_dict()
    after = {k: v.detach() for k, v in trained.model.state_dict().items()}
    lora_b = {k: v for k, v in after.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # B starts at zero: training moved it
    compared = 0
    for key, value in after.items():
        if "lora_" in key:
            continue
        name = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(value, base[name]), f"base weight {name} changed"
        compared += 1
    assert compared >= len(base) - 1  # lm_head may be tied to wte and not listed twice
    assert trained.metrics["trainable_params"] < trained.metrics["total_params"] / 10


def test_loss_falls(trained) -> None:
    m = trained.metrics
    assert m["steps"] == 30
    assert m["last_loss"] < m["first_loss"] * 0.75, m
    assert m["eval_loss"] is not None and m["perplexity"] == pytest.approx(2.718281828 ** m["eval_loss"], rel=1e-6)


def test_saved_adapter_reproduces_logits(trained, base_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 300, 7]])
    trained.model.eval()
    with torch.no_grad():
        expected = trained.model(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
        loaded = PeftModel.from_pretrained(base, str(trained.adapter_dir)).eval()
        got = loaded(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-3)  # the adapter does something


def test_merge_adapter_matches_unmerged(trained, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from training.lora import merge_adapter

    merged_dir = merge_adapter(trained.adapter_dir, tmp_path / "merged")
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), local_files_only=True)(input_ids=ids).logits
        expected = trained.model.eval()(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-4)
    assert (merged_dir / "tokenizer.json").is_file()


def test_artefacts(trained, data_dir: Path) -> None:
    from training.lora import data_hash

    out = trained.output_dir
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "perplexity", "tokens_per_s", "steps", "runtime_s", "peak_memory_mb",
                "world_size", "data_sha256"):
        assert key in metrics, key
    assert metrics["tokens_per_s"] > 0 and metrics["runtime_s"] > 0 and metrics["world_size"] == 1
    assert metrics["data_sha256"] == data_hash(data_dir) == (out / "data.sha256").read_text().strip()
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["lora"]["target_modules"] == ["c_attn"]  # auto-detected for GPT-2, recorded resolved
    assert TrainConfig.model_validate(saved).max_steps == 30
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-20", "checkpoint-30"]
    print(f"\ntiny GPT-2 LoRA: {metrics['tokens_per_s']} tokens/s, {metrics['steps']} steps in "
          f"{metrics['runtime_s']} s")


def test_resume_continues_the_step_count(tiny_lm_dir: Path, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from training.lora import train

    out = tmp_path / "adapter"
    first = train(config_for(tiny_lm_dir, out, "max_steps=4", "save_steps=2", "eval_steps=100"), data_dir)
    assert first.resumed_from is None and first.metrics["steps"] == 4
    second = train(config_for(tiny_lm_dir, out, "max_steps=6", "save_steps=2", "eval_steps=100"), data_dir)
    assert second.resumed_from is not None and second.resumed_from.endswith("checkpoint-4")
    assert second.metrics["steps"] == 6
    assert (out / "checkpoints" / "checkpoint-6").is_dir()


def test_full_finetune_and_passages(base_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    from training.lora import train

    out = tmp_path / "full"
    with pytest.raises(TrainingError, match="with_passages: true needs a retriever"):
        train(config_for(base_dir, out, "with_passages=true"), data_dir)
    asked: list[str] = []
    result = train(config_for(base_dir, out, "full_finetune=true", "max_steps=2", "with_passages=true"), data_dir,
                   retrieve=lambda q: asked.append(q) or [Hit("a", "About", "article", 0.9, 0.9, 0.0, 0, "About",
                                                              f"about: {q}")])
    assert asked and result.metrics["trainable_params"] == result.metrics["total_params"]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()


def test_too_small_data_refused(tiny_lm_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from training.lora import train

    small = make_dataset(tmp_path / "small", n=5, n_val=0)
    with pytest.raises(TrainingError, match=r"5 training examples .* at least 20 are needed \(min_examples\)"):
        train(load_train_config(None, [f"base_model={tiny_lm_dir}", f"output_dir={tmp_path / 'o'}"]), small)
    assert not (tmp_path / "o").exists()


def test_non_causal_base_refused_at_start(non_causal_dir: Path, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    from training.lora import train

    with pytest.raises(TrainingError, match=r"base_model: .*sentence-transformers embedding model"):
        train(load_train_config(None, [f"base_model={non_causal_dir}", f"output_dir={tmp_path}"]), data_dir)
    with pytest.raises(TrainingError, match="does not exist"):
        train(load_train_config(None, [f"base_model={tmp_path / 'nope'}", f"output_dir={tmp_path}"]), data_dir)


def test_overrides_and_bad_keys(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    shutil.copy(ROOT / "demo" / "train.yaml", path)
    demo = load_train_config(path)
    assert demo.lora.r == 8 and demo.with_passages is True
    cfg = load_train_config(path, ["lora.r=4", "lora.target_modules=[q_proj, v_proj]", "max_steps=7", "bf16=true"])
    assert cfg.lora.r == 4 and cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.max_steps == 7 and cfg.bf16
    with pytest.raises(TrainingError, match=r"lora\.rank: unknown key \(allowed: alpha, dropout, r, target_modules"):
        load_train_config(path, ["lora.rank=4"])
    with pytest.raises(TrainingError, match=r"lora\.r: bad value 0"):
        load_train_config(path, ["lora.r=0"])
    with pytest.raises(TrainingError, match=r"learning_rat: unknown key .*did you mean 'learning_rate'"):
        load_train_config(path, ["learning_rat=1"])
    with pytest.raises(TrainingError, match="expected key=value"):
        load_train_config(path, ["lora.r"])
    with pytest.raises(TrainingError, match="base_model: missing"):
        load_train_config(None, ["output_dir=x"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes(tiny_lm_dir: Path, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    torchrun = shutil.which("torchrun") or (str(Path(sys.executable).parent / "torchrun")
                                           if (Path(sys.executable).parent / "torchrun").exists() else None)
    if torchrun is None:
        pytest.skip("torchrun is not installed (it comes with torch); the multi-process test needs it")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(ROOT / "tests" / "ddp_train.py"), str(tiny_lm_dir), str(data_dir), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = sorted(json.loads(p.read_text())["rank"] for p in out.glob("rank-*.json"))
    assert ranks == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()


# --- the loss on label positions only -------------------------------------------------------

VOCAB = 320


def _tiny_causal_lm(kind: str):
    """A random 2-layer causal LM of each family the sliced loss must handle (no dropout)."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    elif kind == "gemma3":
        # Softcapping at 3 with embeddings scaled up: tanh is far from linear on these logits,
        # so a loss that skipped it would not match.
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=64,
            final_logit_softcapping=3.0, pad_token_id=0))
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(20.0)
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=64, tie_word_embeddings=False))
    return model


def _batch():
    """3 rows, right-padded; labels only on a 'reply' span of each row (and -100 on padding)."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 9:] = 0
    labels = torch.full_like(ids, -100)
    for row, (start, end) in enumerate([(12, 20), (6, 15), (3, 9)]):
        labels[row, start:end] = ids[row, start:end]
    return {"input_ids": ids, "attention_mask": mask}, labels


@pytest.mark.parametrize("kind", ["gpt2", "gemma3", "llama"])
@pytest.mark.parametrize("peft_wrapped", [False, True], ids=["plain", "lora"])
@pytest.mark.parametrize("num_items", [None, 37], ids=["mean", "num_items"])
def test_label_positions_loss_equals_full_logits_loss(kind: str, peft_wrapped: bool, num_items) -> None:
    import torch

    from training.lora import default_target_modules, label_positions_loss

    model = _tiny_causal_lm(kind)
    if peft_wrapped:
        from peft import LoraConfig, get_peft_model

        targets = default_target_modules(model)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets,
                                                 fan_in_fan_out=kind == "gpt2", init_lora_weights=False))
    model.train()
    inputs, labels = _batch()
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    out = model(**inputs, labels=labels, **kwargs)
    expected = out.loss
    if kind == "gemma3":
        assert out.logits.abs().max() > 2.0  # softcapping (cap 3) is doing something
    expected_grads = torch.autograd.grad(expected, params)
    loss, sliced = label_positions_loss(model, inputs, labels, kwargs.get("num_items_in_batch"))
    grads = torch.autograd.grad(loss, params)
    n_labels = int((labels[:, 1:] != -100).sum())
    assert sliced.logits.shape == (n_labels, VOCAB)  # the LM head saw the label positions only
    assert loss.dtype == torch.float32
    assert abs(loss.item() - expected.item()) < 1e-5, (loss.item(), expected.item())
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-4), (g - e).abs().max()


def test_trainer_compute_loss_matches_the_stock_trainer(tiny_lm_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """Same loss as transformers' Trainer.compute_loss, with and without num_items_in_batch (grad accumulation)."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from training.lora import sliced_loss_trainer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir), local_files_only=True).eval()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_accumulation_steps=2)
    stock, sliced = Trainer(model=model, args=args), sliced_loss_trainer()(model=model, args=args)
    assert sliced.model_accepts_loss_kwargs == stock.model_accepts_loss_kwargs
    inputs, labels = _batch()
    batch = {**inputs, "labels": labels}
    with torch.no_grad():
        for n in (None, torch.tensor(41)):
            a = stock.compute_loss(model, dict(batch), num_items_in_batch=n)
            b = sliced.compute_loss(model, dict(batch), num_items_in_batch=n)
            assert abs(a.item() - b.item()) < 1e-5, (n, a.item(), b.item())
        loss, outputs = sliced.compute_loss(model, dict(batch), return_outputs=True)  # the eval path
        assert outputs.logits.shape[0] == int((labels[:, 1:] != -100).sum())


def test_train_never_computes_full_logits(base_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """Every LM-head call inside train() (train steps and evaluation) gets label rows, never batch x length."""
    import torch

    from training.lora import train

    vocab = json.loads((base_dir / "config.json").read_text())["vocab_size"]
    head_inputs: list[tuple[int, ...]] = []

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.out_features == vocab:
            head_inputs.append(tuple(args[0].shape))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(config_for(base_dir, tmp_path / "o", "max_steps=3", "eval_steps=2"), data_dir)
    finally:
        handle.remove()
    assert result.metrics["steps"] == 3 and result.metrics["eval_loss"] is not None
    assert len(head_inputs) >= 3 + 2, head_inputs  # 3 train steps, evaluations
    assert all(len(shape) == 2 for shape in head_inputs), head_inputs  # (label rows, hidden), not (B, T, hidden)


# --- dtype and progress ---------------------------------------------------------------------

def test_bf16_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import botkit.cpu
    from training.lora import choose_bf16

    assert load_train_config(None, ["base_model=x", "output_dir=y"]).bf16 == "auto"  # the default
    assert load_train_config(None, ["base_model=x", "output_dir=y", "bf16=false"]).bf16 is False
    with pytest.raises(TrainingError, match="bf16"):
        load_train_config(None, ["base_model=x", "output_dir=y", "bf16=sometimes"])
    for native in (True, False):
        monkeypatch.setattr(botkit.cpu, "has_native_bf16", lambda native=native: native)
        assert choose_bf16("auto", cuda=False)[0] is native
        assert choose_bf16(False, cuda=False)[0] is False
        caplog.clear()
        with caplog.at_level("WARNING", logger="training.lora"):
            assert choose_bf16(True, cuda=False)[0] is True  # explicit true is honoured...
        warned = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
        assert bool(warned) is (not native), warned  # ...with a warning where it is emulated


def test_progress_lines_and_dtype_in_metrics(base_dir: Path, data_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal train() writes one progress line per logging step to stderr; metrics.json has the dtype."""
    import re

    from botkit.cpu import has_native_bf16
    from training.lora import train

    result = train(config_for(base_dir, tmp_path / "o", "max_steps=4", "logging_steps=2", "eval_steps=100"),
                   data_dir)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("step ") and "eval loss" not in ln]
    assert len(lines) == 3, err[-2000:]  # logging_first_step, then steps 2 and 4
    # One evaluation at the last step, reused as the final eval loss (not a second pass over the data).
    final_evals = re.findall(r"^step 4/4 \(100%\)  (?:final )?eval loss \d+\.\d{4}  elapsed \d+s$", err, re.MULTILINE)
    assert len(final_evals) == 1, err[-2000:]
    assert re.match(r"step 4/4 \(100%\)  epoch \d+\.\d\d  loss \d+\.\d{4}  lr \S+  \d+ tokens/s  elapsed \d+s  ETA 0s",
                    lines[-1]), lines[-1]
    assert lines[0].startswith("step 1/4 (25%)")
    assert "\r" not in err  # no tqdm bar in a log
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["bf16_setting"] == "auto" and metrics["dtype"] == ("bf16" if has_native_bf16() else "fp32")
    assert result.metrics["dtype"] == metrics["dtype"]


def test_gemma_recipe_loads() -> None:
    cfg = load_train_config(ROOT / "demo" / "train-gemma.yaml")
    assert cfg.base_model == "registry" and cfg.bf16 == "auto"
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
