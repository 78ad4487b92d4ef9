"""Composition: build the dialogue engine a bot project describes.

This is the one place that wires the knowledge base (FAISS, torch), the configured
responder, the escalation rules and the conversation store together; the engine itself
only sees their protocols.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from botkit.config import StorageConfig
from botkit.engine import Engine
from botkit.errors import ConfigError, GenerationError
from botkit.escalation import build_rules, summarize
from botkit.events import EventBus
from botkit.locks import ConversationLock
from botkit.project import Project
from botkit.store import ConversationStore, SQLiteConversationStore

if TYPE_CHECKING:
    from botkit.generation.base import Generator
    from botkit.generation.prompt import ChatMessage
    from botkit.responders.base import Responder
    from botkit.responders.reloading import ReloadingResponder
    from connectors.webchat.limits import RateLimiter
    from knowledge.base import KnowledgeBase
    from knowledge.store import KnowledgeStoreBase

CONVERSATIONS_DB = "conversations.sqlite3"



def _postgres_store(storage: StorageConfig, path: Path) -> ConversationStore:
    from botkit.backends.postgres import PostgresConversationStore

    return PostgresConversationStore(database_url(storage), schema=storage.postgres_schema,
                                     source=storage.database_url_env)


def database_url(storage: StorageConfig) -> str:
    """The PostgreSQL DSN from ``storage.database_url_env``, checked; a ConfigError says what to set."""
    dsn = os.environ.get(storage.database_url_env, "").strip()
    if not dsn:
        raise ConfigError(f"bot.yaml: storage.backend: postgresql needs the database's address in the environment "
                          f"variable {storage.database_url_env} (storage.database_url_env), e.g. "
                          f"{storage.database_url_env}=postgresql://botkit:PASSWORD@db.example.com:5432/botkit; "
                          "it is never written in bot.yaml")
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{storage.database_url_env} must be a postgresql:// address "
                          "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE), not one starting "
                          f"{dsn.split(':', 1)[0]!r}")
    return dsn


def redis_url(storage: StorageConfig) -> str:
    """The Redis URL in the environment variable ``storage.redis_url_env`` ("": unset, so this
    process keeps its own events, locks, rate limits and sign-in counts)."""
    return os.environ.get(storage.redis_url_env, "").strip()


@contextmanager
def redis_client(storage: StorageConfig) -> Iterator[None]:
    """Around the import of a Redis backend: a missing Redis client is a ConfigError that says
    what to install (or unset)."""
    try:
        yield
    except ImportError as exc:
        raise ConfigError(f"{storage.redis_url_env} is set, but the Redis client is not installed: "
                          f"pip install 'botkit[redis]' (or unset {storage.redis_url_env}): {exc}") from exc


# ``storage.backend`` -> how to build that conversation store, given the storage section and the
# project's database path (the SQLite file; other backends ignore it).
STORE_BACKENDS: dict[str, Callable[[StorageConfig, Path], ConversationStore]] = {
    "sqlite": lambda storage, path: SQLiteConversationStore(path, group_commit=storage.sqlite_group_commit),
    "postgresql": _postgres_store,
}


def store_backend(storage: StorageConfig) -> str:
    """The backend in use: the one ``storage.backend`` names; for ``auto`` (the default) postgresql
    when the DSN's environment variable is set (the switch is the environment), else sqlite."""
    if storage.backend == "auto":
        return "postgresql" if os.environ.get(storage.database_url_env, "").strip() else "sqlite"
    return storage.backend

log = logging.getLogger(__name__)


def open_knowledge_base(project: Project, *, progress: bool | None = None) -> "KnowledgeBase":
    """The project's knowledge base (not started), with ``knowledge.embedding.model: registry``
    resolved to the retriever version the model registry promoted (the shipped default if none)."""
    from knowledge.base import KnowledgeBase

    model = project.config.knowledge.embedding.model
    if model == "registry":  # the retriever version promoted by `botkit train retriever` / `models promote`
        from training.registry import ModelRegistry

        current = ModelRegistry.for_project(project).current("retriever")
        model = str(current.path) if current is not None else "default"
    return KnowledgeBase.open(project, progress=progress, model=model, store=build_knowledge_store(project))


def build_knowledge_store(project: Project) -> "KnowledgeStoreBase":
    """The knowledge store (and the FAQ proposals beside it) of the backend ``storage`` names, not
    started: the project's SQLite file, or PostgreSQL when BOTKIT_DATABASE_URL is set (every worker
    then keeps its own index in memory, in step through the store; botkit/backends/pg_knowledge.py)."""
    storage = project.config.storage
    if store_backend(storage) != "postgresql":
        from knowledge.store import KnowledgeStore

        return KnowledgeStore(project.db_path)
    from botkit.backends.pg_knowledge import PostgresKnowledgeStore

    dsn = database_url(storage)
    return PostgresKnowledgeStore(dsn, schema=storage.postgres_schema, source=storage.database_url_env)


