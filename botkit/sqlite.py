"""SQLite for async code: one connection (WAL), every operation in a worker thread.

The event loop never waits on the disk; a lock serialises use of the connection; ``tx``
wraps an operation in ``BEGIN IMMEDIATE`` … ``COMMIT`` so it is applied whole or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from botkit.errors import BotkitError

T = TypeVar("T")


class AsyncSQLite:
    def __init__(self, path: Path | str, schema: str, *, what: str = "the database"):
        self.path = Path(path)
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
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
            with self._lock:
                return fn(db)

        return await asyncio.to_thread(locked)

    async def tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`run`, inside one transaction: all of ``fn``'s writes or none."""

        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self.run(transaction)
