"""The ``openmatch-persistence`` command.

Each command group lives in its own module with a ``register(subparsers)``
function; handlers return the process exit code. Every failure becomes one
line on stderr and a non-zero exit, never a traceback: the wording is
:func:`.common.error_line`'s, the only place that maps errors to lines.
SIGINT and SIGTERM stop a command cleanly (exit 130 and 143).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from openmatch_persistence import __version__
from openmatch_persistence.dsn import is_sqlite_url
from openmatch_persistence.persistence import SQLITE_FILENAME
from openmatch_persistence.store import sqlite_path_of

from . import aof, bench, db, follow, recovery, simulate
from .common import (
    PROG,
    Rfc3339Formatter,
    add_verbose_everywhere,
    probe_database,
    probe_sqlite,
    report,
    stop_on_signals,
    verbosity,
)

#: Command-group modules; each adds its subcommands to the parser.
GROUPS = [aof, db, recovery, simulate, follow, bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Durable state for the OpenMatch matching engine.",
        epilog="Exit status: 0 success, 1 a warning (a torn tail) or a failed check, "
        "2 an error, 130/143 stopped by SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(subparsers)
    add_verbose_everywhere(parser)
    return parser


def _setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        Rfc3339Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", tracebacks=level <= logging.DEBUG
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _sqlite_file(args: argparse.Namespace, dsn: str | None) -> Path | str | None:
    """The SQLite file the command will open, if it opens one."""
    if dsn is not None:
        return sqlite_path_of(dsn) if is_sqlite_url(dsn) else None
    if "database_url" not in args:
        return None  # the aof and bench commands open no database
    root = getattr(args, "data_dir", None)
    return None if root is None else Path(root) / SQLITE_FILENAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity(args), logging.DEBUG)
    _setup_logging(level)
    dsn: str | None = getattr(args, "database_url", None)
    try:
        with stop_on_signals():
            # Fail fast, with libpq's reason, before a pool starts retrying;
            # and at once on an SQLite file another process has locked.
            probe_database(dsn)
            probe_sqlite(_sqlite_file(args, dsn))
            code: int = args.handler(args)
    except BrokenPipeError:
        # `... | head`: the reader left; that is not our failure.
        return 0
    except SystemExit:
        raise
    except BaseException as e:  # the one place where every failure is reported
        return report(e, dsn=dsn)
    return code


if __name__ == "__main__":
    sys.exit(main())
