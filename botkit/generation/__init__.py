"""Generators: the language models a :class:`~botkit.responders.GenerativeResponder` writes with.

::

    Generator (protocol: name, start, close, stream)
    ├── LocalCausalLM       local transformers model (+ LoRA adapter)   [torch, lazy]
    ├── LlamaCppLM          a GGUF file run by llama.cpp (backend: llama-cpp) [llama_cpp, lazy]
    └── OpenAICompatible    chat-completions server over HTTP/SSE       [aiohttp, lazy]
    prompt.py (messages, budgets), grounding.py (is the reply supported by the passages?)

Importing this package is cheap: torch/transformers/peft load only in
``LocalCausalLM.start()``, aiohttp only when ``OpenAICompatible`` is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from botkit.generation.base import Generator
from botkit.generation.grounding import grounding_score, is_grounded, unsupported_numbers
from botkit.generation.prompt import ChatMessage, build_messages, render_prompt

if TYPE_CHECKING:  # pragma: no cover
    from botkit.config import LocalLMConfig
    from botkit.generation.llamacpp import LlamaCppLM
    from botkit.generation.local import LocalCausalLM
    from botkit.generation.openai import OpenAICompatible

__all__ = [
    "ChatMessage", "Generator", "LlamaCppLM", "LocalCausalLM", "OpenAICompatible", "build_messages",
    "grounding_score", "is_grounded", "local_generator", "render_prompt", "unsupported_numbers",
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
