"""The llama-cpp backend (botkit/generation/llamacpp.py) and the bot's fallback when a model cannot start.

The first tests run everywhere (no llama.cpp needed): a missing llama-cpp-python is a clear
error naming the extra, and the bot still answers extractively. The rest need llama-cpp-python
(CI does not build it) and the installed Gemma 3 270M (``botkit train base --pretrained
gemma-3-270m``: its GGUF beside its ``hf`` directory); they are skipped without them and are
marked slow (they load a 268M-parameter model).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from lm_fixtures import make_hit, make_request, tiny_lm_dir  # noqa: F401 - pytest fixture

from botkit.config import DialogueConfig, LocalLMConfig, parse_config
from botkit.errors import ConfigError, GenerationError
from botkit.generation import local_generator
from botkit.generation.llamacpp import LlamaCppLM, find_gguf
from botkit.generation.prompt import ChatMessage, build_messages
from botkit.responders.extractive import ExtractiveResponder
from botkit.responders.factory import make_responder
from botkit.responders.generative import GenerativeResponder

HITS = [make_hit("return-policy", score=0.82), make_hit("return-policy", "Return shipping", score=0.71),
        make_hit("shipping-times", score=0.6)]
QUESTION = "How long do I have to send something back?"
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None


def messages(query: str = QUESTION) -> list[ChatMessage]:
    return build_messages(make_request(query, HITS), HITS, history_turns=0)


def lm_config(model_path: Path | str, **kw: Any) -> LocalLMConfig:
    return LocalLMConfig(model_path=str(model_path), **{"backend": "llama-cpp", "max_new_tokens": 24, **kw})


# --- without llama.cpp ----------------------------------------------------------------------

def test_backend_is_validated_and_chosen_by_config(tiny_lm_dir: Path) -> None:
    with pytest.raises(ConfigError,
                       match=r"dialogue.local_lm.backend: bad value 'vllm' \(allowed: 'transformers' or 'llama-cpp'\)"):
        parse_config({"dialogue": {"local_lm": {"model_path": "m", "backend": "vllm"}}})
    from botkit.generation.local import LocalCausalLM

    assert isinstance(local_generator(lm_config(tiny_lm_dir, backend="transformers"), Path("/")), LocalCausalLM)
    assert isinstance(local_generator(lm_config(tiny_lm_dir), Path("/")), LlamaCppLM)


def test_missing_llama_cpp_python_is_a_clear_error(tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    lm = LlamaCppLM(lm_config(tiny_lm_dir), Path("/"))
    with pytest.raises(GenerationError, match=r"llama-cpp-python is not installed.*pip install -e '\.\[llamacpp\]'"):
        asyncio.run(lm.start())


async def test_the_bot_answers_extractively_when_its_local_lm_cannot_start(
        tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from botkit.app.compose import _LoadOrFallBack

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    dialogue = DialogueConfig(responder="local-lm", local_lm=lm_config(tiny_lm_dir))
    responder = make_responder(dialogue, Path("/"))
    assert isinstance(responder, GenerativeResponder)
    responder.generator = _LoadOrFallBack(responder.generator)  # as bot.build_engine wraps it
    await responder.start()  # does not raise: logged instead
    assert "could not start" in caplog.text and "pip install -e '.[llamacpp]'" in caplog.text
    reply = await responder.respond(make_request(QUESTION, HITS))
    assert reply.action == "answer"
    assert reply.text == ExtractiveResponder().answer_with(HITS[0]).text
    assert "did not start" in (reply.note or "") and "llamacpp" in (reply.note or "")
    await responder.close()


def test_gguf_is_found_beside_or_above_the_model_dir(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    assert find_gguf(hf) is None
    (tmp_path / "shipped-q4_k_m.gguf").write_bytes(b"x")
    assert find_gguf(hf) == tmp_path / "shipped-q4_k_m.gguf"
    for name in ("model-f16.gguf", "model-q8_0.gguf", ".model-q4_k_m.gguf.partial-1"):
        (hf / name).write_bytes(b"x")
    assert find_gguf(hf) == hf / "model-q8_0.gguf"  # in the directory first; q8_0 before f16; partials never


# --- with llama.cpp and Gemma 3 270M --------------------------------------------------------

def _gemma() -> Any:
    try:
        from training.pretrained import installed
    except ImportError:
        return None
    model = installed("gemma-3-270m")
    return model if model is not None and model.gguf_path is not None else None


needs_gemma = [pytest.mark.slow,
               pytest.mark.skipif(not HAVE_LLAMA,
                                  reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]')"),
               pytest.mark.skipif(_gemma() is None,
                                  reason="Gemma 3 270M is not installed (botkit train base --pretrained gemma-3-270m)")]


@pytest.fixture(scope="module")
def gemma_lm() -> Any:
    model = _gemma()
    lm = LlamaCppLM(lm_config(model.hf_dir, threads=2), Path("/"))
    asyncio.run(lm.start())
    yield lm
    asyncio.run(lm.close())


async def collect(lm: Any, msgs: list[ChatMessage]) -> list[str]:
    async with aclosing(lm.stream(msgs)) as deltas:
        return [d async for d in deltas]


def gemma_test(fn: Any) -> Any:
    for mark in needs_gemma:
        fn = mark(fn)
    return fn


@gemma_test
def test_gemma_tokens_match_and_stop_ids(gemma_lm: Any) -> None:
    assert gemma_lm.tokens_match is True  # llama.cpp tokenizes our prompts exactly as the HF tokenizer does
    tok = gemma_lm.tokenizer
    assert {tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id} <= gemma_lm.stop_ids
    assert gemma_lm.gguf_path.name == "gemma-3-270m-q4_k_m.gguf"


@gemma_test
async def test_gemma_streamed_equals_non_streamed_greedy(gemma_lm: Any) -> None:
    deltas = await collect(gemma_lm, messages())
    streamed = "".join(deltas)
    ids, max_new = gemma_lm._prepare(messages())
    gemma_lm.llm.reset()  # no cached prefix: the whole prompt evaluated again
    out, timed_out = await asyncio.to_thread(gemma_lm.generate_ids, ids, max_new)
    assert not timed_out and out
    plain = gemma_lm.tokenizer.decode(out, skip_special_tokens=True)
    assert streamed == plain and streamed.strip()
    assert len(deltas) >= len(out) // 2  # token by token (a few tokens print nothing alone)


@gemma_test
async def test_gemma_second_prompt_reuses_the_cached_instructions(gemma_lm: Any) -> None:
    await collect(gemma_lm, messages("Do you ship to Canada?"))
    first, _ = gemma_lm._prepare(messages("Do you ship to Canada?"))
    other, _ = gemma_lm._prepare(build_messages(make_request("Can I change my order?", HITS[2:]), HITS[2:], 0))
    common = next(i for i, (a, b) in enumerate(zip(first, other)) if a != b)
    assert common > 150  # the rules before the passages: evaluated once, not per request
    t0 = time.perf_counter()
    async with aclosing(gemma_lm.stream(messages("Can I change my order?"))) as deltas:
        await anext(deltas)
    assert time.perf_counter() - t0 < 5  # generous on a busy 2-core machine; benchmarks/serving.py measures it


@gemma_test
async def test_gemma_max_time_is_a_generation_error(gemma_lm: Any) -> None:
    fast = LlamaCppLM(lm_config(gemma_lm.config.model_path, max_new_tokens=400, max_time_s=0.05, threads=2), Path("/"))
    await fast.start()
    t0 = time.perf_counter()
    with pytest.raises(GenerationError, match=r"max_time_s=0.05") as err:
        await collect(fast, messages("What payment methods do you take?"))
    assert getattr(err.value, "code", None) == "timeout"
    assert time.perf_counter() - t0 < 10
    await fast.close()


@gemma_test
async def test_gemma_closing_early_stops_generation(gemma_lm: Any) -> None:
    long = gemma_lm.config.model_copy(update={"max_new_tokens": 400})
    before, gemma_lm.config = gemma_lm.config, long
    try:
        async with aclosing(gemma_lm.stream(messages("Tell me about gift cards."))) as deltas:
            await anext(deltas)
        assert not gemma_lm.generating and not gemma_lm.turns.busy
    finally:
        gemma_lm.config = before


@gemma_test
async def test_gemma_cold_prompt_gives_the_transformers_fp32_reply(gemma_lm: Any) -> None:
    """From an empty cache (no reused prefix) llama.cpp must read the prompt as transformers does.
    Without flash attention, llama-cpp-python 0.3.36 got this wrong (it repeated the instructions)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    ids, _ = gemma_lm._prepare(messages())
    gemma_lm.llm.reset()
    out, _ = await asyncio.to_thread(gemma_lm.generate_ids, ids, 6)
    model = AutoModelForCausalLM.from_pretrained(str(gemma_lm.config.model_path), local_files_only=True,
                                                 dtype=torch.float32).eval()
    x = torch.tensor([ids])
    with torch.inference_mode():
        ref = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=6, do_sample=False,
                             temperature=None, top_p=None, top_k=None)[0, len(ids):].tolist()
    assert out == ref, (gemma_lm.tokenizer.decode(out), gemma_lm.tokenizer.decode(ref))
