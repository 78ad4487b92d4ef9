"""The knowledge base: store + embedder + vector index (+ BM25), kept consistent.

Writes go to the SQLite store first (the source of truth), then the index is brought up to
date by :meth:`KnowledgeBase.sync`, which diffs the index's chunk ids against the store's.
Only chunks that are new are embedded, and even those come from the embedding cache when
the same text was embedded before. Searches call :meth:`refresh` first, which costs one
SQL query and notices when another process (``botkit kb import`` beside a running server)
changed the store, so an edit is visible to the next question without a restart.

A search never waits on embedding. A writer embeds its new chunks *before* it commits them
(:meth:`upsert`), into the shared embedding cache, one committed batch at a time; so another
process that notices the new KB version finds every vector cached and swaps it in at once,
and an import killed mid-way resumes from the batches it had cached. When a change does need
embedding (a writer that did not embed ahead), the catch-up runs in a background thread and
searches keep answering from the index they have, reporting the KB version it holds, until
the new one is swapped in (under the index lock, so a search sees the old or the new index).

On :meth:`start` the persisted index is loaded and checked against the store; if it is
unreadable, was built by another model or index type, or covers other chunks, it is
repaired (missing chunks added, stale ones removed) or rebuilt. A crash at any point
therefore never leaves an answer behind that the store does not hold.

A store shared by several workers (PostgreSQL: ``store.shared_index``) is the source of truth
for all of them, and each keeps its index in memory only: it is built on start from the
store's embedding cache and no index, calibration or router file is written, so two workers
sharing a project directory never write the same files. The store tells each worker of a
version another committed (:meth:`~knowledge.store.KnowledgeStoreBase.watch`: LISTEN/NOTIFY
and a periodic read), and the worker catches up in the background as it does for a change by
``botkit kb import`` beside a server (new chunk ids added, removed ones dropped, vectors from
the cache); a search asks the store's :meth:`~knowledge.store.KnowledgeStoreBase.latest_version`,
which that store answers from memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from botkit.config import KnowledgeConfig
from botkit.errors import ConfigError, IndexCorrupt, QueryError, StorageError
from botkit.language import detect_language
from botkit.project import Project
from botkit.seams import Embedder
from knowledge.calibrate import fit_models
from knowledge.confidence import MIN_POSITIVES, Calibration, fingerprint
from knowledge.embedding import make_embedder
from knowledge.imports import Resolve
from knowledge.index import IndexKind, VectorIndex
from knowledge.ingest import read_sources
from knowledge.languages import LanguageMap
from knowledge.lexical import LexicalIndex
from knowledge.passages import refine_passage
from knowledge.query_cache import QueryCache, normalise_query
from knowledge.ranking import fuse
from knowledge.router import Router
from knowledge.store import ChangeSummary, KnowledgeStore, KnowledgeStoreBase
from knowledge.types import ArticleDraft, Chunk, ChunkDraft, Hit, SearchResult

log = logging.getLogger(__name__)
INDEX_FILE = "vectors.faiss"
CALIBRATION_FILE = "confidence.json"  # the fitted calibration, beside the index (refitted when the KB changes)
ROUTER_FILE = "router.npz"
# Rebuilding BM25 costs ~40 us per chunk; above this many chunks an edit rebuilds it in a
# background thread (dense search sees the edit at once, lexical matching a moment later).
LEXICAL_SYNC_MAX = 5_000
# the embedding cache key of calibration queries: <model>|query (chunk vectors are under <model>)
QUERY_CACHE_SUFFIX = "|query"
QUERY_EMBED_BATCH = 8  # calibration queries per forward pass (a search waits at most one batch)
# Texts per embedding call: each batch goes into the cache in its own transaction, and a query
# waiting for the model waits for at most one batch.
EMBED_BATCH = 32
# A search catches up inline (no embedding, just cached vectors) with at most this many new
# chunks; bigger changes are swapped in by the background thread.
INLINE_CATCH_UP_MAX = 5_000
MIN_PASSAGE_CHARS = 200  # shorter best passages are extended with the chunk that follows
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")


class _Closing(Exception):
    """Raised between embedding batches once :meth:`KnowledgeBase.close` was called."""


@dataclass(frozen=True)
class _Plan:
    """What an index lacks to match the store at one KB version, and the vectors already cached."""
    version: int
    missing: list[Chunk]
    stale: np.ndarray
    cached: dict[str, np.ndarray]

    @property
    def uncached(self) -> int:
        return len({c.text_hash for c in self.missing} - self.cached.keys())


@dataclass(frozen=True)
class SyncReport:
    status: str  # "loaded", "repaired", "rebuilt", "synced", "unchanged"
    added: int = 0
    removed: int = 0
    embedded: int = 0  # texts that went through the model (the rest came from the cache)
    kb_version: int = 0
    reason: str = ""
    seconds: float = 0.0


class KnowledgeBase:
    def __init__(self, store: KnowledgeStoreBase, embedder: Embedder, index_dir: Path,
                 config: KnowledgeConfig | None = None, *, progress: bool | None = None, language: str = "en"):
        self.store = store
        # a store several workers share: this process's index lives in memory only (no files)
        self.persist_files = not store.shared_index
        self.embedder = embedder
        self.index_path = Path(index_dir) / INDEX_FILE
        self.config = config or KnowledgeConfig()
        self.progress = progress
        self.language = language  # of entries that say none (bot.yaml's language); docs/languages.md
        self._languages: LanguageMap | None = None
        self.index: VectorIndex | None = None
        self.lexical: LexicalIndex | None = None
        self._lexical_version = -1  # the KB version a BM25 built together with the vectors holds (_apply)
        self.router: Router | None = None  # the learned router (None: off, or not fitted yet)
        self.calibration: Calibration | None = None  # None: the default mapping (knowledge/confidence.py)
        self.models_version = -1  # the KB version the router and calibration were fitted on
        self.indexed_version = -1
        self.embedded_total = 0  # texts embedded by this instance (chunks and queries excluded)
        # results of questions already searched at this KB version (knowledge/query_cache.py)
        self.query_cache = QueryCache(self.config.retrieval.query_cache_size)
        self._lock = threading.RLock()  # held briefly: searches read the index, syncs swap changes in
        self._sync_lock = threading.RLock()  # one sync at a time (held while embedding; searches never wait on it)
        self._lexical_dirty = threading.Event()
        self._lexical_stale = threading.Event()  # the worker rebuilds BM25 too (a big KB), not only the models
        self._lexical_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._worker_lock = threading.Lock()
        self._catch_up_thread: threading.Thread | None = None
        # searches in progress: a background refit pauses for them (see _yield_to_searches)
        self._searching = 0
        self._search_cond = threading.Condition()
        self._refit_ran_since = 0.0
        # what start() found (loaded, repaired, rebuilt); set by whoever started it, e.g. the CLI's status
        self.start_report: SyncReport | None = None

    @classmethod
    def open(cls, project: Project, *, progress: bool | None = None,
             model: str | None = None, store: KnowledgeStoreBase | None = None) -> "KnowledgeBase":
        """The project's KB, not started. ``model`` overrides ``knowledge.embedding.model`` (the
        application layer passes the registry's promoted retriever here; see
        :func:`botkit.app.compose.open_knowledge_base`); ``store``: the knowledge store (default
        the project's SQLite file; the application layer passes the PostgreSQL one when it is on)."""
        cfg = project.config.knowledge
        model = model or cfg.embedding.model
        if model == "registry":
            raise ConfigError("knowledge.embedding.model is 'registry' (the retriever the model registry promoted): "
                              "open the knowledge base with botkit.app.compose.open_knowledge_base(project), which "
                              "asks the registry, or pass model= to KnowledgeBase.open")
        embedder = make_embedder(model, cfg.embedding.backend, batch_size=cfg.embedding.batch_size,
                                 threads=cfg.embedding.threads, project_root=project.root,
                                 cache_dir=project.state_dir / "models")
        return cls(store or KnowledgeStore(project.db_path), embedder, project.index_dir, cfg, progress=progress,
                   language=project.config.language.split("-")[0])

    def __enter__(self) -> "KnowledgeBase":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()  # a background catch-up stops at its next embedding batch
        with self._worker_lock:
            worker = self._catch_up_thread
        if worker is not None:
            worker.join()
        thread = self._lexical_thread
        if thread is not None:
            self._lexical_dirty.clear()
            thread.join()
        self.store.close()

    # -- index lifecycle ---------------------------------------------------------------------
    def _wanted_kind(self, n: int) -> IndexKind:
        kind = self.config.index.type
        if kind == "auto":
            return "flat" if n <= self.config.index.auto_flat_max else "ivf"
        return kind

    def _index_kw(self) -> dict[str, int]:
        ic = self.config.index
        return {"hnsw_m": ic.hnsw_m, "ef_search": ic.hnsw_ef_search, "nprobe": ic.ivf_nprobe}

    def start(self) -> SyncReport:
        """Load the model and the persisted index, check it against the store, repair or rebuild."""
        t0 = time.perf_counter()
        if self.index is not None:  # already started: just catch up with the store
            return self.sync()
        self.embedder.start()
        self.embedder.embed(["warm-up"])  # the first forward pass is slow; pay it here, not on a customer
        for leftover in self.index_path.parent.glob(f".{self.index_path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)  # a write that a crash interrupted; never loaded
        with self._sync_lock:
            if self.index is not None:  # another thread started it meanwhile
                return self._sync_held(persist=True)
            report = self._load_or_rebuild()
            self._build_lexical()
        self.store.watch(self._store_changed)  # a shared store: another worker's change, pushed
        return SyncReport(report.status, report.added, report.removed, report.embedded, report.kb_version,
                          report.reason, time.perf_counter() - t0)

    def _load_or_rebuild(self) -> SyncReport:
        if not self.persist_files:
            return self._rebuild("")  # in memory, from the shared store's embedding cache
        reason = ""
        index: VectorIndex | None = None
        if self.index_path.exists():
            try:
                index = VectorIndex.load(self.index_path)
            except IndexCorrupt as exc:
                reason = str(exc)
        else:
            reason = "no index on disk"
        n_live = len(self.store.live_chunk_ids())
        if index is not None:
            if index.meta.get("embedder") != self.embedder.name or index.dim != self.embedder.dim:
                reason, index = f"index was built with {index.meta.get('embedder')}, not {self.embedder.name}", None
            elif index.kind != self._wanted_kind(n_live):
                reason, index = f"index type {index.kind} is not the configured {self._wanted_kind(n_live)}", None
            elif index.needs_rebuild:
                reason, index = f"the {index.kind} index has outgrown its structure", None
        if index is None:
            return self._rebuild(reason)
        with self._lock:
            self.index = index
        sync = self._sync_held(persist=False)
        status = "loaded" if not (sync.added or sync.removed) else "repaired"
        if status == "repaired" or index.meta.get("kb_version") != self.store.kb_version():
            self._persist()
        if status == "repaired":
            log.warning("index disagreed with the store: repaired (+%d -%d)", sync.added, sync.removed)
        return SyncReport(status, sync.added, sync.removed, sync.embedded, self.indexed_version)

    def _rebuild(self, reason: str) -> SyncReport:
        """Build a fresh index from the whole store (vectors from the cache), then swap it in."""
        version = self.store.kb_version()
        chunks = self.store.chunks()
        vectors, embedded = self._vectors(chunks)
        ids = np.fromiter((c.chunk_id for c in chunks), dtype=np.int64, count=len(chunks))
        index = VectorIndex.build(vectors, ids, self._wanted_kind(len(chunks)), dim=self.embedder.dim,
                                  **self._index_kw())
        with self._lock:
            self.index, self.indexed_version = index, version
        self._persist()
        if reason:
            log.info("index rebuilt: %s", reason)
        return SyncReport("rebuilt", len(chunks), 0, embedded, version, reason)

    def _persist(self) -> None:
        assert self.index is not None
        if not self.persist_files:
            return
        self.index.meta.update({"embedder": self.embedder.name, "kb_version": self.indexed_version})
        self.index.save(self.index_path)

    def _cached(self, chunks: Sequence[Chunk]) -> dict[str, np.ndarray]:
        """The cached vectors for these chunks' texts (a vector of the wrong size counts as missing)."""
        if not chunks:
            return {}
        dim = self.embedder.dim
        found = self.store.cached_embeddings(self.embedder.name, list({c.text_hash for c in chunks}))
        return {h: v for h, v in found.items() if v.shape == (dim,)}

    def _embed_and_cache(self, todo: dict[str, str]) -> dict[str, np.ndarray]:
        """Embed texts (hash -> text) in batches, committing each batch to the embedding cache as it is done.

        Another process catching up re-embeds nothing already committed, and a run killed
        mid-way (a SIGKILL'd import) resumes from the last committed batch.
        """
        from tqdm import tqdm

        name = self.embedder.name
        hashes, texts = list(todo), list(todo.values())
        fresh: dict[str, np.ndarray] = {}
        with tqdm(total=len(texts), desc="embedding", unit="chunk", leave=False,
                  disable=self.progress is False or (self.progress is None and len(texts) < 500)) as bar:
            for start in range(0, len(texts), EMBED_BATCH):
                if self._closing.is_set():
                    raise _Closing()
                vecs = self.embedder.embed(texts[start:start + EMBED_BATCH])
                batch = dict(zip(hashes[start:start + EMBED_BATCH], vecs))
                self.store.cache_embeddings(name, batch)
                self.embedded_total += len(batch)
                fresh.update(batch)
                bar.update(len(vecs))
        return fresh

    def _vectors(self, chunks: Sequence[Chunk], cached: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, int]:
        """Vectors for chunks, from the cache where possible; returns (vectors, how many were embedded)."""
        if not chunks:
            return np.zeros((0, self.embedder.dim), dtype=np.float32), 0
        cached = dict(self._cached(chunks) if cached is None else cached)
        todo = {c.text_hash: c.embed_text for c in chunks if c.text_hash not in cached}
        if todo:
            cached.update(self._embed_and_cache(todo))
        return np.stack([cached[c.text_hash] for c in chunks]).astype(np.float32), len(todo)

    def embed_ahead(self, drafts: Sequence[ArticleDraft]) -> int:
        """Embed (into the cache) the chunks that writing these drafts would add; returns how many were embedded.

        Called before the store commits them, so whoever notices the new KB version (this
        process or a server beside it) finds every vector cached and swaps the change in at once.
        """
        current = self.store.content_hashes()
        changed = [d for d in drafts if current.get(d.id) != d.hash]
        pending: dict[str, str] = {}
        for draft in changed:
            for c in self.store.chunk(draft):
                pending.setdefault(c.hash, c.embed_text)
        if not pending:
            return 0
        cached = self.store.cached_embeddings(self.embedder.name, list(pending))
        todo = {h: t for h, t in pending.items() if h not in cached}
        if todo:
            self._embed_and_cache(todo)
        return len(todo)

    def sync(self, persist: bool = True) -> SyncReport:
        """Bring the index up to date with the store (add new chunks, drop removed ones).

        Embedding happens outside the index lock: searches keep answering from the current
        index meanwhile, and the change is swapped in at once at the end.
        """
        with self._sync_lock:
            report = self._sync_held(persist)
        if report.added or report.removed:
            self._build_lexical(background=True)
        return report

    def _plan(self) -> _Plan:
        assert self.index is not None
        version = self.store.kb_version()
        live = self.store.live_chunk_ids()
        have = self.index.ids()
        missing = np.setdiff1d(live, have, assume_unique=True)
        stale = np.setdiff1d(have, live, assume_unique=True)
        chunks = self.store.chunks(missing.tolist()) if len(missing) else []
        return _Plan(version, chunks, stale, self._cached(chunks))

    def _sync_held(self, persist: bool) -> SyncReport:
        """A sync; the caller holds the sync lock."""
        if self.index is None:
            return self.start()
        return self._apply(self._plan(), persist)

    def _apply(self, plan: _Plan, persist: bool) -> SyncReport:
        """Embed what the plan lacks (outside the index lock), then swap the change in under it."""
        t0 = time.perf_counter()
        assert self.index is not None
        vectors, embedded = self._vectors(plan.missing, plan.cached)
        ids = np.array([c.chunk_id for c in plan.missing], dtype=np.int64)
        changed = bool(len(ids) or len(plan.stale))
        # A small KB's BM25 is rebuilt first and swapped in with the vectors, so no search sees the
        # new version's vectors fused with the old version's BM25 (the new entry without its
        # lexical score, another worker's edit ranked under its older neighbours meanwhile).
        lexical = None
        if changed and self.config.retrieval.hybrid and self.index.ntotal + len(ids) <= LEXICAL_SYNC_MAX:
            lexical = self._make_lexical()
        with self._lock:
            if len(plan.stale):
                self.index.remove(plan.stale)
            if len(ids):
                self.index.add(ids, vectors)
            self.indexed_version = plan.version
            if lexical is not None:
                self.lexical, self._lexical_version = lexical, plan.version
        if self.index.needs_rebuild:
            return self._rebuild(f"the {self.index.kind} index has outgrown its structure")
        if persist and changed:
            self._persist()
        status = "synced" if changed else "unchanged"
        return SyncReport(status, len(ids), len(plan.stale), embedded, plan.version,
                          seconds=time.perf_counter() - t0)

    def _build_lexical(self, background: bool = False, refit_inline: bool = True) -> None:
        """Rebuild BM25, then refit the router and calibration (which search through it).

        For a big KB (``background``) both run in a background thread and searches use the previous
        ones meanwhile. ``refit_inline=False`` (a catch-up picked up by a search) rebuilds a small
        BM25 at once but always refits in the background: a search never waits on a refit.
        """
        small = self.index is None or self.index.ntotal <= LEXICAL_SYNC_MAX
        if not background or small:
            if self._lexical_version != self.indexed_version:  # else _apply built it with the vectors
                lexical = self._make_lexical() if self.config.retrieval.hybrid else None
                with self._lock:
                    self.lexical = lexical
            if refit_inline or not background:
                self._refresh_models()
                return
        else:
            self._lexical_stale.set()
        with self._worker_lock:  # the worker checks for more work under this lock before it exits
            self._lexical_dirty.set()
            if self._lexical_thread is None:
                self._lexical_thread = threading.Thread(target=self._lexical_worker, name="bm25-rebuild",
                                                        daemon=True)
                self._lexical_thread.start()

    def _make_lexical(self) -> LexicalIndex:
        chunks = self.store.chunks()
        return LexicalIndex(np.array([c.chunk_id for c in chunks], dtype=np.int64), [c.embed_text for c in chunks],
                            cjk=self.config.retrieval.tokenizer == "auto")

    def _lexical_worker(self) -> None:
        while True:
            with self._worker_lock:
                if not self._lexical_dirty.is_set() or self._closing.is_set():
                    self._lexical_thread = None
                    return
                self._lexical_dirty.clear()
            try:
                if self._lexical_stale.is_set():
                    self._lexical_stale.clear()
                    # stale ids in an old index are harmless: hits are looked up in the store
                    lexical = self._make_lexical() if self.config.retrieval.hybrid else None
                    with self._lock:
                        self.lexical = lexical
                self._refresh_models(pause=self._yield_to_searches)
            except Exception:  # noqa: BLE001 - searches keep the previous BM25, router and calibration
                log.exception("rebuilding BM25 or refitting the router and confidence calibration failed; searches "
                              "use the previous ones until the next change")

    def settle(self) -> None:
        """Wait for a background BM25 rebuild and model refit (benchmarks and tests that measure right after
        an import of a big KB call this; a server never needs to)."""
        while (thread := self._lexical_thread) is not None and thread is not threading.current_thread():
            thread.join()
            if self._lexical_thread is thread:  # it stopped without clearing itself (closing)
                break

    # -- the router and the confidence calibration -------------------------------------------
    def _models_fingerprint(self, version: int) -> str:
        rc = self.config.retrieval
        return fingerprint([version, self.embedder.name, rc.hybrid, rc.lexical_weight, rc.top_k, rc.threshold,
                            rc.router, rc.router_weight, rc.router_min_entries])

    def _refresh_models(self, pause: Callable[[], None] | None = None) -> None:
        """Fit the router and calibration for the indexed KB version, or load them from the index
        dir when they were fitted for exactly this version and these settings (a restart)."""
        with self._lock:
            version, lexical = self.indexed_version, self.lexical
        if version == self.models_version:
            return
        fp = self._models_fingerprint(version)
        cal_path, router_path = self.index_path.with_name(CALIBRATION_FILE), self.index_path.with_name(ROUTER_FILE)
        calibration = Calibration.load(cal_path) if self.persist_files else None
        if calibration is not None and calibration.fingerprint == fp:
            router = Router.load(router_path) if router_path.exists() else None
            if router is None or router.fingerprint == fp:
                with self._lock:
                    self.router, self.calibration, self.models_version = router, calibration, version
                return
        chunks = self.store.chunks()
        n_articles = len({c.article_id for c in chunks})
        if sum(c.kind == "question" for c in chunks) + n_articles < MIN_POSITIVES:  # too small to calibrate:
            with self._lock:  # the default mapping, and nothing embedded for it
                self.router, self.calibration, self.models_version = None, None, version
            return
        vectors, _ = self._vectors(chunks)
        if pause is not None:
            pause()
        titles = {a: t for a, (t, _, _) in self.store.titles({c.article_id for c in chunks}).items()}
        def embed(texts: list[str]) -> np.ndarray:
            return self._embed_queries(texts, pause)

        fitted = fit_models(chunks, vectors, titles, lexical, self.config.retrieval, embed, fingerprint=fp,
                            pause=pause)
        with self._lock:
            self.router, self.calibration, self.models_version = fitted.router, fitted.calibration, version
        log.info("router %s, confidence calibration %s (%d examples) for KB version %d in %.1fs",
                 "trained" if fitted.router else "off",
                 "fitted" if fitted.calibration.fitted else "default (too little data)", fitted.examples, version,
                 fitted.seconds)
        if not self.persist_files:
            return  # every worker of a shared store fits its own, in memory
        try:
            cal_path.parent.mkdir(parents=True, exist_ok=True)
            fitted.calibration.save(cal_path)
            if fitted.router is not None:
                fitted.router.save(router_path)
            else:
                router_path.unlink(missing_ok=True)
        except OSError as exc:  # a read-only or full index dir: this process still uses the fit
            log.warning("could not store the confidence calibration in %s (%s); the next start refits it",
                        cal_path.parent, exc)

    def _embed_queries(self, texts: list[str], pause: Callable[[], None] | None = None) -> np.ndarray:
        """Vectors for calibration queries (titles, headings, off-topic questions), embedded as queries
        (``embed_queries`` where the embedder has one, as a search embeds the customer's message) and
        cached under their own key, ``<model>|query``, apart from the chunk vectors."""
        drafts = [ChunkDraft(0, "question", "", t, t) for t in texts]
        hashes = [d.hash for d in drafts]
        key = f"{self.embedder.name}{QUERY_CACHE_SUFFIX}"
        embed = getattr(self.embedder, "embed_queries", self.embedder.embed)
        cached = self.store.cached_embeddings(key, list(set(hashes)))
        todo = {h: d.embed_text for h, d in zip(hashes, drafts) if h not in cached}
        keys = list(todo)
        # small batches: the embedder runs one forward pass at a time, and a customer's search (one
        # query) waits for the batch in progress, so a refit in the background never holds it long
        for start in range(0, len(keys), QUERY_EMBED_BATCH):  # not counted in embedded_total (chunks only)
            if pause is not None:
                pause()
            part = keys[start:start + QUERY_EMBED_BATCH]
            batch = dict(zip(part, embed([todo[h] for h in part])))
            self.store.cache_embeddings(key, batch)
            cached.update(batch)
        return np.stack([cached[h] for h in hashes]).astype(np.float32)

    def refresh(self) -> None:
        """Catch up if the store changed since the index was last brought up to date (one SQL query).

        Never waits on embedding: a change whose vectors are all cached (the usual case: the
        writer embedded ahead) is swapped in at once; anything else is left to the background
        catch-up, and this search answers from the index as it is.
        """
        if self.index is None:
            self.start()
            return
        if self.store.latest_version() == self.indexed_version:
            return
        if not self._sync_lock.acquire(blocking=False):
            return  # a sync is under way (it may be embedding); answer from the current index
        try:
            if self.store.kb_version() == self.indexed_version:
                return
            plan = self._plan()
            if plan.uncached or len(plan.missing) > INLINE_CATCH_UP_MAX:
                self._start_catch_up()
                return
            report = self._apply(plan, persist=False)  # the writer persisted its own index
        finally:
            self._sync_lock.release()
        if report.added or report.removed:
            self._build_lexical(background=True, refit_inline=False)

    def _store_changed(self, version: int) -> None:
        """Another worker committed KB version ``version`` (called by the store's watcher thread):
        catch up in the background now, so the next search finds the change swapped in."""
        if self.index is None or self._closing.is_set() or version == self.indexed_version:
            return
        with self._sync_lock:  # the catch-up worker checks the version under it before it exits
            if self.store.latest_version() != self.indexed_version:
                self._start_catch_up()

    def _start_catch_up(self) -> None:
        """Start the background catch-up unless it runs (the caller holds the sync lock)."""
        with self._worker_lock:
            if self._catch_up_thread is None and not self._closing.is_set():
                self._catch_up_thread = threading.Thread(target=self._catch_up_worker, name="kb-catch-up", daemon=True)
                self._catch_up_thread.start()

    def _catch_up_worker(self) -> None:
        try:
            while not self._closing.is_set():
                with self._sync_lock:
                    if self.store.kb_version() == self.indexed_version:
                        self._worker_done()  # before the sync lock is free: a search that finds the
                        return  # store newer after this starts a new worker
                    report = self._sync_held(persist=True)
                if report.added or report.removed:
                    self._build_lexical(background=True, refit_inline=False)
                log.info("caught up with knowledge base version %d in the background: +%d -%d chunks, "
                         "%d embedded, %.1fs", report.kb_version, report.added, report.removed, report.embedded,
                         report.seconds)
        except _Closing:
            pass
        except Exception:  # noqa: BLE001 - searches keep the old index; the next one retries
            log.exception("catching up with the knowledge base failed; searches answer from the previous "
                          "index and the next search retries")
        finally:
            self._worker_done()

    def _worker_done(self) -> None:
        with self._worker_lock:
            if self._catch_up_thread is threading.current_thread():
                self._catch_up_thread = None

    # -- editing -----------------------------------------------------------------------------
    def upsert(self, drafts: Sequence[ArticleDraft], author: str = "operator", note: str = "",
               expect: Mapping[str, int | None] | None = None) -> ChangeSummary:
        """Write drafts to the store: their new chunks are embedded into the cache first, then committed.
        ``expect``: the revisions the writer saw (see KnowledgeStoreBase.upsert: a ConflictError if one moved)."""
        self.embed_ahead(drafts)
        summary = self.store.upsert(drafts, author, note, expect)
        if summary.changed:
            self._sync_committed(summary)
        return summary

    def import_paths(self, paths: Sequence[str | Path], author: str = "operator",
                     resolve: Resolve = "refuse") -> ChangeSummary:
        """Import files (``botkit kb import``). An entry changed in the store since its last import
        is never overwritten: it comes back in ``kept`` (its file unchanged) or ``conflicts`` (its
        file changed too; imported only with ``resolve="theirs"``), see knowledge.imports."""
        drafts = read_sources(paths, self.config.max_file_bytes, progress=self.progress)
        self.embed_ahead(drafts)
        summary = self.store.import_drafts(drafts, author, f"import of {len(drafts)} entries", resolve)
        if summary.changed:
            self._sync_committed(summary)
        return summary

    def delete(self, article_id: str, author: str = "operator", expect_rev: int | None = None) -> ChangeSummary:
        summary = self.store.delete(article_id, author, expect_rev=expect_rev)
        self._sync_committed(summary)
        return summary

    def rollback(self, article_id: str, to_rev: int, author: str = "operator",
                 expect_rev: int | None = None) -> ChangeSummary:
        summary = self.store.rollback(article_id, to_rev, author, expect_rev)
        if summary.changed:
            self._sync_committed(summary)
        return summary

    def _sync_committed(self, summary: ChangeSummary) -> None:
        """Index a change the store has committed. If the index file cannot be written (a full
        disk), the change is still saved and searched in this process: say so, so nobody
        re-applies it, and say that the next start repairs the file."""
        try:
            self.sync()
        except StorageError as exc:
            raise type(exc)(f"the change was saved (KB version {summary.kb_version}) and this process searches it, "
                            f"but the index file was not updated: {exc}. The next start rebuilds the file from "
                            "the store; there is no need to apply the change again") from exc

    def _expand(self, chunk: Chunk, min_chars: int = MIN_PASSAGE_CHARS) -> str:
        """A passage too short to answer anything alone (an intro line) runs on into the next chunk."""
        if len(chunk.text) >= min_chars:
            return chunk.text
        parts = [chunk.text]
        for nxt in self.store.article_chunks(chunk.article_id):
            if nxt.ord > chunk.ord and nxt.kind == "passage":
                parts.append(f"{nxt.heading.split(' > ')[-1]}\n{nxt.text}" if nxt.heading != chunk.heading
                             else nxt.text)
                if sum(len(p) for p in parts) >= min_chars:
                    break
        return "\n\n".join(parts)

    # -- searching ---------------------------------------------------------------------------
    def clean_query(self, query: str) -> str:
        if not isinstance(query, str):
            raise QueryError(f"a query must be text, got {type(query).__name__}")
        query = query.translate(_CONTROL).strip()
        if not query:
            raise QueryError("empty query: ask a question in words")
        limit = self.config.retrieval.max_query_chars
        if len(query) > limit:
            raise QueryError(
                f"query is {len(query)} characters; the limit is {limit} "
                "(knowledge.retrieval.max_query_chars in bot.yaml)"
            )
        return query

    def search(self, query: str, k: int | None = None) -> SearchResult:
        """The best k articles for a query, each with its best passage and score, and the calibrated
        confidence that the best one answers it (``SearchResult.answered`` decides on that)."""
        with self._search_cond:
            self._searching += 1
        try:
            return self._search(query, k)
        finally:
            with self._search_cond:
                self._searching -= 1
                if not self._searching:
                    self._search_cond.notify_all()

    def _yield_to_searches(self) -> None:
        """Called by a background refit between small steps. The fit is Python-heavy, and a thread
        that never lets go of the GIL makes each of a search's many small C calls wait for it; so
        while a search runs the refit waits (up to 0.25 s), then runs for at least 50 ms before it
        pauses again (a stream of searches slows a refit, never stops it)."""
        now = time.monotonic()
        if now - self._refit_ran_since < 0.05:
            return
        with self._search_cond:
            if self._searching:
                self._search_cond.wait_for(lambda: not self._searching, timeout=0.25)
        self._refit_ran_since = time.monotonic()

    def _search(self, query: str, k: int | None) -> SearchResult:
        t0 = time.perf_counter()
        query = self.clean_query(query)
        k = k or self.config.retrieval.top_k
        if k < 1 or k > 1000:
            raise QueryError(f"k must be between 1 and 1000, got {k}")
        self.refresh()
        cache = self.query_cache
        if not cache.enabled:
            return self._search_uncached(query, k, t0)
        key, state = self._cache_key(query, k)
        if key is not None:
            cached = cache.get(key, state, query)
            if cached is not None:
                return replace(cached, latency_ms=(time.perf_counter() - t0) * 1000)
        result = self._search_uncached(query, k, t0)
        # kept only if nothing was swapped in meanwhile (a result that saw the store move on mid-search
        # is kept under a version the store has left, so no later search finds it)
        if key is not None:
            versions, now = self._cache_state()
            if versions == key[2:4] and all(a is b for a, b in zip(now, state)):
                cache.put(key, state, result)
        return result

    def _cache_state(self) -> tuple[tuple[int, int], tuple[object, ...]]:
        """The indexed and models' KB versions, and the objects a search's result comes from (compared by
        identity on a cache hit)."""
        with self._lock:
            return ((self.indexed_version, self.models_version),
                    (self.embedder, self.index, self.lexical, self.router, self.calibration, self.config))

    def _cache_key(self, query: str, k: int) -> tuple[tuple[object, ...] | None, tuple[object, ...]]:
        """The query cache's key for a search now, and the state its result comes from. No key (not
        cacheable) while the index is behind the store: a catch-up is under way and the store's
        titles and passages are newer than the index."""
        store_version = self.store.latest_version()
        (version, models), state = self._cache_state()
        if store_version != version:
            return None, state
        rc = self.config.retrieval
        settings = (rc.hybrid, rc.lexical_weight, rc.router_weight, rc.threshold, rc.min_confidence,
                    rc.tokenizer, self.language, self.config.detect_latin)
        return (normalise_query(query), k, version, models, settings), state

    def _search_uncached(self, query: str, k: int, t0: float) -> SearchResult:
        # An embedder trained with query/passage prefixes (e5) embeds queries apart: embed_queries, if it has one.
        qvec = getattr(self.embedder, "embed_queries", self.embedder.embed)([query])
        rc = self.config.retrieval
        langs = self._language_map()
        spoken = detect_language(query, self.language, latin=self.config.detect_latin).language
        exclude = langs.other_than(spoken) if langs.has(spoken) else frozenset()  # answer in the customer's language
        fetch = langs.widen(max(4 * k, 20), exclude)
        with self._lock:
            assert self.index is not None
            version = self.indexed_version
            dense_s, dense_i = self.index.search(qvec, fetch)
            dense = {int(i): float(s) for s, i in zip(dense_s[0], dense_i[0]) if i >= 0}
            lexical: dict[int, float] = {}
            if self.lexical is not None and rc.lexical_weight > 0:
                lex_s, lex_i = self.lexical.search(query, fetch)
                lexical = {int(i): float(s) for s, i in zip(lex_s, lex_i)}
            router, calibration = self.router, self.calibration
            w = rc.lexical_weight if self.lexical is not None else 0.0
        router_p = router.proba(qvec)[0] if router is not None else None
        ranking = fuse(dense, lexical, w, _StoreLookup(self), qvec[0], router, router_p, rc.router_weight,
                       exclude_articles=exclude)
        ranked = ranking.ranked[:k]
        info = self.store.titles(c.article_id for c in ranked)
        hits = []
        for c in ranked:
            if c.article_id not in info:  # deleted between search and lookup
                continue
            title, kind, body = info[c.article_id]
            chunk = c.chunk
            passage = body if chunk.kind == "question" else self._expand(chunk)
            hits.append(Hit(c.article_id, title, kind, round(c.score, 6), round(c.dense, 6),  # type: ignore[arg-type]
                            round(c.lexical, 6), chunk.chunk_id, chunk.heading, passage))
        # -- the right passage (knowledge/passages.py): each article's section that answers this query --
        hits = [refine_passage(query, qvec[0], h, self.store, self.embedder.name) for h in hits]
        confidence = None
        if hits:
            x = ranking.features(query)
            confidence = round((calibration or Calibration.default(rc.threshold)).confidence(x), 6)
        extra = {"router_p": round(ranked[0].router, 6)} if ranked and router is not None else {}
        return SearchResult(query, tuple(hits), version, rc.threshold, (time.perf_counter() - t0) * 1000, extra,
                            confidence, rc.min_confidence, language=spoken,
                            in_language=langs.has(spoken) or not langs.languages, kb_languages=langs.available())

    def _language_map(self) -> LanguageMap:
        """Each entry's language at the indexed KB version (rebuilt once per version)."""
        langs, version = self._languages, self.indexed_version
        if langs is None or langs.version != version:
            langs = self._languages = LanguageMap.build(version, self.store.list(), self.language)
        return langs


class _StoreLookup:
    """Chunks and their cached vectors from the store (a live search)."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb

    def chunks(self, ids: Iterable[int]) -> dict[int, Chunk]:
        return {c.chunk_id: c for c in self.kb.store.chunks(set(ids))}

    def cosines(self, chunks: list[Chunk], qvec: np.ndarray) -> dict[int, float]:
        cached = self.kb.store.cached_embeddings(self.kb.embedder.name, [c.text_hash for c in chunks])
        return {c.chunk_id: float(cached[c.text_hash] @ qvec) if c.text_hash in cached else 0.0 for c in chunks}

    def article_chunks(self, article_id: str) -> list[Chunk]:
        return self.kb.store.article_chunks(article_id)
