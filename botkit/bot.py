"""Composition: build the dialogue engine a bot project describes.

This is the one place that wires the knowledge base (FAISS, torch), the configured
responder, the escalation rules and the conversation store together; the engine itself
only sees their protocols.
"""

from __future__ import annotations

from pathlib import Path

from botkit.engine import Engine
from botkit.escalation import build_rules, summarize
from botkit.project import Project
from botkit.store import ConversationStore, SQLiteConversationStore

CONVERSATIONS_DB = "conversations.sqlite3"


def build_engine(project: Project, *, store: ConversationStore | None = None, progress: bool | None = None,
                 conversations_db: Path | None = None) -> Engine:
    """An engine for the project (not started: use ``async with engine``)."""
    from botkit.generation import make_responder
    from knowledge.base import KnowledgeBase
    from knowledge.retriever import KnowledgeRetriever

    cfg = project.config
    kb = KnowledgeBase.open(project, progress=progress)
    store = store or SQLiteConversationStore(conversations_db or project.state_dir / CONVERSATIONS_DB)
    responder = make_responder(cfg.dialogue, project.root)
    if cfg.dialogue.responder == "local-lm" and cfg.dialogue.local_lm is not None:
        responder = _registry_responder(project)
    return Engine(
        retriever=KnowledgeRetriever(kb),
        responder=responder,
        store=store,
        rules=build_rules(cfg.escalation),
        config=cfg.dialogue,
        bot_name=cfg.name,
        summarize=summarize,
    )


def _registry_responder(project: Project):  # type: ignore[no-untyped-def]
    """The local LM as the model registry says: the promoted version, followed live."""
    from botkit.generation import make_responder
    from botkit.reloading import ReloadingResponder
    from training.registry import ModelRegistry, current_lm_config

    registry = ModelRegistry.for_project(project)
    dialogue = project.config.dialogue
    base = dialogue.local_lm
    assert base is not None

    def build(_version: object):  # type: ignore[no-untyped-def]
        lm = current_lm_config(registry, base)
        return make_responder(dialogue.model_copy(update={"local_lm": lm}), project.root)

    return ReloadingResponder(build, registry.watch("lm"))
