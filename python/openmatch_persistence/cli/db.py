"""``openmatch-persistence migrate``: brings a database to the current schema."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from openmatch_persistence.dsn import mask_dsn
from openmatch_persistence.store import open_store, store_schema
from openmatch_persistence.store.base import schema_label
from openmatch_persistence.store.sqlite import DEFAULT_SQLITE_PATH

#: The embedded database lives in this directory when no URL is given.
DEFAULT_DATA_DIR = DEFAULT_SQLITE_PATH.parent
SQLITE_FILE_NAME = DEFAULT_SQLITE_PATH.name


def add_schema_argument(parser: argparse.ArgumentParser) -> None:
    """``--schema NAME``, beside every ``--database-url``."""
    parser.add_argument(
        "--schema",
        metavar="NAME",
        # An empty variable means the default, as an unset one does.
        default=os.environ.get("OPENMATCH_DATABASE_SCHEMA") or None,
        help="PostgreSQL schema that holds this data directory's tables, created if missing; "
        "a plain SQL identifier (default: $OPENMATCH_DATABASE_SCHEMA, else the URL's "
        "search_path: public)",
    )


def register(subparsers: Any) -> None:
    migrate = subparsers.add_parser(
        "migrate",
        help="apply the pending schema migrations",
        description=(
            "Apply the pending migrations to PostgreSQL (--database-url) or, without a URL, "
            f"to the embedded SQLite database DATA_DIR/{SQLITE_FILE_NAME}. "
            "Bookkeeping is sqlx's _sqlx_migrations table."
        ),
    )
    migrate.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://user@host:port/db (or sqlite:PATH); default: the embedded SQLite",
    )
    add_schema_argument(migrate)
    migrate.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"directory of the embedded SQLite database (default: ./{DEFAULT_DATA_DIR})",
    )
    migrate.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    url: str | None = args.database_url
    sqlite_path = str(Path(args.data_dir) / SQLITE_FILE_NAME)
    schema = store_schema(url, args.schema)
    where = schema_label(mask_dsn(url), schema) if url else sqlite_path
    store = open_store(url, sqlite_path=sqlite_path, max_connections=1, schema=schema)
    try:
        applied = store.migrate()
    finally:
        store.close()
    if applied:
        print(
            f"{where}: applied {len(applied)} migrations: {', '.join(map(str, applied))}",
            file=sys.stderr,
        )
    else:
        print(f"{where}: up to date", file=sys.stderr)
    return 0
