"""The responder ``dialogue.responder`` names, built from the config (nothing loads until start())."""

from __future__ import annotations

from pathlib import Path

from botkit.config import DialogueConfig
from botkit.errors import GenerationError
from botkit.generation import local_generator
from botkit.responders.base import Responder
from botkit.responders.extractive import ExtractiveResponder
from botkit.responders.generative import GenerativeResponder


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
