"""Transcripts to supervised fine-tuning examples: prompt tokens masked, agent replies learned.

One example per agent reply (a run of consecutive agent messages is one reply). Its prompt is
built by the very function the bot uses at serving time,
:func:`botkit.generation.prompt.conversation_messages`, and tokenised by the same
:func:`~botkit.generation.prompt.encode_prompt`: the system message (instructions, plus the KB
passages retrieval returns for the customer's last question, chosen by
:func:`~botkit.generation.prompt.select_passages`), the last ``history_turns`` earlier turns
(customer messages as quoted ``user`` turns, bot/agent messages as ``assistant`` turns), then
the question; rendered with the tokenizer's chat template (``add_generation_prompt=True``) or,
without one, the plain :data:`~botkit.generation.prompt.FALLBACK_HEADERS` format. For the same
conversation state and passages the prompt token ids equal the serving ones (a test asserts
it). The target is what the template puts after the generation prompt for that reply (e.g.
``reply<end_of_turn>\\n``), then EOS.

Why one example per reply rather than one sequence with every agent turn unmasked: each reply
gets the passages retrieved for *its* question, in the system message, and the history the
bot would really have had (cut oldest-first to fit, like ``render_prompt``). A single sequence
can carry only one system message, so later replies would be trained on the first question's
passages. The cost is re-reading the history for each reply (quadratic in turns), which is
small for support conversations (a handful of turns).

Labels are -100 everywhere except the reply tokens. Transcript ``system`` messages (hand-overs,
"chat closed") are events, not instructions, and are left out. Bot messages stay in the history
but are never targets: we learn from the human agents only. Bot messages between the
customer's last message and the agent's reply are left out too: at serving time the bot's
reply comes straight after the question.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botkit.errors import GenerationError
from botkit.generation.prompt import (
    ChatMessage,
    conversation_messages,
    defuse_special_tokens,
    encode_prompt,
    render_prompt,
    special_strings,
)
from botkit.types import Hit
from training.types import Transcript

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
DEFAULT_HISTORY_TURNS = 6  # dialogue.history_turns' default
Retrieve = Callable[[str], list[Hit]]
"""question -> the passages the bot would be given (``select_passages`` of a KB search)."""


@dataclass
class SFTStats:
    """What :func:`build_examples` made, and what it had to cut or drop."""

    conversations: int = 0
    examples: int = 0
    truncated: int = 0  # prompt cut from the left (after history and passages were dropped)
    dropped_too_long: int = 0  # the reply alone did not fit in max_length
    tokens: int = 0
    target_tokens: int = 0


@dataclass(frozen=True)
class ReplyTurn:
    """One agent reply with the conversation state the bot would have had before it."""

    messages: list[ChatMessage]  # the prompt, as conversation_messages builds it
    reply: str  # the agent's reply (consecutive agent messages joined)
    question: str  # the customer's last message
    passages: tuple[Hit, ...]  # what retrieval gave for it
    index: int  # position of the reply's first message in transcript.messages


def reply_turns(transcript: Transcript, bot_name: str = "Support", retrieve: Retrieve | None = None,
                history_turns: int = DEFAULT_HISTORY_TURNS) -> list[ReplyTurn]:
    """Every agent reply of ``transcript`` with its serving-time prompt, oldest first."""
    positions = [k for k, m in enumerate(transcript.messages)
                 if m.role in ("customer", "agent", "bot") and m.text.strip()]
    msgs = [transcript.messages[k] for k in positions]
    out: list[ReplyTurn] = []
    i = 0
    while i < len(msgs):
        if msgs[i].role != "agent":
            i += 1
            continue
        j = i
        while j < len(msgs) and msgs[j].role == "agent":
            j += 1
        reply = "\n\n".join(m.text.strip() for m in msgs[i:j])
        last_customer = next((k for k in range(i - 1, -1, -1) if msgs[k].role == "customer"), None)
        if last_customer is not None:  # a reply to nobody teaches nothing
            question = msgs[last_customer].text
            passages = tuple(retrieve(question)) if retrieve is not None else ()
            messages = conversation_messages(bot_name, passages, msgs[:last_customer], question, history_turns)
            out.append(ReplyTurn(messages, reply, question, passages, positions[i]))
        i = j
    return out


def conversation_turns(transcript: Transcript, bot_name: str = "Support", retrieve: Retrieve | None = None,
                       history_turns: int = DEFAULT_HISTORY_TURNS) -> list[tuple[list[ChatMessage], str]]:
    """(prompt messages, agent reply) for each agent reply in the transcript, oldest first."""
    return [(t.messages, t.reply) for t in reply_turns(transcript, bot_name, retrieve, history_turns)]


def _completion_text(tokenizer: Any, messages: list[ChatMessage], reply: str) -> str:
    """What follows the generation prompt for ``reply``: the template's own end marker included."""
    if getattr(tokenizer, "chat_template", None):
        dicts = [{"role": m.role, "content": m.content} for m in messages] + [{"role": "assistant", "content": reply}]
        full = str(tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=False))
        # render_prompt may have dropped history: compare against the same rendered prefix.
        gen = str(tokenizer.apply_chat_template(dicts[:-1], tokenize=False, add_generation_prompt=True))
        if full.startswith(gen) and full[len(gen):].lstrip().startswith(reply.strip()[:20]):
            return full[len(gen):]
        return reply
    return reply + "\n\n"


