"""Transcripts to supervised examples: loss only on agent replies, chat template, truncation, passages."""

from __future__ import annotations

from pathlib import Path

import pytest

from lm_fixtures import tiny_lm_dir  # noqa: F401 (pytest fixture)
from training.sft import IGNORE_INDEX, DataCollator, SFTStats, build_examples, conversation_turns
from training.types import Message, Transcript

CONVO = Transcript("c1", (
    Message("system", "chat assigned to Dana"),
    Message("customer", "Hi, where is my order 1234?"),
    Message("bot", "Let me look that up."),
    Message("agent", "Your order ships tomorrow."),
    Message("customer", "Thanks! Can I change the address?"),
    Message("agent", "Yes, reply with the new address."),
    Message("agent", "I will update it right away."),
))
AGENT_REPLIES = ["Your order ships tomorrow.", "Yes, reply with the new address.\n\nI will update it right away."]


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir: Path):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_lm_dir), local_files_only=True)


def _unmasked(ex: dict) -> list[int]:
    return [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE_INDEX]


def test_one_example_per_agent_reply_and_labels_only_on_replies(tokenizer) -> None:
    examples = build_examples([CONVO], tokenizer, 1024)
    assert len(examples) == 2
    for ex, reply in zip(examples, AGENT_REPLIES):
        assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"])
        # Inside the target the labels are the token ids themselves.
        target = [(i, lab) for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE_INDEX]
        assert all(i == lab for i, lab in target)
        # The masked part is one prefix: the prompt; the rest is the reply (+ end marker + EOS).
        first = next(k for k, lab in enumerate(ex["labels"]) if lab != IGNORE_INDEX)
        assert all(lab == IGNORE_INDEX for lab in ex["labels"][:first])
        assert all(lab != IGNORE_INDEX for lab in ex["labels"][first:])
        assert tokenizer.decode(_unmasked(ex), skip_special_tokens=True).strip() == reply
        assert _unmasked(ex)[-1] == tokenizer.eos_token_id  # the model learns to stop
    # Customer and bot text is in the prompt, never in the target.
    prompt = tokenizer.decode([i for i, lab in zip(examples[1]["input_ids"], examples[1]["labels"]) if lab == IGNORE_INDEX])
    assert "Can I change the address?" in prompt and "Let me look that up." in prompt
    assert "chat assigned to Dana" not in prompt  # transcript system events are left out


def test_chat_template_is_used(tokenizer) -> None:
    ex = build_examples([CONVO], tokenizer, 1024)[0]
    text = tokenizer.decode(ex["input_ids"])
    assert text.startswith("<|system|>\n")
    assert "<|user|>\n<customer_message>\nHi, where is my order 1234?\n</customer_message><|end|>" in text
    assert text.endswith("<|assistant|>\nYour order ships tomorrow.<|end|>\n<|endoftext|>")


def test_plain_format_without_chat_template(tokenizer) -> None:
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    ex = build_examples([CONVO], plain, 1024)[0]
    text = plain.decode(ex["input_ids"])
    assert text.startswith("### System\n") and "### Customer\n<customer_message>" in text
    assert plain.decode(_unmasked(ex), skip_special_tokens=True).strip() == AGENT_REPLIES[0]


def test_truncation_keeps_the_target(tokenizer) -> None:
    long = Transcript("long", (Message("customer", "word " * 600 + "where is my parcel?"),
                               Message("agent", "It left the warehouse this morning.")))
    stats = SFTStats()
    ex = build_examples([long], tokenizer, 128, stats=stats)[0]
    assert len(ex["input_ids"]) == 128
    assert stats.truncated == 1
    assert tokenizer.decode(_unmasked(ex), skip_special_tokens=True).strip() == "It left the warehouse this morning."
    # A reply longer than max_length alone is dropped, not cut.
    huge = Transcript("huge", (Message("customer", "hi"), Message("agent", "long answer " * 200)))
    stats = SFTStats()
    assert build_examples([huge], tokenizer, 64, stats=stats) == []
    assert stats.dropped_too_long == 1


def test_passages_in_prompt_when_enabled(tokenizer) -> None:
    asked: list[str] = []

    def retrieve(question: str) -> list[str]:
        asked.append(question)
        return [f"PASSAGE for {question.split()[0]}: orders ship in 2 days."]

    with_p = build_examples([CONVO], tokenizer, 2048, with_passages=True, retrieve=retrieve)
    assert asked == ["Hi, where is my order 1234?", "Thanks! Can I change the address?"]  # per reply, its own question
    text = tokenizer.decode(with_p[1]["input_ids"])
    assert '<passage id="1">\nPASSAGE for Thanks!: orders ship in 2 days.\n</passage>' in text
    without = tokenizer.decode(build_examples([CONVO], tokenizer, 2048, retrieve=retrieve)[1]["input_ids"])
    assert "PASSAGE" not in without and "(no passages)" in without


def test_reply_without_a_question_is_skipped() -> None:
    t = Transcript("x", (Message("agent", "Hello, how can I help?"), Message("customer", "bye")))
    assert conversation_turns(t) == []


def test_collator_pads_labels_with_ignore_index(tokenizer) -> None:
    a, b = build_examples([CONVO], tokenizer, 1024)
    batch = DataCollator(tokenizer.pad_token_id)([a, b])
    n = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == batch["labels"].shape == (2, n)
    short = 0 if len(a["input_ids"]) < len(b["input_ids"]) else 1
    length = len((a, b)[short]["input_ids"])
    assert (batch["labels"][short, length:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][short, length:] == 0).all()
    assert (batch["input_ids"][short, length:] == tokenizer.pad_token_id).all()
    assert DataCollator(0, pad_to_multiple_of=8)([a])["input_ids"].shape[1] % 8 == 0
