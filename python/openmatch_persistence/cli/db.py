"""``openmatch-persistence migrate [run|info]``: brings a database to the
current schema, or says where it stands (as ``sqlx migrate run|info`` do)."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from openmatch_persistence.cli.common import (
    CliError,
    add_database_url_argument,
    add_json_argument,
    json_default,
    rfc3339,
    sqlite_label,
)
from openmatch_persistence.dsn import is_sqlite_url, mask_dsn
from openmatch_persistence.identity import require_data_dir
from openmatch_persistence.store import open_store, sqlite_path_of, store_schema
from openmatch_persistence.store.base import schema_label
from openmatch_persistence.store.migrate import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, discover
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
        help="apply the pending schema migrations, or list them (info)",
        description=(
            "run (the default): apply the pending migrations to PostgreSQL (--database-url) "
            f"or, without a URL, to the embedded SQLite database DATA_DIR/{SQLITE_FILE_NAME}. "
            "info: list every migration as applied or pending and check the applied ones' "
            "checksums, changing nothing. Bookkeeping is sqlx's _sqlx_migrations table."
        ),
    )
    migrate.add_argument(
        "action",
        nargs="?",
        choices=["run", "info"],
        default="run",
        help="run: apply what is pending (default); info: only report",
    )
    add_database_url_argument(migrate, default_help="the embedded SQLite in --data-dir")
    add_schema_argument(migrate)
    migrate.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"directory of the embedded SQLite database (default: ./{DEFAULT_DATA_DIR})",
    )
    migrate.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="the migrations directory, as sqlx's --source (default: the package's own for "
        "the kind of database)",
    )
    add_json_argument(migrate)
    migrate.set_defaults(handler=cmd_migrate)


def _target(args: argparse.Namespace) -> tuple[str | None, str | None, str, Path]:
    """URL, schema, label and migrations directory of the command line."""
    url: str | None = args.database_url
    schema = store_schema(url, args.schema)
    sqlite = url is None or is_sqlite_url(url)
    if url is None:
        where = sqlite_label(Path(args.data_dir) / SQLITE_FILE_NAME)
    elif sqlite:
        where = url
    else:
        where = schema_label(mask_dsn(url), schema)
    source = args.source or (SQLITE_MIGRATIONS if sqlite else POSTGRES_MIGRATIONS)
    if not Path(source).is_dir():
        raise CliError(f"--source {source}: not a directory")
    return url, schema, where, Path(source)


def cmd_migrate(args: argparse.Namespace) -> int:
    url, schema, where, source = _target(args)
    if args.action == "info":
        return _info(args, url, schema, where, source)
    if url is None:
        # The embedded database lives in a data directory, which only
        # `simulate` and `Persistence.open` create: a mistyped (or a
        # missing) --data-dir is an error, not a new directory.
        require_data_dir(Path(args.data_dir))
    sqlite_path = str(Path(args.data_dir) / SQLITE_FILE_NAME)
    store = open_store(
        url, sqlite_path=sqlite_path, max_connections=1, schema=schema, migrations_dir=source
    )
    try:
        applied = store.migrate()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"database": where, "source": str(source), "applied": applied}))
    elif applied:
        print(
            f"{where}: applied {len(applied)} migrations: {', '.join(map(str, applied))}",
            file=sys.stderr,
        )
    else:
        print(f"{where}: up to date", file=sys.stderr)
    return 0


_ROWS = "SELECT version, checksum, success, installed_on FROM _sqlx_migrations ORDER BY version"


def _applied_rows(url: str | None, schema: str | None, args: argparse.Namespace) -> list[Any]:
    """The rows of ``_sqlx_migrations``, read without creating or changing
    anything (no table yet: none applied)."""
    if url is None or is_sqlite_url(url):
        path = Path(args.data_dir) / SQLITE_FILE_NAME if url is None else Path(sqlite_path_of(url))
        if str(path) == ":memory:" or not path.exists():
            return []
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            ).fetchone():
                return []
            return list(conn.execute(_ROWS))
        finally:
            conn.close()
    import psycopg

    options = None if schema is None else f"-c search_path={schema}"
    with psycopg.connect(url, autocommit=True, options=options) as pg:
        row = pg.execute("SELECT to_regclass('_sqlx_migrations')").fetchone()
        if row is None or row[0] is None:
            return []
        return list(pg.execute(_ROWS).fetchall())


def _info(
    args: argparse.Namespace, url: str | None, schema: str | None, where: str, source: Path
) -> int:
    known = {m.version: m for m in discover(source)}
    rows = {int(r[0]): r for r in _applied_rows(url, schema, args)}
    entries = []
    for version in sorted(set(known) | set(rows)):
        m, row = known.get(version), rows.get(version)
        if row is None:
            state = "pending"
        elif not row[2]:
            state = "failed"  # success = false: partially applied
        elif m is None:
            state = "missing"  # applied, but no file for it in the source
        elif bytes(row[1]) != m.checksum:
            state = "different checksum"
        else:
            state = "installed"
        entries.append(
            {
                "version": version,
                "description": m.description if m else None,
                "state": state,
                "installed_on": rfc3339(row[3]) if row else None,
                "checksum": m.checksum.hex() if m else None,
                "applied_checksum": bytes(row[1]).hex() if row else None,
            }
        )
    problems = [e for e in entries if e["state"] in ("failed", "missing", "different checksum")]
    if args.json:
        out = {"database": where, "source": str(source), "migrations": entries}
        print(json.dumps(out, default=json_default))
    else:
        print(f"{where} (source {source})")
        for e in entries:
            line = f"{e['version']}/{e['state']} {e['description'] or ''}".rstrip()
            if e["installed_on"]:
                line += f" (applied {e['installed_on']})"
            print(line)
            if e["state"] == "different checksum":
                print(f"  applied checksum {e['applied_checksum']}")
                print(f"  local checksum   {e['checksum']}")
    return 1 if problems else 0