def encode_example(tokenizer: Any, messages: list[ChatMessage], reply: str, max_length: int,
                   stats: SFTStats | None = None) -> dict[str, list[int]] | None:
    """Tokenise one (prompt, reply) pair; None when the reply alone does not fit ``max_length``."""
    stats = stats if stats is not None else SFTStats()
    reply_clean = defuse_special_tokens(reply.strip(), special_strings(tokenizer))
    eos = tokenizer.eos_token_id
    # The completion: the template's text after the generation prompt (reply + end marker) + EOS.
    full_prompt = render_prompt(tokenizer, messages, 10**9)
    completion = _completion_text(tokenizer, _defused(tokenizer, messages), reply_clean)
    target = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if eos is not None and (not target or target[-1] != eos):
        target = target + [eos]
    budget = max_length - len(target)
    if budget < 1:
        stats.dropped_too_long += 1
        return None
    try:  # drop oldest history, then lowest passages, exactly as at serving time
        prompt_ids = encode_prompt(tokenizer, messages, budget)
    except GenerationError:
        with_specials = not getattr(tokenizer, "chat_template", None)
        prompt_ids = list(tokenizer(full_prompt, add_special_tokens=with_specials)["input_ids"])
    if len(prompt_ids) > budget:
        prompt_ids = prompt_ids[-budget:]  # still too long: cut from the left, the target is kept
        stats.truncated += 1
    ids = prompt_ids + target
    stats.examples += 1
    stats.tokens += len(ids)
    stats.target_tokens += len(target)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE_INDEX] * len(prompt_ids) + target}


def _defused(tokenizer: Any, messages: list[ChatMessage]) -> list[ChatMessage]:
    specials = special_strings(tokenizer)
    return [ChatMessage(m.role, defuse_special_tokens(m.content, specials)) for m in messages]


def build_examples(transcripts: Iterable[Transcript], tokenizer: Any, max_length: int, *,
                   with_passages: bool = False, retrieve: Retrieve | None = None, bot_name: str = "Support",
                   history_turns: int = DEFAULT_HISTORY_TURNS,
                   stats: SFTStats | None = None) -> list[dict[str, list[int]]]:
    """One tokenised example per agent reply in ``transcripts`` (see the module docstring).

    Args:
        retrieve: question -> passages (Hits), as the bot's retriever would return them; used
            only when ``with_passages`` (without it the system prompt says "(no passages)").
        history_turns: earlier turns in the prompt (the bot's ``dialogue.history_turns``).
        stats: filled with counts (examples, truncated, dropped) when given.
    """
    stats = stats if stats is not None else SFTStats()
    examples: list[dict[str, list[int]]] = []
    for t in transcripts:
        stats.conversations += 1
        for messages, reply in conversation_turns(t, bot_name, retrieve if with_passages else None, history_turns):
            ex = encode_example(tokenizer, messages, reply, max_length, stats)
            if ex is not None:
                examples.append(ex)
    if stats.dropped_too_long:
        log.warning("%d agent replies were longer than max_length=%d tokens and were left out",
                    stats.dropped_too_long, max_length)
    return examples


class DataCollator:
    """Pad a batch to its longest example: pad id for inputs, 0 for the mask, -100 for labels.

    Padding is on the right (causal LM training with absolute or rotary positions; the mask
    hides it). ``pad_to_multiple_of`` rounds lengths up (8 helps tensor cores on a GPU).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            n = -(-n // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = n - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


__all__ = ["DEFAULT_HISTORY_TURNS", "IGNORE_INDEX", "DataCollator", "ReplyTurn", "Retrieve", "SFTStats",
           "build_examples", "conversation_turns", "encode_example", "reply_turns"]
