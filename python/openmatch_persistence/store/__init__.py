"""Durable state in a database: PostgreSQL (psycopg 3, pooled) or SQLite.

Both stores implement :class:`Store`: migrations with sqlx-compatible
bookkeeping, one-transaction flushes that record the AOF position they cover,
and ``load_state()`` that rebuilds the engine's values exactly.
"""

from __future__ import annotations

from openmatch_persistence.errors import InvalidValueError
from openmatch_persistence.store.base import (
    DEFAULT_SCHEMA,
    ChangeBatch,
    ChangeSource,
    Checkpoint,
    LoadedState,
    StateChangesLike,
    Store,
    WriteResult,
    check_schema,
)
from openmatch_persistence.store.sqlite import DEFAULT_SQLITE_PATH, SqliteStore


def store_schema(database_url: str | None, schema: str | None) -> str | None:
    """``schema`` checked (:func:`check_schema`) for the database of
    ``database_url``: SQLite has no schemas and takes only None or
    ``public``. Raises :class:`InvalidValueError`."""
    schema = check_schema(schema)
    sqlite = database_url is None or database_url.startswith("sqlite:")
    if sqlite and schema not in (None, DEFAULT_SCHEMA):
        raise InvalidValueError(
            f"schema {schema!r}: SQLite has no schemas (a schema needs a PostgreSQL "
            "--database-url; give each data directory its own SQLite file instead)"
        )
    return schema


def open_store(
    database_url: str | None,
    *,
    sqlite_path: str | None = None,
    max_connections: int = 10,
    schema: str | None = None,
) -> Store:
    """A PostgreSQL store for a ``postgresql://`` URL, an SQLite one for a
    ``sqlite:`` URL, or the embedded SQLite file when there is no URL.

    ``schema``: the PostgreSQL schema that holds this store's tables (and
    its ``_sqlx_migrations``); None keeps the connection's own search_path
    (normally ``public``). SQLite has no schemas: it takes only None or
    ``public``."""
    schema = store_schema(database_url, schema)
    if database_url is None:
        return SqliteStore(sqlite_path or DEFAULT_SQLITE_PATH)
    if database_url.startswith("sqlite:"):
        path = database_url[len("sqlite:") :]
        path = path[2:] if path.startswith("//") else path
        return SqliteStore(path or ":memory:")
    from openmatch_persistence.store.postgres import PostgresStore

    return PostgresStore(database_url, max_connections=max_connections, schema=schema)


__all__ = [
    "DEFAULT_SCHEMA",
    "DEFAULT_SQLITE_PATH",
    "ChangeBatch",
    "ChangeSource",
    "Checkpoint",
    "LoadedState",
    "SqliteStore",
    "StateChangesLike",
    "Store",
    "WriteResult",
    "check_schema",
    "open_store",
    "store_schema",
]
