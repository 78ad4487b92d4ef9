"""The botkit exception tree: every exception class in botkit/, connectors/, knowledge/ and
training/, with the module that defines it (tests/test_error_tree.py keeps this list complete).

::

    BotkitError                 botkit.errors                root: catch this to handle any botkit failure
    ├── ConfigError             botkit.errors                bot.yaml is missing, malformed or has a bad key/value
    ├── ProjectError            botkit.errors                the project directory is missing or not a botkit project
    ├── KnowledgeError          botkit.errors                knowledge base failures
    │   ├── ImportFailed        botkit.errors                input files were rejected (nothing was imported)
    │   ├── ArticleNotFound     botkit.errors                no article with that id (or revision)
    │   └── IndexCorrupt        botkit.errors                the persisted index is unreadable (rebuilt from the store)
    ├── QueryError              botkit.errors                a search query was rejected (empty, too long)
    ├── EmbeddingError          botkit.errors                the embedding model could not be loaded or run
    ├── GenerationError         botkit.errors                a language model could not be loaded, or generating failed
    ├── MessageRejected         botkit.errors                a customer message was refused (empty, too long, not text)
    ├── StorageError            botkit.errors                a database or file could not be written (nothing was)
    │   ├── DatabaseLocked      botkit.errors                another process held the write lock too long (retry)
    │   ├── DatabaseUnavailable botkit.errors                the database server cannot be reached (down, gone: retry)
    │   ├── SchemaTooNew        botkit.backends.pg_schema    the database's schema is from a newer botkit
    │   └── DiskFull            botkit.errors                the disk (or the file size limit) is full
    ├── StoreError              botkit.store                 a conversation-store operation failed or was refused
    │   └── ConflictError       botkit.store                 it lost a race (another agent took the conversation first)
    ├── ReportRangeError        botkit.analytics             a report's range or bucket was refused (bad date, ...)
    ├── AuthError               botkit.app.accounts          an account change was refused (unknown user, weak password)
    ├── PortInUse               botkit.app.running           the port `botkit serve` was asked to listen on is taken
    ├── TelegramChannelError    connectors.telegram          Telegram unreachable at start-up or a message undeliverable
    │   ├── MalformedUpdate     connectors.telegram          an update no handler can read: refused (400), not retried
    │   └── TelegramDeliveryError connectors.telegram        a message could not be delivered (after the retries)
    ├── TrainingError           training.config              a fine-tuning run could not start or failed
    ├── TranscriptError         training.transcripts         transcripts could not be ingested
    ├── RetrieverTrainingError  training.retriever           retriever training was refused (too few pairs, ...)
    ├── RegistryError           training.registry            a model-registry operation was refused
    │   └── GateRefused         training.registry            the evaluation gate refused to promote a version
    └── ProposalError           training.gaps                a KB proposal cannot be reviewed as asked (its HTTP status)

Internal control flow, deliberately not BotkitError: each is caught near where it is raised
and turned into an answer, a retry or a BotkitError, so no user ever handles one::

    Refused                     botkit.app.http              a staff API refuses a request: becomes its JSON answer
    RequestBodyTimeout          botkit.app.server            (a TimeoutError) a request body arrived too slowly: 408
    ProtocolError               connectors.webchat.protocol  a web chat frame cannot be accepted: an ``error`` frame
    _Retry                      botkit.generation.openai     an API attempt failed in a way worth another try
    _Closing                    knowledge.base               close() was called between embedding batches
    _Problems                   knowledge.ingest             input problems collected on the way to ImportFailed
    _Abandon                    botkit.sqlite                a group commit cannot go on: its units rerun one by one

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


class DatabaseUnavailable(StorageError):
    """The database server cannot be reached: down, unreachable, or the connection was lost
    mid-operation (whose transaction the server rolled back). Retrying later can succeed."""

    retry = True
    http_status = 503


class DiskFull(StorageError):
    """No space left on the disk (ENOSPC, SQLITE_FULL) or the file size limit was reached (EFBIG)."""

    http_status = 507
