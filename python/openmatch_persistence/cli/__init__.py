"""The ``openmatch-persistence`` command.

Each command group lives in its own module with a ``register(subparsers)``
function; handlers return the process exit code. Errors of the package's
hierarchy become a one-line message on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from openmatch_persistence.errors import OpenMatchPersistenceError

from . import aof, bench, db, recovery, simulate

#: Command-group modules; each adds its subcommands to the parser.
GROUPS = [aof, db, recovery, simulate, bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openmatch-persistence",
        description="Durable state for the OpenMatch matching engine.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args)
    except OpenMatchPersistenceError as e:
        print(f"openmatch-persistence: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `... | head`: the reader left; that is not our failure.
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
