"""The storage switch for the staff accounts, the sign-in throttle and the web chat sessions.

The same switch as the conversation store (botkit/app/compose.py ``store_backend``):

* ``BOTKIT_DATABASE_URL=postgresql://...`` (or ``storage.backend: postgresql``; the variable is
  ``storage.database_url_env``) moves the staff accounts, their sessions and API tokens
  (botkit/backends/pg_accounts.py) and the web chat sessions, browser token -> conversation
  (botkit/backends/pg_webchat.py), into PostgreSQL schema ``storage.postgres_schema`` beside the
  conversations. Every worker then knows the same staff and resumes the same customers' chats;
  ``botkit users ...`` and the demo accounts of ``botkit demo`` go there too.
  ``accounts.sqlite3`` and ``webchat.sqlite3`` in the state directory are not read then, nor
  copied: create the accounts again (``botkit users add``); customers' open chats start anew.
* ``BOTKIT_REDIS_URL=redis://...`` (``storage.redis_url_env``) moves the sign-in failure counts
  into Redis under ``storage.redis_prefix`` (botkit/backends/redis_counters.py), so N workers
  throttle one attacker together. Redis down: each worker throttles on its own, loudly logged.

Unset, everything stays in the state directory's SQLite files and this process.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botkit.app.compose import database_url, redis_client, redis_url, store_backend
from botkit.config import StorageConfig
from botkit.errors import ConfigError
from botkit.project import Project
from botkit.signin_throttle import FailureCounts, Throttle
from botkit.staff_store import AccountStore, SQLiteAccountStore

ACCOUNTS_DB = "accounts.sqlite3"


def _postgres_wanted(storage: StorageConfig) -> bool:
    return store_backend(storage) == "postgresql"


def _missing_driver(storage: StorageConfig, exc: ImportError) -> ConfigError:
    return ConfigError(f"storage: PostgreSQL is switched on ({storage.database_url_env} or storage.backend), but "
                       f"its drivers are not installed: pip install 'botkit[postgres]' ({exc})")


def account_store(project: Project) -> AccountStore:
    """Where the project's staff accounts live (not opened yet)."""
    storage = project.config.storage
    if not _postgres_wanted(storage):
        return SQLiteAccountStore(project.state_dir / ACCOUNTS_DB)
    try:
        from botkit.backends.pg_accounts import PostgresAccountStore
    except ImportError as exc:
        raise _missing_driver(storage, exc) from exc
    return PostgresAccountStore(database_url(storage), schema=storage.postgres_schema, source=storage.database_url_env)


def failure_counts(project: Project, throttle: Throttle) -> FailureCounts | None:
    """The shared sign-in failure counts when ``storage.redis_url_env`` is set (None: this process's own)."""
    storage = project.config.storage
    url = redis_url(storage)
    if not url:
        return None
    with redis_client(storage):
        from botkit.backends.redis_counters import RedisFailureCounts
    return RedisFailureCounts(url, prefix=storage.redis_prefix, throttle=throttle)


def connector_extras(project: Project) -> dict[str, Any]:
    """What the app hands every connector in ``ConnectorContext.extra``: with PostgreSQL switched
    on, the web chat's session store factory (connectors cannot import the backends)."""
    from connectors.webchat.sessions import SESSION_STORE_FACTORY, SessionStoreFactory

    storage = project.config.storage
    if not _postgres_wanted(storage):
        return {}
    try:
        from botkit.backends.pg_webchat import PostgresSessionStore
    except ImportError as exc:
        raise _missing_driver(storage, exc) from exc
    dsn = database_url(storage)

    def factory(ttl: timedelta) -> PostgresSessionStore:
        return PostgresSessionStore(dsn, schema=storage.postgres_schema, ttl=ttl, source=storage.database_url_env)

    made: SessionStoreFactory = factory
    return {SESSION_STORE_FACTORY: made}


__all__ = ["ACCOUNTS_DB", "account_store", "connector_extras", "database_url", "failure_counts"]
