"""A GGUF model run by llama.cpp (``dialogue.local_lm.backend: llama-cpp``).

Same :class:`~botkit.generation.base.Generator` contract as :class:`LocalCausalLM`: text deltas
token by token, ``max_new_tokens``, ``max_time_s`` (a :class:`GenerationError`, the partial reply
dropped), cancellation when the consumer closes the stream, a stop at the model's end of turn,
and the same FIFO :class:`~botkit.generation.local.TurnQueue` (one generation at a time; a queued
request's wait does not count against ``max_time_s``).

Prompts are identical to training and to the transformers backend: the messages are rendered
by :func:`botkit.generation.prompt.render_prompt` with the Hugging Face tokenizer of
``model_path``, tokenized by that tokenizer, and the token ids go to llama.cpp as they are (the
GGUF's own tokenizer is never used for the prompt; :meth:`LlamaCppLM.start` checks that it
agrees and logs where it does not). Replies are decoded with the same tokenizer.

The fixed instructions at the head of every prompt are evaluated once: llama.cpp keeps the KV
cache of the previous request, and each new prompt re-evaluates only what follows the longest
common prefix (the rules, up to the passages). The cache is a full-size sliding-window cache
(``swa_full``), otherwise Gemma 3's sliding-window layers cannot roll back to that prefix.

Flash attention is on: with llama-cpp-python 0.3.36 and Gemma 3 270M Q4_K_M, the default
attention path evaluated a 431-token prompt wrongly when it was decoded from an empty cache
(greedy output: the instructions repeated; with a cached 170-token prefix, or with flash
attention, the reply transformers fp32 gives on the same ids).

llama-cpp-python is optional (``pip install -e '.[llamacpp]'``, a ~13-CPU-minute source build); it
and transformers are imported in :meth:`LlamaCppLM.start`, never at module import.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from botkit.config import LocalLMConfig
from botkit.errors import GenerationError
from botkit.generation.local import TurnQueue
from botkit.generation.prompt import ChatMessage, render_prompt, system_message

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[llamacpp]'"
_DONE = object()
# When model_path's directory holds several GGUF files and gguf_path is not set, the first
# match in this order is served (the fastest first: see benchmarks/README.md, "Serving").
GGUF_PREFERENCE = ("q4_k_m", "q8_0", "bf16", "f16", "f32")


def _error(message: str, code: str | None = None) -> GenerationError:
    return GenerationError(message, code=code)


def find_gguf(model_dir: Path) -> Path | None:
    """The GGUF file served for ``model_dir`` when ``gguf_path`` is not set: a ``*.gguf`` in the
    directory itself (as ``training/export_gguf.py`` writes it), else in its parent (where
    ``botkit train base --pretrained`` keeps the shipped file beside the ``hf`` directory); with
    several, the first in :data:`GGUF_PREFERENCE` order. None when there is none."""
    for where in (model_dir, model_dir.parent):
        found = sorted(p for p in where.glob("*.gguf") if p.is_file()) if where.is_dir() else []
        if found:
            def rank(p: Path) -> tuple[int, str]:
                name = p.name.lower()
                return next((i for i, q in enumerate(GGUF_PREFERENCE) if q in name), len(GGUF_PREFERENCE)), p.name
            return min(found, key=rank)
    return None


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a GenerationError that says how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise _error(f"dialogue.local_lm.backend is 'llama-cpp' but llama-cpp-python is not installed ({exc}); "
                     f"install it with `{INSTALL_HINT}` (builds llama.cpp from source, about 13 CPU-minutes) "
                     "or set dialogue.local_lm.backend: transformers", "not_installed") from exc
    return llama_cpp


class LlamaCppLM:
    """Generator backed by ``llama_cpp.Llama`` on a GGUF file, prompts from ``model_path``'s tokenizer.

    Args:
        config: the ``dialogue.local_lm`` section (``backend: llama-cpp``).
        project_root: relative paths are resolved against it.
        n_batch: prompt tokens per llama.cpp decode call.
    """

    def __init__(self, config: LocalLMConfig, project_root: Path, *, n_batch: int = 512):
        self.config = config
        self.project_root = Path(project_root)
        self.n_batch = n_batch
        self.name = f"llama-cpp:{Path(config.gguf_path or config.model_path).name}"
        self.gguf_path: Path | None = None
        self.tokens_match: bool | None = None  # llama.cpp's tokenization of a sample prompt == the HF one
        self._llm: Any = None
        self._tokenizer: Any = None
        self._stop_ids: frozenset[int] = frozenset()
        self._is_eog: Any = None
        self._positions = 0
        self._turns: TurnQueue | None = None
        self._worker: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (f"LlamaCppLM(gguf_path={str(self.gguf_path or self.config.gguf_path)!r}, "
                f"model_path={self.config.model_path!r})")

    @property
    def llm(self) -> Any:
        """The ``llama_cpp.Llama``; None before :meth:`start`."""
        return self._llm

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def turns(self) -> TurnQueue | None:
        return self._turns

    @property
    def stop_ids(self) -> frozenset[int]:
        """Token ids that end a reply (EOS and end-of-turn)."""
        return self._stop_ids

    @property
    def generating(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.project_root / path

    async def start(self) -> None:
        """Load the tokenizer and the GGUF model (in a thread), check they agree, warm the cache.

        Raises:
            GenerationError: llama-cpp-python is not installed (the message names the extra to
                install), the tokenizer or the GGUF file is missing or unreadable, an unmerged
                LoRA adapter is configured, or tokenizer and GGUF come from different models.
        """
        if self._llm is not None:
            return
        await asyncio.to_thread(self._load)
        self._turns = TurnQueue()
        log.info("llama.cpp LM %s loaded (tokenizer: %s, %d positions, tokens match: %s)",
                 self.gguf_path, self.config.model_path, self._positions, self.tokens_match)

    def _load(self) -> None:
        llama_cpp = import_llama_cpp()
        cfg = self.config
        if cfg.adapter_path:
            raise _error(f"dialogue.local_lm.adapter_path: {cfg.adapter_path}: the llama-cpp backend serves merged "
                         "models only; merge the adapter and export it with `python training/export_gguf.py "
                         "MERGED_DIR`, or use backend: transformers")
        model_dir = self._resolve(cfg.model_path)
        if not model_dir.is_dir():
            raise _error(f"dialogue.local_lm.model_path: {model_dir} is not a directory; the llama-cpp backend "
                         "reads the tokenizer (and chat template) from the Hugging Face model directory")
        gguf = self._resolve(cfg.gguf_path) if cfg.gguf_path else find_gguf(model_dir)
        if gguf is None:
            raise _error(f"dialogue.local_lm.gguf_path: not set, and {model_dir} (nor its parent) holds no *.gguf "
                         "file; export one with `python training/export_gguf.py MODEL_DIR` or set gguf_path")
        if not gguf.is_file():
            raise _error(f"dialogue.local_lm.gguf_path: {gguf} does not exist")
        self.gguf_path = gguf
        self.name = f"llama-cpp:{gguf.name}"
        tokenizer = self._load_tokenizer(model_dir)
        threads = cfg.threads or (os.cpu_count() or 1)
        n_ctx = cfg.max_prompt_tokens + cfg.max_new_tokens
        try:
            llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(self.n_batch, n_ctx),
                                  n_threads=threads, n_threads_batch=threads, swa_full=True, flash_attn=True,
                                  verbose=False)
        except Exception as exc:  # noqa: BLE001 - llama-cpp-python raises ValueError/RuntimeError
            raise _error(f"dialogue.local_lm.gguf_path: {gguf}: llama.cpp could not load it ({exc}); "
                         "is it a GGUF model file?") from exc
        n_train = int(getattr(getattr(llm, "_model", None), "n_ctx_train", lambda: 0)() or 0)
        self._positions = min(llm.n_ctx(), n_train) if n_train > 0 else llm.n_ctx()
        self._llm, self._tokenizer = llm, tokenizer
        try:
            self._check_vocab()
        except BaseException:
            self._close_llm()
            raise
        self._stop_ids = self._find_stop_ids(model_dir)
        vocab = llama_cpp.llama_model_get_vocab(llm.model) if hasattr(llama_cpp, "llama_model_get_vocab") else None
        if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
            self._is_eog = lambda tok: bool(llama_cpp.llama_vocab_is_eog(vocab, tok))
        # Page the weights in and leave the head of every prompt in the KV cache.
        warm = self._sample_ids()
        for _ in llm.generate(warm, temp=0.0, repeat_penalty=1.0):
            break

    def _load_tokenizer(self, model_dir: Path) -> Any:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise _error(f"dialogue.local_lm.model_path: {model_dir}: the tokenizer could not be loaded ({exc}); "
                         "the llama-cpp backend renders prompts with the model directory's tokenizer") from exc
        return tokenizer

    def _sample_text(self) -> str:
        from botkit.types import Hit

        hit = Hit(article_id="sample", title="Returns", kind="article", score=1.0, dense_score=1.0,
                  lexical_score=0.0, chunk_id=0, heading="Returns > Time limit",
                  passage="You can return most items within 30 days of delivery. Refunds take 5–10 days.")
        messages = [system_message([hit], "botkit"),
                    ChatMessage("user",
                                "<customer_message>\nCan I send back shoes I wore once? 🙂\n</customer_message>")]
        return render_prompt(self._tokenizer, messages, self.config.max_prompt_tokens)

    def _hf_ids(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=not getattr(self._tokenizer, "chat_template", None))
                    ["input_ids"])

    def _sample_ids(self) -> list[int]:
        return self._hf_ids(self._sample_text())

    def _check_vocab(self) -> None:
        """The HF ids must mean the same text to llama.cpp; log whether its own tokenization agrees."""
        llm, text = self._llm, self._sample_text()
        ids = self._hf_ids(text)
        if max(ids) >= llm.n_vocab():
            raise _error(f"{self.gguf_path} has {llm.n_vocab()} tokens but the tokenizer of "
                         f"{self.config.model_path} produced id {max(ids)}: they are not the same model")
        ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        self.tokens_match = list(ours) == ids
        if self.tokens_match:
            return
        first = next((i for i, (a, b) in enumerate(zip(ours, ids)) if a != b), min(len(ours), len(ids)))
        spoken = llm.detokenize(ids, special=True).decode("utf-8", errors="replace")
        if spoken != text:
            raise _error(f"{self.gguf_path} and the tokenizer of {self.config.model_path} disagree on what token "
                         f"ids mean (from token {first}): they are not the same model")
        log.warning("llama.cpp tokenizes prompts differently from %s (from token %d of %d); serving the Hugging "
                    "Face token ids, which it reads back as the same text", self.config.model_path, first, len(ids))

    def _find_stop_ids(self, model_dir: Path) -> frozenset[int]:
        stops: set[int] = set()
        tok = self._tokenizer
        if tok.eos_token_id is not None:
            stops.add(int(tok.eos_token_id))
        try:
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(str(model_dir), local_files_only=True).eos_token_id
        except Exception:  # noqa: BLE001 - no generation_config.json: the tokenizer's EOS and the GGUF's
            eos = None
        stops.update([eos] if isinstance(eos, int) else list(eos or []))
        for marker in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = tok.convert_tokens_to_ids(marker) if marker in tok.get_vocab() else None
            if isinstance(tid, int) and tid != tok.unk_token_id and marker in (getattr(tok, "chat_template", "") or ""):
                stops.add(tid)
        stops.add(int(self._llm.token_eos()))
        return frozenset(s for s in stops if s >= 0)

    def _close_llm(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    async def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            await asyncio.wait([self._worker])
        self._close_llm()
        self._tokenizer = None

    def _prepare(self, messages: list[ChatMessage]) -> tuple[list[int], int]:
        """Prompt ids and the number of new tokens allowed (both fit the context)."""
        positions, cfg = self._positions, self.config
        budget = min(cfg.max_prompt_tokens, max(positions - cfg.max_new_tokens, positions // 2))
        ids = self._hf_ids(render_prompt(self._tokenizer, messages, budget))
        new = min(cfg.max_new_tokens, positions - len(ids))
        if new < 1:
            raise _error(f"the prompt ({len(ids)} tokens) fills the model's {positions} positions; "
                         "lower dialogue.local_lm.max_prompt_tokens", "prompt_too_long")
        return ids, new

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Generate a reply and yield it as text deltas, one per token (held back while a token
        ends inside a UTF-8 character).

        Raises:
            GenerationError: not started, the prompt does not fit, generation failed, or it ran
                past ``max_time_s`` (the partial text already yielded must then be discarded).
        """
        if self._llm is None or self._turns is None:
            raise _error(f"{self.name}: start() was not called (or close() was)", "not_started")
        turn = await self._turns.acquire(self.config.max_queue_s, self.name)
        worker: asyncio.Future[None] | None = None
        cancel = threading.Event()
        try:
            ids, max_new = await asyncio.to_thread(self._prepare, messages)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            self._worker = worker = loop.run_in_executor(None, self._generate, ids, max_new, loop, queue, cancel)
            worker.add_done_callback(lambda _: turn.release())  # the turn ends with the thread
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                yield str(item)
            await worker  # re-raises what the thread raised
        finally:
            cancel.set()
            if worker is not None and not worker.done():
                await asyncio.wait([worker])
            turn.release()

    def generate_ids(self, ids: list[int], max_new: int, cancel: threading.Event | None = None,
                     on_token: Any = None) -> tuple[list[int], bool]:
        """Blocking: greedy (or sampled, per ``temperature``) new token ids after ``ids``, stopping
        at an end-of-turn token, ``max_new``, ``cancel`` or ``max_time_s``. Returns (ids, timed_out).
        ``on_token(ids_so_far)`` is called after each token."""
        llm, cfg = self._llm, self.config
        if cfg.temperature > 0:
            sampling: dict[str, Any] = dict(temp=cfg.temperature, top_k=40, top_p=0.95, min_p=0.05)
        else:
            sampling = dict(temp=0.0)
        deadline = time.monotonic() + cfg.max_time_s
        out: list[int] = []
        timed_out = False
        gen = llm.generate(ids, repeat_penalty=1.0, reset=True, **sampling)
        try:
            for token in gen:
                if cancel is not None and cancel.is_set():
                    break
                token = int(token)
                if token in self._stop_ids or (self._is_eog is not None and self._is_eog(token)):
                    break
                out.append(token)
                if on_token is not None:
                    on_token(out)
                if len(out) >= max_new:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
        finally:
            gen.close()
        return out, timed_out

    def _generate(self, ids: list[int], max_new: int, loop: asyncio.AbstractEventLoop,
                  queue: asyncio.Queue[object], cancel: threading.Event) -> None:
        """Worker thread: generate, decode incrementally, post each new piece of text to the loop."""
        tokenizer = self._tokenizer
        sent = 0
        shown = ""

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def on_token(out: list[int]) -> None:
            nonlocal sent, shown
            text = tokenizer.decode(out, skip_special_tokens=True)
            if text.endswith("\ufffd") or not text.startswith(shown):
                return  # mid-character, or the decoder revised earlier text: wait for more
            if len(text) > sent:
                post(text[sent:])
                sent, shown = len(text), text

        try:
            out, timed_out = self.generate_ids(ids, max_new, cancel, on_token)
            final = tokenizer.decode(out, skip_special_tokens=True)
            if final.startswith(shown) and len(final) > sent:
                post(final[sent:])
            elif not final.startswith(shown):
                raise RuntimeError("incremental decoding diverged from the full decode")
        except GenerationError:
            raise
        except Exception as exc:  # noqa: BLE001 - surface any failure as the one documented error
            raise _error(f"{self.name}: generation failed: {exc}") from exc
        finally:
            post(_DONE)
        if timed_out and not cancel.is_set():
            raise _error(f"{self.name}: generation ran past max_time_s={self.config.max_time_s}s "
                         "(dialogue.local_lm.max_time_s); the partial reply was dropped", "timeout")