def build_engine(project: Project, *, store: ConversationStore | None = None, progress: bool | None = None,
                 conversations_db: Path | None = None) -> Engine:
    """An engine for the project (not started: use ``async with engine``)."""
    from botkit.responders.factory import make_responder
    from knowledge.retriever import KnowledgeRetriever

    cfg = project.config
    kb = open_knowledge_base(project, progress=progress)
    store = store or build_store(cfg.storage, conversations_db or project.state_dir / CONVERSATIONS_DB)
    responder = make_responder(cfg.dialogue, project.root)
    if cfg.dialogue.responder == "local-lm" and cfg.dialogue.local_lm is not None:
        responder = _registry_responder(project)
    bus, locks = build_bus_and_locks(cfg.storage)
    return Engine(
        retriever=KnowledgeRetriever(kb),
        responder=responder,
        store=store,
        rules=build_rules(cfg.escalation),
        config=cfg.dialogue,
        bot_name=cfg.name,
        summarize=summarize,
        bus=bus,
        locks=locks,
    )


def build_bus_and_locks(storage: StorageConfig) -> tuple[EventBus | None, ConversationLock | None]:
    """The Redis event bus and conversation lock when the variable ``storage.redis_url_env``
    (BOTKIT_REDIS_URL) holds a URL, else (None, None): the engine's in-process ones. Not
    connected yet: ``Engine.start`` fails with a clear error when Redis is not there."""
    url = redis_url(storage)
    if not url:
        return None, None
    with redis_client(storage):
        from botkit.backends.redis_bus import RedisEventBus
        from botkit.backends.redis_common import check_url
        from botkit.backends.redis_lock import RedisConversationLock
    check_url(url)
    log.info("events and conversation locks go through Redis (%s, keys %s*)", storage.redis_url_env,
             storage.redis_prefix)
    return RedisEventBus(url, prefix=storage.redis_prefix), RedisConversationLock(url, prefix=storage.redis_prefix)


def build_rate_limiter(storage: StorageConfig) -> "RateLimiter | None":
    """The Redis rate limiter when ``storage.redis_url_env`` holds a URL (workers share the web
    chat's and /help/search's buckets), else None: each takes an in-process one. Not connected yet."""
    url = redis_url(storage)
    if not url:
        return None
    with redis_client(storage):
        from botkit.backends.redis_limits import RedisRateLimiter
    return RedisRateLimiter(url, prefix=storage.redis_prefix)


def build_store(storage: StorageConfig, path: Path) -> ConversationStore:
    """The conversation store ``storage.backend`` names (not started); ``path``: its database file."""
    name = store_backend(storage)
    backend = STORE_BACKENDS.get(name)
    if backend is None:
        raise ConfigError(f"bot.yaml: storage.backend: unknown backend {name!r} "
                          f"(allowed: {', '.join(repr(name) for name in sorted(STORE_BACKENDS))})")
    return backend(storage, path)


def _registry_responder(project: Project) -> ReloadingResponder:
    """The local LM as the model registry says: the promoted version, followed live."""
    from botkit.responders.factory import make_responder
    from botkit.responders.generative import GenerativeResponder
    from botkit.responders.reloading import ReloadingResponder
    from training.registry import ModelRegistry, current_lm_config

    registry = ModelRegistry.for_project(project)
    dialogue = project.config.dialogue
    base = dialogue.local_lm
    assert base is not None
    first = True

    def build(_version: object) -> Responder:
        # dialogue.local_lm.backend picks the generator (transformers or llama-cpp) in make_responder.
        nonlocal first
        lm = current_lm_config(registry, base)
        responder = make_responder(dialogue.model_copy(update={"local_lm": lm}), project.root)
        if first and isinstance(responder, GenerativeResponder):
            # The model the bot starts with: if it cannot load, the bot still answers
            # (extractively). A later promoted version that fails keeps the old one serving.
            responder.generator = _LoadOrFallBack(responder.generator)
        first = False
        return responder

    return ReloadingResponder(build, registry.watch("lm"))


class _LoadOrFallBack:
    """A generator whose failure to start is logged instead of raised; every stream then fails at
    once with the reason, so GenerativeResponder sends the extractive reply (``note`` says why)."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.name = inner.name
        self.failed: str | None = None

    def __repr__(self) -> str:
        return repr(self.inner)

    async def start(self) -> None:
        try:
            await self.inner.start()
        except GenerationError as exc:
            self.failed = str(exc)
            log.error("the local LM could not start, so the bot answers with extractive replies: %s", exc)
        self.name = self.inner.name

    async def close(self) -> None:
        await self.inner.close()

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        if self.failed is not None:
            raise GenerationError(f"{self.name} did not start: {self.failed}", code="not_started")
        async with aclosing(self.inner.stream(messages)) as deltas:  # closing us stops the model at once
            async for delta in deltas:
                yield delta
