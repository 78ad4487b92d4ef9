"""Responders: what turns a customer's question and the retrieved passages into a reply.

::

    Responder (protocol: name, start, close, respond; optional respond_stream)   base.py
    ├── ExtractiveResponder   the knowledge base's own words, no model (the default)   extractive.py
    ├── GenerativeResponder   a Generator writes, grounding checks, extractive fallback   generative.py
    └── ReloadingResponder    follows the model registry: promoted versions swap in live   reloading.py
    make_responder(dialogue, project_root) -> the one ``dialogue.responder`` names   factory.py

The generators themselves (local transformers, llama.cpp, OpenAI-compatible HTTP) live in
:mod:`botkit.generation`; importing this package loads none of them.
"""

from botkit.responders.base import Responder, ResponderRequest, StreamingResponder, source_of
from botkit.responders.extractive import DONT_KNOW, ExtractiveResponder
from botkit.responders.factory import make_responder
from botkit.responders.generative import GenerativeResponder, fallback_code
from botkit.responders.reloading import ReloadingResponder

__all__ = ["DONT_KNOW", "ExtractiveResponder", "GenerativeResponder", "ReloadingResponder", "Responder",
           "ResponderRequest", "StreamingResponder", "fallback_code", "make_responder", "source_of"]
