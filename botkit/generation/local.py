"""A Hugging Face causal LM from a local directory, optionally with a LoRA adapter.

Heavy: importing this module's dependencies (torch, transformers, peft) takes seconds, so they
are imported inside :meth:`LocalCausalLM.start` and the worker, never at module import. Nothing
is ever downloaded: every load uses ``local_files_only=True``.

Threads: generation runs in a worker thread (``model.generate`` is CPU-bound and would stall
every other conversation on the event loop); text comes back through an ``asyncio.Queue`` fed
with ``loop.call_soon_threadsafe``. Only one generation runs per model at a time: two concurrent
``generate`` calls on 2 cores would each run at well under half speed and both miss their time
bound, and the tokenizer's streaming state is not shared-safe.

Fair sharing (:class:`TurnQueue`): further conversations queue first come, first served. A turn
lasts one generation (bounded by ``max_new_tokens`` and ``max_time_s``) and ends when the worker
thread ends, not when the consumer has read the last delta, so a slow reader never holds the
model. A queued request's wait does not count against ``max_time_s`` (its clock starts with its
turn); ``max_queue_s`` optionally bounds the wait itself. A request cancelled while queued (the
customer disconnected) leaves the queue at once and never takes a turn.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from botkit.config import LocalLMConfig
from botkit.errors import GenerationError
from botkit.generation.prompt import ChatMessage, encode_prompt, prompt_budget

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

# Encoder families that the causal-LM auto class would still accept (e.g. BertLMHeadModel),
# but that are not decoders unless their config says so.
_ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie", "rembert",
                            "roc_bert", "megatron-bert", "data2vec-text", "xmod", "big_bird", "mpnet"})
_DONE = object()

CAUSAL_LM_DIR_HINT = ("set it to a local causal-LM directory (config.json, tokenizer and weights, "
                      "e.g. a GPT-2, Llama or Qwen export)")
"""What every :func:`check_causal_lm_dir` error tells the user to do."""


def check_causal_lm_dir(path: Path, key: str, *, if_not_causal: str = CAUSAL_LM_DIR_HINT,
                        error: type[Exception] = GenerationError) -> Any:
    """The model's transformers ``AutoConfig``, or ``error`` saying why ``path`` is no causal LM.

    One check for every place that loads a local causal LM (serving here, fine-tuning in
    training.lora), made before the slow weight load so a wrong directory (missing, a file, no
    config.json, an encoder such as a sentence-transformers model) is named at once. ``key`` is
    the setting the path came from (each message starts with it); ``if_not_causal`` is what the
    caller advises when the directory holds a model that cannot write replies; ``error`` is the
    caller's error class (GenerationError here, TrainingError for training).
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    what = CAUSAL_LM_DIR_HINT
    if not path.exists():
        raise error(f"{key}: {path} does not exist; {what}")
    if not path.is_dir():
        raise error(f"{key}: {path} is a file, not a model directory; {what}")
    if not (path / "config.json").is_file():
        raise error(f"{key}: {path} has no config.json, so it is not a Hugging Face model directory; {what}")
    try:
        cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises ValueError/OSError/KeyError here
        raise error(f"{key}: {path}/config.json could not be read ({exc}); {what}") from exc
    causal_names = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
                    for n in ((v,) if isinstance(v, str) else v)}
    archs = list(getattr(cfg, "architectures", None) or [])
    causal = (not getattr(cfg, "is_encoder_decoder", False)
              and cfg.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
              and (any(a in causal_names or a.endswith("ForCausalLM") for a in archs) if archs
                   else cfg.model_type not in _ENCODER_TYPES or bool(getattr(cfg, "is_decoder", False))))
    if not causal:
        is_st = (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file()
        kind = "a sentence-transformers embedding model" if is_st else "not a causal (decoder) language model"
        shown = ", ".join(archs) or cfg.model_type
        raise error(f"{key}: {path} holds {shown}, {kind}; {if_not_causal}")
    return cfg


class Turn:
    """One request's turn on the model, from :meth:`TurnQueue.acquire`; release it exactly once
    (further calls are no-ops)."""

    __slots__ = ("_queue", "released", "waited_s")

    def __init__(self, queue: TurnQueue, waited_s: float):
        self._queue = queue
        self.waited_s = waited_s
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._queue._hand_on()


class TurnQueue:
    """First come, first served turns on one model: one holder at a time, the rest in arrival order.

    ``asyncio.Lock`` is FIFO too, but this queue hands the turn directly to the next waiter (no
    newcomer can slip in between), bounds the wait, says how many are waiting, and copes with the
    race of a waiter cancelled or timed out just as the turn is handed to it (the turn passes on).
    Event-loop only: not thread-safe.
    """

    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._held = False
        self.served = 0

    @property
    def busy(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """Requests queued behind the current holder."""
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self, max_wait_s: float | None = None, what: str = "model") -> Turn:
        """Wait for this request's turn.

        Raises:
            GenerationError: the turn did not come within ``max_wait_s`` (the request has left
                the queue). ``asyncio.CancelledError`` likewise leaves the queue.
        """
        started = time.perf_counter()
        if not self._held and not self._waiters:
            self._held = True
            self.served += 1
            return Turn(self, 0.0)
        ahead = self.waiting + 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            if max_wait_s is None:
                await waiter
            else:
                await asyncio.wait_for(asyncio.shield(waiter), max_wait_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._hand_on()  # it was handed to us as we gave up: pass it on
            else:
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise GenerationError(f"{what}: no turn on the model within max_queue_s={max_wait_s}s "
                                      f"({ahead} request(s) were ahead; dialogue.local_lm.max_queue_s)",
                                      code="busy") from None
            raise
        self.served += 1
        return Turn(self, time.perf_counter() - started)

    def _hand_on(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes straight to it; _held stays True
                return
        self._held = False


class LocalCausalLM:
    """Generator backed by ``AutoModelForCausalLM`` loaded from ``config.model_path``.

    Args:
        config: the ``dialogue.local_lm`` section.
        project_root: relative model and adapter paths are resolved against it.
        merge_adapter: fold the LoRA weights into the base model after loading. Same tokens,
            and it avoids the 9-18 % generation slow-down of an unmerged adapter (MEASURED.md).
    """

    def __init__(self, config: LocalLMConfig, project_root: Path, *, merge_adapter: bool = True):
        self.config = config
        self.project_root = Path(project_root)
        self.merge_adapter = merge_adapter
        self.name = f"local-lm:{Path(config.model_path).name}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._turns: TurnQueue | None = None
        self._worker: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"LocalCausalLM(model_path={self.config.model_path!r}, adapter_path={self.config.adapter_path!r})"

    @property
    def model(self) -> Any:
        """The loaded (and merged) model; None before :meth:`start`."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def turns(self) -> TurnQueue | None:
        """The FIFO queue of requests for this model (None before :meth:`start`)."""
        return self._turns

    @property
    def generating(self) -> bool:
        """True while a generation thread is running."""
        return self._worker is not None and not self._worker.done()

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.project_root / path

    async def start(self) -> None:
        """Load tokenizer, model and adapter (in a thread: seconds of CPU and disk).

        Raises:
            GenerationError: the path is missing, is not a model directory, holds a model that
                is not a causal LM (e.g. a sentence-transformers encoder), or fails to load.
        """
        if self._model is not None:
            return
        self._tokenizer, self._model = await asyncio.to_thread(self._load)
        self._turns = TurnQueue()
        log.info("local LM %s loaded (adapter: %s)", self.config.model_path, self.config.adapter_path or "none")

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self._resolve(self.config.model_path)
        check_causal_lm_dir(path, "dialogue.local_lm.model_path",
                            if_not_causal=f"{CAUSAL_LM_DIR_HINT}. An embedding model belongs in "
                                          "knowledge.embedding.model, not in dialogue.local_lm")
        if self.config.adapter_path:  # checked before the (slow) weight load
            self._check_adapter_dir(self._resolve(self.config.adapter_path))
        if self.config.threads > 0:
            # Process-wide. On a busy 2-core machine 1 thread was ~20x faster than 2 for a tiny
            # GPT-2 (OpenMP threads spin while the other core is taken).
            torch.set_num_threads(self.config.threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise GenerationError(f"dialogue.local_lm.model_path: {path}: the tokenizer could not be loaded ({exc}); "
                                  "the directory needs tokenizer.json or the tokenizer's own files") from exc
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise GenerationError(f"dialogue.local_lm.model_path: {path}: the model could not be loaded "
                                  f"({exc})") from exc
        if self.config.adapter_path:
            model = self._apply_adapter(model, self._resolve(self.config.adapter_path))
        model.eval()
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token  # generate() needs a pad id; EOS is the usual choice
        return tokenizer, model

    @staticmethod
    def _check_adapter_dir(adapter: Path) -> None:
        if not (adapter / "adapter_config.json").is_file():
            what = ("does not exist" if not adapter.exists()
                    else "is not a LoRA adapter directory (no adapter_config.json)")
            raise GenerationError(f"dialogue.local_lm.adapter_path: {adapter} {what}; set it to a directory "
                                  "written by `botkit train`, or remove the key")

    def _apply_adapter(self, model: Any, adapter: Path) -> Any:
        from peft import PeftModel

        key = "dialogue.local_lm.adapter_path"
        try:
            peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        except Exception as exc:  # noqa: BLE001
            raise GenerationError(f"{key}: {adapter} could not be applied to {self.config.model_path} ({exc}); "
                                  "was it trained on this base model?") from exc
        return peft_model.merge_and_unload() if self.merge_adapter else peft_model

    async def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            await asyncio.wait([self._worker])
        self._model = None
        self._tokenizer = None

    def _prepare(self, messages: list[ChatMessage]) -> tuple[list[int], int]:
        """Prompt ids and the number of new tokens allowed (both fit the model's positions)."""
        positions = getattr(self._model.config, "max_position_embeddings", None)
        budget = prompt_budget(self.config.max_prompt_tokens, positions, self.config.max_new_tokens)
        ids = encode_prompt(self._tokenizer, messages, budget)  # the same ids training learned from
        new = self.config.max_new_tokens
        if isinstance(positions, int) and positions > 0:
            new = min(new, positions - len(ids))
        if new < 1:
            raise GenerationError(f"the prompt ({len(ids)} tokens) fills the model's {positions} positions; "
                                  "lower dialogue.local_lm.max_prompt_tokens", code="prompt_too_long")
        return ids, new

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Generate a reply and yield it as text deltas (whole words, as the streamer flushes them).

        Raises:
            GenerationError: not started, the prompt does not fit, generation failed, or it ran
                past ``max_time_s`` (the partial text already yielded must then be discarded).
        """
        if self._model is None or self._turns is None:
            raise GenerationError(f"{self.name}: start() was not called (or close() was)")
        turn = await self._turns.acquire(self.config.max_queue_s, self.name)
        worker: asyncio.Future[None] | None = None
        cancel = threading.Event()
        try:
            ids, max_new = await asyncio.to_thread(self._prepare, messages)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            self._worker = worker = loop.run_in_executor(None, self._generate, ids, max_new, loop, queue, cancel)
            # The turn ends with the thread: deltas not yet read stay queued for this consumer.
            worker.add_done_callback(lambda _: turn.release())
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                yield str(item)
            await worker  # re-raises what the thread raised
        finally:
            # Reached on normal end, on error and when the consumer closes us early: the flag
            # makes generate() stop at its next token, and we wait for that so the turn is only
            # handed on once the thread is idle.
            cancel.set()
            if worker is not None and not worker.done():
                await asyncio.wait([worker])
            turn.release()

    def _generate(self, ids: list[int], max_new: int, loop: asyncio.AbstractEventLoop,
                  queue: asyncio.Queue[object], cancel: threading.Event) -> None:
        """Worker thread: run ``model.generate`` with streaming, a time bound and a cancel flag."""
        import torch
        from transformers import MaxTimeCriteria, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        class LoopStreamer(TextIteratorStreamer):
            """Hands each flushed piece of text to the event loop instead of a thread queue."""

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    post(text)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                done = torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)
                return cast(torch.BoolTensor, done)  # a bool tensor; torch types torch.full as Tensor

        class TimeBound(MaxTimeCriteria):
            fired = False

            def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                done = super().__call__(input_ids, scores, **kwargs)
                if bool(done.any()):
                    self.fired = True
                return done

        tokenizer, model, cfg = self._tokenizer, self._model, self.config
        if cfg.threads > 0 and torch.get_num_threads() != cfg.threads:
            # torch keeps the count per thread once a thread has used it: set it where we run.
            torch.set_num_threads(cfg.threads)
        streamer = LoopStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        bound = TimeBound(cfg.max_time_s)
        x = torch.tensor([ids], dtype=torch.long)
        kwargs: dict[str, Any] = dict(
            input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, streamer=streamer,
            stopping_criteria=StoppingCriteriaList([bound, Cancelled()]),
            pad_token_id=tokenizer.pad_token_id,
        )
        if cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=cfg.temperature)
        else:  # greedy; clear sampling knobs a model's generation_config may carry
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except Exception as exc:  # noqa: BLE001 - surface any failure as the one documented error
            raise GenerationError(f"{self.name}: generation failed: {exc}") from exc
        finally:
            post(_DONE)
        if bound.fired and not cancel.is_set():
            raise GenerationError(f"{self.name}: generation ran past max_time_s={cfg.max_time_s}s "
                                  "(dialogue.local_lm.max_time_s); the partial reply was dropped", code="timeout")
