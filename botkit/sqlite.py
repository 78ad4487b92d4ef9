"""SQLite for every botkit database: one helper that connects, sets the pragmas and runs the schema.

:class:`SQLiteDatabase` is the synchronous form (staff accounts, the knowledge store, gap
proposals): one connection shared by threads, every statement under a lock. It is opened by
:meth:`~SQLiteDatabase.start`; a synchronous caller that never calls start() gets it opened on
first use. :class:`AsyncSQLite` is the same database for async code (the conversation store,
web chat sessions): every operation runs in a worker thread, so the event loop never waits on
the disk, and it must be started first.

Every connection is made by :func:`connect`, so all of them get the same settings: the file
is created ``0600`` first (``botkit.files.private_file``; SQLite gives its ``-wal``/``-shm``
files the same mode), WAL (readers never wait for a writer; several processes share a file), a
writer waits up to :data:`BUSY_TIMEOUT_S` for another's lock, foreign keys are enforced,
autocommit (``isolation_level=None``: transactions are explicit ``BEGIN IMMEDIATE``) and rows
as :class:`sqlite3.Row`. A lock held too long, a full disk or an I/O error comes out as the
:class:`~botkit.errors.StorageError` that says what to do (:func:`translate_errors`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar, cast

from botkit.errors import BotkitError, DatabaseLocked, DiskFull, StorageError
from botkit.files import private_file

T = TypeVar("T")
BUSY_TIMEOUT_S = 30  # how long a writer waits for another process's write lock
Synchronous = Literal["OFF", "NORMAL", "FULL"]


def storage_error(exc: BaseException, path: Path, what: str) -> StorageError | None:
    """What a failed read or write of ``path`` means for an operator, or None when it is not a
    lock, a full disk or an I/O error (a bug, or a constraint the caller handles)."""
    if isinstance(exc, sqlite3.OperationalError):
        primary = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return DatabaseLocked(
                f"{what} ({path}) is locked by another process and stayed locked past the {BUSY_TIMEOUT_S} s "
                f"wait, so nothing was written; try again in a moment. If it stays locked, find the process "
                f"holding it with `fuser {path}` (a long `botkit kb import`, or an open `sqlite3` shell)")
        if primary == sqlite3.SQLITE_FULL:
            return _disk_full(path, what, "the disk is full")
        if primary == sqlite3.SQLITE_IOERR:
            return StorageError(f"cannot write {what} ({path}): disk I/O error, so nothing was written. Check that "
                                f"the disk has space (`df -h {path.parent}`) and no errors (`dmesg`), then try again")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_full(Path(exc.filename or path), what, "the disk is full")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return _disk_full(Path(exc.filename or path), what, "file too large (the file size limit, `ulimit -f`)")
    return None


def _disk_full(path: Path, what: str, why: str) -> DiskFull:
    return DiskFull(f"cannot write {path}: {why}, so nothing was written to {what}; "
                    f"free space on it (`df -h {path.parent}`) and try again")


@contextlib.contextmanager
def translate_errors(path: Path, what: str) -> Iterator[None]:
    """Raise a lock, a full disk or an I/O error on ``path`` as the StorageError that says what to do."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        error = storage_error(exc, path, what)
        if error is None:
            raise
        raise error from exc


