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
    return Engine(
        retriever=KnowledgeRetriever(kb),
        responder=make_responder(cfg.dialogue, project.root),
        store=store,
        rules=build_rules(cfg.escalation),
        config=cfg.dialogue,
        bot_name=cfg.name,
        summarize=summarize,
    )
