"""Schema migrations, with the bookkeeping of sqlx (``_sqlx_migrations``).

A migration is a file ``<version>_<description>.sql`` in a directory; its
description is the rest of the name with ``_`` read as a space, its checksum
the SHA-384 of the file's bytes. Each runs in its own transaction together
with the row that records it (a file starting with ``-- no-transaction``
runs outside one, as in sqlx). Applied migrations must be unchanged and still
present; the first that is not stops everything with :class:`MigrationError`.
This mirrors ``sqlx migrate run`` (sqlx-core's source.rs/migrator.rs and
sqlx-postgres' migrate.rs, including its advisory lock id), so either tool
can run the PostgreSQL directory against the same database.

Written here rather than taken from a library: the Python migration tools
(alembic, yoyo, ...) keep their own, incompatible bookkeeping tables.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmatch_persistence.errors import MigrationError

log = logging.getLogger(__name__)

#: The PostgreSQL migrations (the directory that ``sqlx migrate run --source`` takes).
POSTGRES_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
#: The same versions in SQLite's dialect.
SQLITE_MIGRATIONS = POSTGRES_MIGRATIONS / "sqlite"

_NO_TX = "-- no-transaction"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    path: Path
    sql: str
    checksum: bytes

    @property
    def no_tx(self) -> bool:
        return self.sql.startswith(_NO_TX)


def discover(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, by version. Like sqlx, names that are
    not ``<version>_<description>.sql`` and directories are ignored."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        head, sep, rest = path.name.partition("_")
        if not sep or not rest.endswith(".sql"):
            continue
        try:
            version = int(head)
        except ValueError:
            raise MigrationError(f"{path}: the version {head!r} is not an integer") from None
        if version <= 0:
            raise MigrationError(f"{path}: the version must be greater than zero")
        if rest.endswith((".up.sql", ".down.sql")):
            raise MigrationError(f"{path}: reversible migrations are not supported")
        data = path.read_bytes()
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MigrationError(f"{path}: not UTF-8 ({e})") from None
        if version in found:
            raise MigrationError(f"{path}: version {version} is also {found[version].path.name}")
        found[version] = Migration(
            version=version,
            description=rest[: -len(".sql")].replace("_", " "),
            path=path,
            sql=sql,
            checksum=hashlib.sha384(data).digest(),
        )
    return [found[v] for v in sorted(found)]


def _check_applied(
    migrations: list[Migration], applied: dict[int, bytes], directory: Path
) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones."""
    known = {m.version: m for m in migrations}
    for version in sorted(applied):
        if version not in known:
            raise MigrationError(
                f"migration {version} was applied to the database but is missing from {directory}"
            )
    pending = []
    for m in migrations:
        checksum = applied.get(m.version)
        if checksum is None:
            pending.append(m)
        elif checksum != m.checksum:
            raise MigrationError(
                f"migration {m.version} ({m.path}) was applied but has been modified since: "
                f"its SHA-384 is {m.checksum.hex()[:16]}..., the database recorded "
                f"{checksum.hex()[:16]}...; restore the file or write a new migration"
            )
    return pending


# --- PostgreSQL ---------------------------------------------------------------

_PG_TABLE = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)
"""


def sqlx_lock_id(database_name: str) -> int:
    """sqlx's advisory lock key for a database: 0x3d32ad9e * crc32(name)."""
    return 0x3D32AD9E * zlib.crc32(database_name.encode())


def migrate_postgres(
    conn: Any, directory: Path = POSTGRES_MIGRATIONS, *, schema: str | None = None
) -> list[int]:
    """Applies the pending migrations of ``directory`` through ``conn`` (a
    psycopg connection, in autocommit mode, with no transaction open).
    Returns the versions applied.

    ``schema`` (a checked name, which ``conn``'s search_path must be): it is
    created first if missing; the migrations and their ``_sqlx_migrations``
    then land in it, as sqlx's do through the search_path."""
    import psycopg
    from psycopg import sql

    migrations = discover(directory)
    if not conn.autocommit:
        raise MigrationError("migrate_postgres needs an autocommit connection")
    database = conn.execute("SELECT current_database()").fetchone()[0]
    lock_id = sqlx_lock_id(database)
    conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
    try:
        if (
            schema is not None
            and not conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)
            ).fetchone()[0]
        ):
            # Under the lock: two migrators of a new schema do not race. Only
            # when missing: CREATE SCHEMA needs CREATE on the database even
            # with IF NOT EXISTS, which a role given its schema may not have.
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(_PG_TABLE)
        dirty = conn.execute(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1"
        ).fetchone()
        if dirty:
            raise MigrationError(
                f"migration {dirty[0]} is partially applied (success = false); fix and "
                "remove its row from _sqlx_migrations"
            )
        applied = {
            v: bytes(c)
            for v, c in conn.execute(
                "SELECT version, checksum FROM _sqlx_migrations ORDER BY version"
            ).fetchall()
        }
        done = []
        for m in _check_applied(migrations, applied, directory):
            start = time.perf_counter_ns()
            try:
                if m.no_tx:
                    _pg_apply(conn, m)
                else:
                    with conn.transaction():
                        _pg_apply(conn, m)
            except psycopg.Error as e:
                raise MigrationError(f"migration {m.version} ({m.path}) failed: {e}") from e
            conn.execute(
                "UPDATE _sqlx_migrations SET execution_time = %s WHERE version = %s",
                (time.perf_counter_ns() - start, m.version),
            )
            log.info("applied migration %d (%s)", m.version, m.description)
            done.append(m.version)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))


def _pg_apply(conn: Any, m: Migration) -> None:
    # No parameters: psycopg sends the file as one simple query, so it may
    # hold several statements.
    conn.execute(m.sql.encode())
    conn.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)"
        " VALUES (%s, %s, TRUE, %s, -1)",
        (m.version, m.description, m.checksum),
    )


# --- SQLite ---------------------------------------------------------------------

_SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)
"""


def migrate_sqlite(conn: sqlite3.Connection, directory: Path = SQLITE_MIGRATIONS) -> list[int]:
    """The same for SQLite. ``conn`` must be in autocommit mode
    (``isolation_level=None``)."""
    migrations = discover(directory)
    if conn.isolation_level is not None:
        raise MigrationError("migrate_sqlite needs an autocommit connection")
    conn.execute("BEGIN IMMEDIATE")  # SQLite's lock: one migrator at a time
    try:
        conn.execute(_SQLITE_TABLE)
        dirty = conn.execute(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1"
        ).fetchone()
        if dirty:
            raise MigrationError(f"migration {dirty[0]} is partially applied (success = false)")
        applied = {
            v: bytes(c) for v, c in conn.execute("SELECT version, checksum FROM _sqlx_migrations")
        }
        pending = _check_applied(migrations, applied, directory)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    done = []
    for m in pending:
        start = time.perf_counter_ns()
        description = m.description.replace("'", "''")
        script = (
            ("" if m.no_tx else "BEGIN IMMEDIATE;\n") + m.sql + "\n;\nINSERT INTO _sqlx_migrations"
            " (version, description, success, checksum, execution_time)"
            f" VALUES ({m.version}, '{description}', TRUE, X'{m.checksum.hex()}', -1);\n"
            + ("" if m.no_tx else "COMMIT;\n")
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration {m.version} ({m.path}) failed: {e}") from e
        conn.execute(
            "UPDATE _sqlx_migrations SET execution_time = ? WHERE version = ?",
            (time.perf_counter_ns() - start, m.version),
        )
        done.append(m.version)
    return done
