"""A tiny causal LM built here, from a config, with a tokenizer trained on your own text.

There is no pretrained causal LM on an offline machine, and the demo must show the whole
retraining loop anyway: this builds a small GPT-2 (random weights, seeded) and a byte-level
BPE tokenizer trained on the knowledge base and transcripts, saved as an ordinary Hugging
Face model directory. Its replies are not good (it has seen a few thousand words); the
grounding check makes the bot fall back to knowledge-base answers, which is the safe
behaviour to demonstrate. For a real bot, point ``base_model`` at a real local model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def build_tiny_base(texts: Iterable[str], out_dir: Path, *, vocab_size: int = 2000, n_layer: int = 2,
                    n_embd: int = 128, n_head: int = 4, max_positions: int = 2048, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:],
                                        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a one-shard model: "Writing model shards 1/1" says nothing
    try:
        GPT2LMHeadModel(config).save_pretrained(out_dir)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
    return out_dir
