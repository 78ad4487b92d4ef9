"""Generative responders: a language model writes the reply, the knowledge base bounds it.

::

    make_responder(dialogue, project_root)  -> Responder chosen by dialogue.responder
    GenerativeResponder(generator, fallback, dialogue)
        └── Generator (protocol: name, start, close, stream)
            ├── LocalCausalLM       local transformers model (+ LoRA adapter)   [torch, lazy]
            ├── LlamaCppLM          a GGUF file run by llama.cpp (backend: llama-cpp) [llama_cpp, lazy]
            └── OpenAICompatible    chat-completions server over HTTP/SSE       [aiohttp, lazy]

Importing this package is cheap: torch/transformers/peft load only in
``LocalCausalLM.start()``, aiohttp only when ``OpenAICompatible`` is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from botkit.config import DialogueConfig
from botkit.errors import GenerationError
from botkit.generation.base import Generator
from botkit.generation.grounding import grounding_score, is_grounded, unsupported_numbers
from botkit.generation.prompt import ChatMessage, build_messages, render_prompt
from botkit.generation.responder import GenerativeResponder
from botkit.responder import ExtractiveResponder, Responder

if TYPE_CHECKING:  # pragma: no cover
    from botkit.config import LocalLMConfig
    from botkit.generation.llamacpp import LlamaCppLM
    from botkit.generation.local import LocalCausalLM
    from botkit.generation.openai import OpenAICompatible

__all__ = [
    "ChatMessage", "Generator", "GenerativeResponder", "LlamaCppLM", "LocalCausalLM", "OpenAICompatible",
    "build_messages", "grounding_score", "is_grounded", "local_generator", "make_responder", "render_prompt",
    "unsupported_numbers",
]


def __getattr__(name: str) -> Any:
    """Lazy access to the generators, so `import botkit.generation` stays light."""
    if name == "LocalCausalLM":
        from botkit.generation.local import LocalCausalLM
        return LocalCausalLM
    if name == "LlamaCppLM":
        from botkit.generation.llamacpp import LlamaCppLM
        return LlamaCppLM
    if name == "OpenAICompatible":
        from botkit.generation.openai import OpenAICompatible
        return OpenAICompatible
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def local_generator(config: LocalLMConfig, project_root: Path) -> Generator:
    """The local LM generator ``config.backend`` names (not started)."""
    if config.backend == "llama-cpp":
        from botkit.generation.llamacpp import LlamaCppLM
        return LlamaCppLM(config, project_root)
    from botkit.generation.local import LocalCausalLM
    return LocalCausalLM(config, project_root)


def make_responder(dialogue: DialogueConfig, project_root: Path) -> Responder:
    """The responder ``dialogue.responder`` asks for; nothing is loaded until its start().

    Raises:
        GenerationError: "local-lm" without ``dialogue.local_lm``, or "openai" without
            ``dialogue.openai``.
    """
    extractive = ExtractiveResponder(clarify_margin=dialogue.clarify_margin)
    if dialogue.responder == "extractive":
        return extractive
    if dialogue.responder == "local-lm":
        if dialogue.local_lm is None:
            raise GenerationError("dialogue.local_lm: missing; dialogue.responder is 'local-lm', so set "
                                  "dialogue.local_lm.model_path to a local causal-LM directory")
        return GenerativeResponder(local_generator(dialogue.local_lm, project_root), extractive, dialogue)
    if dialogue.responder == "openai":
        if dialogue.openai is None:
            raise GenerationError("dialogue.openai: missing; dialogue.responder is 'openai', so set "
                                  "dialogue.openai.base_url and dialogue.openai.model")
        from botkit.generation.openai import OpenAICompatible
        return GenerativeResponder(OpenAICompatible(dialogue.openai), extractive, dialogue)
    raise GenerationError(f"dialogue.responder: bad value {dialogue.responder!r} "
                          "(allowed: 'extractive', 'local-lm', 'openai')")
