"""The knowledge store and the FAQ proposals on PostgreSQL (psycopg 3, synchronous), for several
workers sharing one knowledge base.

:class:`PostgresKnowledgeStore` is :class:`knowledge.store.KnowledgeStoreBase` over PostgreSQL:
the same statements as the SQLite store (its SQL seam translates ``?`` placeholders), so both
behave alike and pass the same tests. What the SQLite file gives for free, PostgreSQL gets
explicitly:

* **one batch, one version, writers in turn.** Every write transaction first takes
  ``pg_advisory_xact_lock('botkit.kb.<schema>')``: two workers' KB editors (or an editor and a
  ``botkit kb import``) write one after the other, each reading the version the other committed
  (READ COMMITTED: every statement after the lock sees it), so versions rise by one per batch
  with no gap and no lost update. This replaces the KB editor's in-process lock across workers.
  The lock is released by COMMIT or ROLLBACK, so a killed worker never leaves it held; a
  writer waits for it at most ``write_wait_s`` (30 s, as SQLite's busy timeout), then gets a
  :class:`~botkit.errors.DatabaseLocked`, nothing written.
* **chunk ids never reused**: ``chunks.chunk_id`` is an identity column (a sequence never hands
  a number out twice, even after a rollback), so an id in any worker's index always means the
  same text.
* **every worker in step**: the transaction that raises the version sends
  ``NOTIFY botkit_kb.<schema>, '<version>'`` (delivered on commit). :meth:`~PostgresKnowledgeStore.watch`
  LISTENs on a connection of its own and reads the version every ``poll_s`` seconds as well, the
  safety net for a notification missed while the connection was down; the knowledge base then
  catches its in-memory index up with the chunks added and removed since its version (vectors
  from the shared embedding cache, filled by the writer before it committed).
  :meth:`~PostgresKnowledgeStore.latest_version` answers from memory, so a search costs no query.

Why an index per worker and not pgvector: a worker already holds the embedder and searches FAISS
in-process in well under a millisecond for a support KB (thousands of chunks); a pgvector query
is a network round trip plus the server's own scan for every customer message, on the server
every worker's writes go to, and the dense search is fused with BM25, the router and the
calibration, which live in the worker anyway. A change costs each worker one notification and
the new chunks' cached vectors. benchmarks/kb_sync.py measures how soon an edit on one worker is
searchable on another.

Errors: a server that cannot be reached or is lost mid-statement is a
:class:`~botkit.errors.DatabaseUnavailable` (the transaction was rolled back: nothing half
written; the next call reconnects); a schema from a newer botkit is refused with
:class:`~botkit.backends.postgres_migrations.SchemaTooNew`. The DSN's password never appears in
a message.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from botkit.backends.pg_knowledge_migrations import migrate_knowledge
from botkit.backends.postgres import where
from botkit.errors import DatabaseLocked, DatabaseUnavailable, StorageError
from knowledge.store import KnowledgeStoreBase, Row
from knowledge.types import ArticleDraft, ChunkDraft
from training.gaps import ProposalStoreBase

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10
POLL_S = 2.0  # the watcher reads the version this often too, in case a notification was missed
LISTEN_TICK_S = 0.2  # how long the watcher waits for a notification before it looks at the clock
RECONNECT_S = (0.5, 1.0, 2.0, 5.0)  # the watcher's waits between reconnection attempts
WRITE_WAIT_S = 30.0  # how long a writer waits for another worker's write (as SQLite's busy timeout)


@functools.lru_cache(maxsize=512)
def _to_pg(statement: str) -> str:
    """A statement of the shared SQL in PostgreSQL's terms: ``?`` -> ``%s`` (``%`` escaped), and the
    knowledge store's ``meta`` table as ``kb_meta`` (every botkit component shares one schema)."""
    return re.sub(r"\bmeta\b", "kb_meta", statement.replace("%", "%%").replace("?", "%s"))


