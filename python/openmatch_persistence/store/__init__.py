"""Durable state in a database: PostgreSQL (psycopg 3, pooled) or SQLite.

Both stores implement :class:`Store`: migrations with sqlx-compatible
bookkeeping, one-transaction flushes that record the AOF position they cover,
and ``load_state()`` that rebuilds the engine's values exactly.
"""

from __future__ import annotations

from openmatch_persistence.store.base import (
    ChangeBatch,
    ChangeSource,
    Checkpoint,
    LoadedState,
    StateChangesLike,
    Store,
    WriteResult,
)
from openmatch_persistence.store.sqlite import DEFAULT_SQLITE_PATH, SqliteStore


def open_store(
    database_url: str | None, *, sqlite_path: str | None = None, max_connections: int = 10
) -> Store:
    """A PostgreSQL store for a ``postgresql://`` URL, an SQLite one for a
    ``sqlite:`` URL, or the embedded SQLite file when there is no URL."""
    if database_url is None:
        return SqliteStore(sqlite_path or DEFAULT_SQLITE_PATH)
    if database_url.startswith("sqlite:"):
        path = database_url[len("sqlite:") :]
        path = path[2:] if path.startswith("//") else path
        return SqliteStore(path or ":memory:")
    from openmatch_persistence.store.postgres import PostgresStore

    return PostgresStore(database_url, max_connections=max_connections)


__all__ = [
    "DEFAULT_SQLITE_PATH",
    "ChangeBatch",
    "ChangeSource",
    "Checkpoint",
    "LoadedState",
    "SqliteStore",
    "StateChangesLike",
    "Store",
    "WriteResult",
    "open_store",
]