def connect(path: Path, schema: str = "", *, synchronous: Synchronous | None = None, read_only: bool = False,
            busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection to ``path`` with botkit's settings (see the module docstring), ``schema`` run.

    ``synchronous``: None keeps SQLite's default (FULL); a database that says nothing keeps
    the setting it always had. ``read_only``: the file must exist and is neither created, made
    private, switched to WAL nor given the schema (reading another process's database).
    """
    if read_only:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=busy_timeout_s,
                             isolation_level=None)
    else:
        private_file(path)  # 0600 before SQLite opens it: its -wal/-shm files get the same mode
        db = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout_s, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        if not read_only:
            db.execute("PRAGMA journal_mode=WAL")
        if synchronous is not None:
            db.execute(f"PRAGMA synchronous={synchronous}")
        if schema and not read_only:
            db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


class SQLiteDatabase:
    """One SQLite database for synchronous code: a connection shared by threads, used under
    :attr:`lock` (reentrant with ``reentrant=True``, for a class whose locked methods call
    each other).

    :meth:`start` opens it; a caller that never calls start() gets it opened on first use
    (:attr:`connection`, :meth:`run`), so the CLI can use a store straight away. After
    :meth:`close` it stays closed until start() is called again.

    ``open_error``: the error class a file that is not a SQLite database is raised as, naming
    the file (None: sqlite3's own error).
    """

    def __init__(self, path: Path | str, schema: str, *, what: str = "the database",
                 synchronous: Synchronous | None = None, read_only: bool = False, reentrant: bool = False,
                 open_error: type[BotkitError] | None = None):
        self.path = Path(path)
        self.schema = schema
        self.what = what
        self.synchronous: Synchronous | None = synchronous
        self.read_only = read_only
        self.open_error = open_error
        self.lock: threading.Lock | threading.RLock = threading.RLock() if reentrant else threading.Lock()
        self._open_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        return self._db is not None

    def start(self) -> None:
        """Open the database (create it and its schema if needed); idempotent."""
        with self._open_lock:
            self._closed = False
            self._open()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                with translate_errors(self.path, self.what):
                    self._db = connect(self.path, self.schema, synchronous=self.synchronous,
                                       read_only=self.read_only)
            except sqlite3.DatabaseError as exc:
                if self.open_error is None:
                    raise
                raise self.open_error(f"{self.path}: cannot open {self.what} ({exc})") from exc
        return self._db

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection, opened now if start() was never called. Use it under :attr:`lock`."""
        db = self._db
        if db is not None:
            return db
        with self._open_lock:
            if self._closed:
                raise BotkitError(f"{self.what} ({self.path}) is closed; call start() to open it again")
            return self._open()

    def close(self) -> None:
        with self.lock, self._open_lock:  # always this order (run() opens under the lock): no deadlock
            self._closed = True
            if self._db is not None:
                db, self._db = self._db, None
                db.close()

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` under the lock; a lock, full disk or I/O error as a StorageError."""
        with self.lock, translate_errors(self.path, self.what):
            return fn(self.connection)

    def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`run`, inside one transaction (``BEGIN IMMEDIATE``): all of ``fn``'s writes or none."""
        return self.run(lambda db: _transaction(db, fn))


def _transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")  # a COMMIT that fails (disk full) is rolled back too
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


class _Unit:
    """One caller's unit of work waiting for a group commit: ``fn`` and where its outcome goes."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], object]):
        self.fn = fn
        self.future: concurrent.futures.Future[object] = concurrent.futures.Future()


class _Abandon(Exception):
    """The group transaction cannot go on (a storage error, or SQLite rolled it back itself):
    roll it back and run its units one by one, each as its own transaction."""


class AsyncSQLite:
    """A :class:`SQLiteDatabase` for async code: every operation in a worker thread (the event
    loop never waits on the disk). Unlike the synchronous form it is never opened on first
    use: it must be started (``async with`` or start()), and says so otherwise.

    ``group_commit``: :meth:`tx` units of work that arrive while a commit is in progress are
    run together by one committer thread, in arrival order, in ONE transaction with ONE
    COMMIT (one fsync when durable), each inside its own SAVEPOINT. A unit that raises is
    rolled back to its savepoint alone and its error goes to its own caller; the others
    commit. Each caller's await returns only after the COMMIT that holds its work, so an
    acknowledgement still follows durability. A storage error inside the group (full disk,
    I/O) or a failed COMMIT rolls the whole group back and runs its units again one by one,
    each in its own transaction, so each gets exactly the outcome it would have had alone: a
    unit's ``fn`` may therefore run twice and must touch nothing but the database. A write
    lock held by another process past the busy timeout fails the group before any unit ran
    (each caller gets the DatabaseLocked it would have had alone). A unit sees the writes of
    the units before it in its group, as it would have seen them committed.

    With ``group_commit``, :meth:`read` runs on a small pool of read connections (WAL lets
    them read while the writer commits), each call inside one read transaction (one
    snapshot); a read that starts after a caller's :meth:`tx` returned sees its commit.
    Without it, :meth:`read` is :meth:`run` on the one connection.
    """

    MAX_GROUP = 256  # units per group transaction: bounds how long one commit holds the write lock
    MAX_IDLE_READERS = 8
    IDLE_S = 10.0  # the committer thread ends after this long without a write

    def __init__(self, path: Path | str, schema: str, *, what: str = "the database", durable: bool = False,
                 read_only: bool = False, group_commit: bool = False):
        # durable: every COMMIT is fsynced (synchronous=FULL), so what was committed survives a
        # power cut or an OS crash, not only a killed process (NORMAL, in WAL mode). A store that
        # acknowledges on commit ("accepted means answered") needs it. read_only: see connect().
        self.durable = durable
        self.group_commit = group_commit
        self._sql = SQLiteDatabase(path, schema, what=what, synchronous="FULL" if durable else "NORMAL",
                                   read_only=read_only)
        self.path = self._sql.path
        self.schema = schema
        self.what = what  # named in the "not started" error
        self._queue = threading.Condition()  # guards _pending, _committer and _stopping
        self._pending: list[_Unit] = []
        # one committer thread, started by the first tx() and kept (waiting on _queue) until close():
        # a new thread per commit, or the default executor, costs extra thread wake-ups per write
        self._committer: threading.Thread | None = None
        self._stopping = False
        self._readers: list[sqlite3.Connection] = []  # idle read connections (group_commit only)
        self._readers_lock = threading.Lock()
        self._readers_generation = 0  # bumped by close(): a reader opened before is closed, not kept
        self.commits = 0  # group transactions committed (each one COMMIT, one fsync when durable)
        self.grouped = 0  # units of work those commits held

    @property
    def started(self) -> bool:
        return self._sql.started

    async def start(self) -> None:
        if not self._sql.started:
            await asyncio.to_thread(self._sql.start)
            with self._queue:
                self._stopping = False

    async def close(self) -> None:
        if self._sql.started:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._queue:  # units already queued are committed first, then the connection closes
            self._stopping = True
            committer, self._committer = self._committer, None
            self._queue.notify_all()
        if committer is not None:
            committer.join()
        with self._readers_lock:
            self._readers_generation += 1
            idle, self._readers = self._readers, []
        for db in idle:
            db.close()
        self._sql.close()

    def _check_started(self) -> None:
        if not self._sql.started:
            raise BotkitError(f"{self.what} is not started; use `async with` or call start()")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a worker thread, holding the connection's lock."""
        self._check_started()
        return await asyncio.to_thread(self._sql.run, fn)

    async def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`run`, inside one transaction: all of ``fn``'s writes or none (with
        ``group_commit``, possibly beside other callers' units: see the class docstring)."""
        self._check_started()
        if not self.group_commit:
            return await asyncio.to_thread(self._sql.tx, fn)
        unit = _Unit(fn)
        with self._queue:
            if self._stopping:
                raise BotkitError(f"{self.what} is closing; call start() to open it again")
            self._pending.append(unit)
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_queued, daemon=True,
                                                   name=f"group commit: {self.path.name}")
                self._committer.start()
            self._queue.notify()
        return cast(T, await asyncio.wrap_future(unit.future))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the read-only ``fn(connection)`` in a worker thread: with ``group_commit`` on a
        read connection, inside one read transaction, never waiting for the writer's commit."""
        self._check_started()
        if not self.group_commit:
            return await asyncio.to_thread(self._sql.run, fn)
        return await asyncio.to_thread(self._read, fn)

    # -- group commit (the committer thread) -----------------------------------------------------
    def _commit_queued(self) -> None:
        """The committer thread: everything queued since the last commit is the next group."""
        while True:
            with self._queue:
                if not self._queue.wait_for(lambda: self._pending or self._stopping, timeout=self.IDLE_S):
                    self._committer = None  # idle: the next tx() starts another (a store never closed leaks none)
                    return
                if not self._pending:  # stopping, and every queued unit is committed
                    return
                group = self._pending[:self.MAX_GROUP]
                del self._pending[:len(group)]
            # a caller cancelled before its unit was taken: it is not run (as an executor job that
            # never started); once running, its cancel() is refused and the unit commits
            group = [unit for unit in group if unit.future.set_running_or_notify_cancel()]
            if not group:
                continue
            try:
                self._commit_group(group)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                for unit in group:
                    if not unit.future.done():
                        unit.future.set_exception(exc)

    def _commit_group(self, group: list[_Unit]) -> None:
        outcomes: list[tuple[bool, object]] | None = None
        with self._sql.lock:
            try:
                db = self._sql.connection
                with translate_errors(self.path, self.what):
                    db.execute("BEGIN IMMEDIATE")
            except BaseException as exc:  # closed, or locked past the busy timeout: nothing ran
                for unit in group:
                    unit.future.set_exception(exc)
                return
            try:
                outcomes = [self._unit(db, unit) for unit in group]
                db.execute("COMMIT")  # the one fsync of the group
            except BaseException:  # _Abandon, or the COMMIT failed (disk full): nothing of the group is kept
                outcomes = None
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
            else:
                self.commits += 1
                self.grouped += len(group)
        if outcomes is None:  # each alone, in order: the outcome (and error) it would have had ungrouped
            for unit in group:
                try:
                    unit.future.set_result(self._sql.tx(unit.fn))
                except BaseException as exc:
                    unit.future.set_exception(exc)
            return
        for unit, (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                unit.future.set_result(value)
            else:
                unit.future.set_exception(value)  # type: ignore[arg-type]

    def _unit(self, db: sqlite3.Connection, unit: _Unit) -> tuple[bool, object]:
        db.execute("SAVEPOINT botkit_unit")
        try:
            value = unit.fn(db)
        except Exception as exc:
            if not db.in_transaction or storage_error(exc, self.path, self.what) is not None:
                raise _Abandon from exc
            db.execute("ROLLBACK TO botkit_unit")  # this unit's writes only
            db.execute("RELEASE botkit_unit")
            return False, exc
        db.execute("RELEASE botkit_unit")
        return True, value

    # -- reads on their own connections ----------------------------------------------------------
    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._readers_lock:
            generation = self._readers_generation
            db = self._readers.pop() if self._readers else None
        try:
            with translate_errors(self.path, self.what):
                if db is None:
                    db = connect(self.path, read_only=self._sql.read_only)
                    db.execute("PRAGMA query_only=ON")
                db.execute("BEGIN")  # one snapshot for all of fn's statements
                try:
                    return fn(db)
                finally:
                    if db.in_transaction:
                        db.execute("ROLLBACK")  # it only read: nothing to commit, nothing to fsync
        finally:
            if db is not None:
                with self._readers_lock:
                    keep = generation == self._readers_generation and len(self._readers) < self.MAX_IDLE_READERS
                    if keep:
                        self._readers.append(db)
                if not keep:
                    db.close()


__all__ = ["BUSY_TIMEOUT_S", "AsyncSQLite", "SQLiteDatabase", "connect", "storage_error", "translate_errors"]
