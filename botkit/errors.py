"""The botkit exception tree.

::

    BotkitError                   root: catch this to handle any botkit failure
    ├── ConfigError               bot.yaml is missing, malformed or has a bad key/value
    ├── ProjectError              the project directory is missing or not a botkit project
    ├── KnowledgeError            knowledge base failures
    │   ├── ImportFailed          one or more input files were rejected (nothing was imported)
    │   ├── ArticleNotFound       no article with that id (or revision)
    │   └── IndexCorrupt          the persisted index is unreadable (it is rebuilt from the store)
    ├── QueryError                a search query was rejected (empty, too long)
    ├── EmbeddingError            the embedding model could not be loaded or run
    ├── GenerationError           a language model could not be loaded, or a generation failed
    ├── MessageRejected           a customer message was refused (empty, too long, not text)
    └── StorageError              a database or file could not be written (nothing was written)
        ├── DatabaseLocked        another process held the database's write lock too long (retry)
        └── DiskFull              the disk (or the file size limit) is full

Every message says what went wrong and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass


class BotkitError(Exception):
    """Root of all botkit errors."""


class ConfigError(BotkitError):
    """bot.yaml could not be loaded or validated."""


class ProjectError(BotkitError):
    """The project directory is missing or is not a botkit project."""


class KnowledgeError(BotkitError):
    """A knowledge-base operation failed."""


@dataclass(frozen=True)
class InputProblem:
    """One problem found in an input file: where, and what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


class ImportFailed(KnowledgeError):
    """Input files were rejected; the import was not applied (one import is one transaction)."""

    def __init__(self, problems: list[InputProblem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"import rejected, nothing was imported ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}):\n{shown}{more}"
        )


class ArticleNotFound(KnowledgeError):
    """No article (or revision) with the given id."""


class IndexCorrupt(KnowledgeError):
    """The persisted vector index is unreadable; it will be rebuilt from the store."""


class QueryError(BotkitError):
    """A search query was rejected."""


class EmbeddingError(BotkitError):
    """The embedding model could not be loaded or run."""


class GenerationError(BotkitError):
    """A language model could not be loaded, or generating a reply failed or timed out.

    ``code`` is a short machine-readable reason when the raiser knows one (``"timeout"``,
    ``"prompt_too_long"``, ``"not_started"``); None otherwise. The responder reports it as the
    reply's ``fallback`` (``"error"`` when there is none).
    """

    def __init__(self, *args: object, code: str | None = None):
        super().__init__(*args)
        self.code = code


class MessageRejected(BotkitError):
    """A customer message was refused before anything was stored (empty, too long, not text)."""


class StorageError(BotkitError):
    """A database or file could not be written; nothing was written. ``retry``: trying again
    later can succeed without anyone acting; ``http_status``: the answer a web API gives."""

    retry = False
    http_status = 500


class DatabaseLocked(StorageError):
    """Another process held the database's write lock past the wait (SQLITE_BUSY)."""

    retry = True
    http_status = 503


class DiskFull(StorageError):
    """No space left on the disk (ENOSPC, SQLITE_FULL) or the file size limit was reached (EFBIG)."""

    http_status = 507