def connect_failure(exc: BaseException, dsn: str, source: str) -> StorageError:
    """What a failed psycopg connection means for an operator, in one line."""
    at = where(dsn)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        if "does not exist" in text and "database" in text:
            return StorageError(f"PostgreSQL at {at}: {text}; create it (`createdb`) or fix the database name in "
                                f"{source}")
        if "authentication" in text or "password" in text:
            return StorageError(f"PostgreSQL at {at} refused the login: {text}; check the user and password in "
                                f"{source}")
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {at}: {text}; check that the server runs and "
                                   f"listens there and the host and port in {source}, then try again")
    if isinstance(exc, psycopg.ProgrammingError):
        return StorageError(f"{source} is not a PostgreSQL DSN botkit can use ({text}); write it as "
                            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return StorageError(f"PostgreSQL at {at}: {text}")


class PostgresDatabase:
    """One psycopg connection shared by a store's threads (autocommit; explicit transactions),
    rows by column name, ``search_path`` set to the store's schema. Opened on first use and
    reopened after a lost connection; a lost one is a DatabaseUnavailable for the call that
    saw it (its transaction was rolled back by the server)."""

    def __init__(self, dsn: str, schema: str, source: str, what: str, write_wait_s: float = WRITE_WAIT_S):
        self.dsn, self.schema, self.source, self.what = dsn, schema, source, what
        self.write_wait_s = write_wait_s
        self.lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._migrated = False

    def connect(self, *, migrate: bool = True) -> psycopg.Connection[Any]:
        """A new connection of this store's kind (the watcher has one of its own)."""
        try:
            conn: psycopg.Connection[Any] = psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="botkit")
        except psycopg.Error as exc:
            raise connect_failure(exc, self.dsn, self.source) from exc
        try:
            if migrate and not self._migrated:
                migrate_knowledge(conn, self.schema)  # before dict rows: it reads tuples
                self._migrated = True
            conn.row_factory = dict_row
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The open connection (opened now if need be); use it under :attr:`lock`."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._conn = self.connect()
        return conn

    def close(self) -> None:
        with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """A lost connection as a DatabaseUnavailable (the connection is dropped: the next call reconnects)."""
        try:
            yield
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(
                f"lost the connection to PostgreSQL at {where(self.dsn)} during a write or read of {self.what} "
                f"({str(exc).strip() or type(exc).__name__}); nothing of an unfinished change was saved. Try "
                "again in a moment (botkit reconnects)") from exc

    def rows(self, statement: str, params: Sequence[Any] = ()) -> builtins.list[Row]:
        with self.errors():
            return self.connection.execute(_to_pg(statement), params).fetchall()

    def exec(self, statement: str, params: Sequence[Any] = ()) -> int:
        with self.errors():
            return self.connection.execute(_to_pg(statement), params).rowcount

    def exec_many(self, statement: str, seq: Iterable[Sequence[Any]]) -> None:
        with self.errors():
            self.connection.cursor().executemany(_to_pg(statement), seq)

    @contextlib.contextmanager
    def transaction(self, lock_key: str | None) -> Iterator[None]:
        """One transaction, under ``pg_advisory_xact_lock(lock_key)`` when given (writers in turn).
        A writer waits at most ``write_wait_s`` for another's commit (it holds this store's
        connection meanwhile), then gets a DatabaseLocked, nothing written."""
        with self.lock, self.errors(), self.connection.transaction():
            if lock_key is not None:
                conn = self.connection
                wait = sql.Literal(f"{self.write_wait_s * 1000:.0f}ms")
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(wait))
                try:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
                except psycopg.errors.LockNotAvailable as exc:
                    raise DatabaseLocked(
                        f"{self.what} in PostgreSQL at {where(self.dsn)} (schema {self.schema}) is being written by "
                        f"another worker and stayed so past the {self.write_wait_s:g} s wait, so nothing was "
                        "written; try again in a moment (a long `botkit kb import` holds it while it commits)") from exc
                conn.execute("SET LOCAL lock_timeout = 0")  # the wait above only, not the writes that follow
            yield


