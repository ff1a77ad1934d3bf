"""Durable state in a database: PostgreSQL (psycopg 3, pooled) or SQLite.

Both stores implement :class:`Store`: migrations with sqlx-compatible
bookkeeping, one-transaction flushes that record the AOF position they cover,
and ``load_state()`` that rebuilds the engine's values exactly.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote

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


#: sqlx's SQLite URL parameters that leave the file to open as it is.
_SQLITE_PARAMS = {"cache", "immutable", "vfs", "mode"}


def sqlite_path_of(database_url: str) -> str:
    """The file a ``sqlite:`` URL names, read as sqlx reads it:
    ``sqlite://PATH``, ``sqlite:PATH`` or ``sqlite::memory:``, the path
    percent-decoded and the ``?query`` not part of it (``sqlite:///a.db?mode=rwc``
    is ``/a.db``). Raises :class:`InvalidValueError` for a mode this store
    cannot honour (``ro``) or a parameter sqlx does not know."""
    rest = database_url[len("sqlite:") :]
    rest = rest[2:] if rest.startswith("//") else rest
    path, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - _SQLITE_PARAMS)
    if unknown:
        raise InvalidValueError(f"SQLite URL: unknown parameter(s) {', '.join(unknown)}")
    mode = params.get("mode", "rwc")
    if mode == "memory" or path in ("", ":memory:"):
        return ":memory:"
    if mode not in ("rw", "rwc"):
        raise InvalidValueError(
            f"SQLite URL: mode={mode} is not supported (the store writes; use rwc or rw)"
        )
    return unquote(path)


def open_store(
    database_url: str | None,
    *,
    sqlite_path: str | None = None,
    max_connections: int = 10,
    schema: str | None = None,
    migrations_dir: Path | None = None,
) -> Store:
    """A PostgreSQL store for a ``postgresql://`` URL, an SQLite one for a
    ``sqlite:`` URL, or the embedded SQLite file when there is no URL.

    ``schema``: the PostgreSQL schema that holds this store's tables (and
    its ``_sqlx_migrations``); None keeps the connection's own search_path
    (normally ``public``). SQLite has no schemas: it takes only None or
    ``public``. ``migrations_dir``: another directory of migrations than the
    package's own for this kind of database (``migrate --source``)."""
    schema = store_schema(database_url, schema)
    if database_url is None or database_url.startswith("sqlite:"):
        path = sqlite_path or DEFAULT_SQLITE_PATH
        if database_url is not None:
            path = sqlite_path_of(database_url)
        if migrations_dir is None:
            return SqliteStore(path)
        return SqliteStore(path, migrations_dir=migrations_dir)
    from openmatch_persistence.store.migrate import POSTGRES_MIGRATIONS
    from openmatch_persistence.store.postgres import PostgresStore

    return PostgresStore(
        database_url,
        max_connections=max_connections,
        schema=schema,
        migrations_dir=migrations_dir or POSTGRES_MIGRATIONS,
    )


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
    "sqlite_path_of",
    "store_schema",
]
