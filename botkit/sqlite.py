"""SQLite for async code: one connection (WAL), every operation in a worker thread.

The event loop never waits on the disk; a lock serialises use of the connection; ``tx``
wraps an operation in ``BEGIN IMMEDIATE`` … ``COMMIT`` so it is applied whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from botkit.errors import BotkitError, DatabaseLocked, DiskFull, StorageError
from botkit.files import private_file

T = TypeVar("T")
BUSY_TIMEOUT_S = 30  # how long a writer waits for another process's write lock


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


class AsyncSQLite:
    def __init__(self, path: Path | str, schema: str, *, what: str = "the database", durable: bool = False):
        self.path = Path(path)
        # durable: every COMMIT is fsynced (synchronous=FULL), so what was committed survives a
        # power cut or an OS crash, not only a killed process (NORMAL, in WAL mode). A store that
        # acknowledges on commit ("accepted means answered") needs it.
        self.durable = durable
        self.schema = schema
        self.what = what  # named in the "not started" error
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._db is not None

    async def start(self) -> None:
        if self._db is None:
            await asyncio.to_thread(self._open)

    def _open(self) -> None:
        private_file(self.path)  # 0600 before SQLite opens it: its -wal/-shm files get the same mode
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        db.executescript(self.schema)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a worker thread, holding the connection's lock."""
        db = self._db
        if db is None:
            raise BotkitError(f"{self.what} is not started; use `async with` or call start()")

        def locked() -> T:
            with self._lock, translate_errors(self.path, self.what):
                return fn(db)

        return await asyncio.to_thread(locked)

    async def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`run`, inside one transaction: all of ``fn``'s writes or none."""

        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")  # a COMMIT that fails (disk full) is rolled back too
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        return await self.run(transaction)