class PostgresKnowledgeStore(KnowledgeStoreBase):
    """Articles, revisions, chunks and the embedding cache in a PostgreSQL schema (see the module
    docstring). Thread-safe (one connection under a lock, like the SQLite store).

    Args:
        dsn: postgresql://USER:PASSWORD@HOST:PORT/DATABASE
        schema: the PostgreSQL schema (``storage.postgres_schema``), created and migrated on start.
        source: where the DSN came from, named in errors (the environment variable).
        poll_s: how often the watcher reads the version besides listening.
        channel: the NOTIFY channel (default ``botkit_kb.<schema>``: every store of the schema).
        write_wait_s: how long a write waits for another worker's (then DatabaseLocked).
    """

    shared_index = True

    def __init__(self, dsn: str, schema: str = "botkit", *, source: str = "BOTKIT_DATABASE_URL",
                 chunker: Callable[[ArticleDraft], list[ChunkDraft]] | None = None, poll_s: float = POLL_S,
                 channel: str | None = None, write_wait_s: float = WRITE_WAIT_S):
        super().__init__(chunker)
        self.dsn, self.schema, self.source = dsn, schema, source
        self.channel = channel or f"botkit_kb.{schema}"
        self.poll_s = poll_s
        self._pg = PostgresDatabase(dsn, schema, source, "the knowledge base", write_wait_s)
        self._lock = self._pg.lock
        self._write_key = f"botkit.kb.{schema}"
        self._in_tx = False
        self._seen = -1  # the newest version this process has read or been told of
        self._seen_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._on_change: Callable[[int], None] | None = None
        self.watch_backend_pid: int | None = None  # the watcher's server process (tests end it)

    def __repr__(self) -> str:
        return f"PostgresKnowledgeStore({where(self.dsn)}, schema={self.schema!r})"

    @property
    def path(self) -> str:
        """Where the store is, for messages (never the password)."""
        return f"postgresql://{where(self.dsn)} schema {self.schema}"

    def start(self) -> None:
        """Connect and migrate the schema now (DatabaseUnavailable, StorageError or SchemaTooNew if not)."""
        with self._lock:
            self._pg.connection  # noqa: B018 - connects and migrates

    def close(self) -> None:
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join()
        self._pg.close()

    # -- the SQL seam --------------------------------------------------------------------------
    def _rows(self, statement: str, params: Sequence[Any] = ()) -> builtins.list[Row]:
        return self._pg.rows(statement, params)

    def _row(self, statement: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self._pg.rows(statement, params)
        return rows[0] if rows else None

    def _exec(self, statement: str, params: Sequence[Any] = ()) -> int:
        return self._pg.exec(statement, params)

    def _exec_many(self, statement: str, seq: Iterable[Sequence[Any]]) -> None:
        self._pg.exec_many(statement, seq)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._pg.transaction(self._write_key):
            self._in_tx = True
            try:
                yield
            finally:
                self._in_tx = False

    def _cache_transaction(self) -> contextlib.AbstractContextManager[None]:
        # cached vectors are keyed by content: two workers writing the same one write the same bytes
        return self._pg.transaction(None)

    def _version_bumped(self, version: int) -> None:
        self._exec("SELECT pg_notify(?, ?)", (self.channel, str(version)))

    # -- versions --------------------------------------------------------------------------------
    def kb_version(self) -> int:
        version = super().kb_version()
        if not self._in_tx:  # committed: this process knows of it now
            self._saw(version, notify=False)
        return version

    def latest_version(self) -> int:
        """From memory while the watcher runs (a notification or a poll updates it), else one query."""
        if self._watcher is not None and self._seen >= 0:
            return self._seen
        return self.kb_version()

    def _saw(self, version: int, *, notify: bool = True) -> None:
        with self._seen_lock:
            if version <= self._seen:
                return
            self._seen = version
        callback = self._on_change
        if notify and callback is not None:
            try:
                callback(version)
            except Exception:  # noqa: BLE001 - the watcher keeps watching; a search catches up anyway
                log.exception("catching up with knowledge base version %d failed", version)

    def watch(self, on_change: Callable[[int], None]) -> None:
        """Start the watcher thread: ``on_change(version)`` for every newer version another process
        commits (LISTEN, and a read every ``poll_s`` s for a notification missed)."""
        with self._seen_lock:
            self._on_change = on_change
            if self._watcher is not None:
                return
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="kb-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        failures = 0
        last_poll = 0.0
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._pg.connect(migrate=False)
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.watch_backend_pid = conn.info.backend_pid
                    last_poll = 0.0  # read the version at once: a change may have come while not listening
                    if failures:
                        log.info("knowledge base watcher reconnected to PostgreSQL at %s", where(self.dsn))
                    failures = 0
                for note in conn.notifies(timeout=LISTEN_TICK_S, stop_after=1):
                    if note.payload.isdigit():
                        self._saw(int(note.payload))
                if time.monotonic() - last_poll >= self.poll_s:
                    row = conn.execute(_to_pg("SELECT value FROM meta WHERE key='kb_version'")).fetchone()
                    last_poll = time.monotonic()
                    self._saw(int(row["value"]) if row else 0)
            except (psycopg.Error, StorageError) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                wait = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
                failures += 1
                log.warning("knowledge base watcher lost PostgreSQL at %s (%s); reconnecting in %.1f s (searches "
                            "answer from the index they have meanwhile)", where(self.dsn),
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, wait)
                self._stop.wait(wait)
        if conn is not None:
            conn.close()

    # -- the FAQ proposals beside it ---------------------------------------------------------------
    def open_proposals(self) -> "PostgresProposalStore":
        """The FAQ proposals in the same schema (training.gaps.proposals_for opens these)."""
        return PostgresProposalStore(self.dsn, self.schema, source=self.source)


class PostgresProposalStore(ProposalStoreBase):
    """training.gaps' FAQ proposals in the knowledge base's PostgreSQL schema."""

    def __init__(self, dsn: str, schema: str = "botkit", *, source: str = "BOTKIT_DATABASE_URL"):
        self._pg = PostgresDatabase(dsn, schema, source, "the FAQ proposals")
        self._lock = self._pg.lock

    def start(self) -> None:
        with self._lock:
            self._pg.connection  # noqa: B018 - connects and migrates

    def close(self) -> None:
        self._pg.close()

    def _rows(self, statement: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        return self._pg.rows(statement, params)

    def _exec(self, statement: str, params: Sequence[Any] = ()) -> int:
        return self._pg.exec(statement, params)


__all__ = ["PostgresDatabase", "PostgresKnowledgeStore", "PostgresProposalStore", "connect_failure"]
