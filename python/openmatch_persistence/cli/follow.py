"""``openmatch-persistence follow DATA_DIR``: keep the database current
while another process (the Rust engine) writes ``DATA_DIR/aof``; see
:mod:`openmatch_persistence.follower`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from openmatch_persistence.cli.common import (
    Stopped,
    add_database_url_argument,
    add_max_payload_argument,
)
from openmatch_persistence.cli.db import add_schema_argument
from openmatch_persistence.compaction import DEFAULT_MAX_BYTES, CompactionPolicy
from openmatch_persistence.follower import DEFAULT_POLL_INTERVAL, Follower


def register(subparsers: Any) -> None:
    follow = subparsers.add_parser(
        "follow",
        help="follow DATA_DIR/aof written by another process (the engine) into the database",
        description="Apply what another process appends to DATA_DIR/aof, flush it to the "
        "database every 100 ms with the checkpoint, snapshot and compact; resume from the "
        "checkpoint after a restart. Never writes to a segment. Stops cleanly on SIGINT or "
        "SIGTERM (what was applied is flushed first).",
    )
    follow.add_argument("data_dir", metavar="DATA_DIR", help="the engine's data directory")
    add_database_url_argument(follow, default_help="DATA_DIR's own SQLite file")
    add_schema_argument(follow)
    follow.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics while it runs "
        "(0: any free port, printed on stderr)",
    )
    follow.add_argument(
        "--writer-fsync",
        choices=("always", "everysec", "no", "unknown"),
        default="unknown",
        help="the writer's fsync policy: with 'always' every appended byte is already durable "
        "and the follower does not fdatasync segments itself before a flush (default: unknown)",
    )
    follow.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help="how often to look for new frames (default %(default)s)",
    )
    follow.add_argument(
        "--compact-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="BYTES",
        help="snapshot and delete covered closed segments once the AOF holds more "
        "(0: never; default %(default)s)",
    )
    add_max_payload_argument(follow)
    follow.set_defaults(handler=cmd_follow)


def cmd_follow(args: argparse.Namespace) -> int:
    policy = (
        CompactionPolicy(max_bytes=args.compact_bytes, max_age=None)
        if args.compact_bytes > 0
        else None
    )
    follower = Follower(
        args.data_dir,
        database_url=args.database_url,
        schema=args.schema,
        writer_fsync=None if args.writer_fsync == "unknown" else args.writer_fsync,
        poll_interval=args.poll_interval,
        compaction=policy,
        max_payload=args.max_payload,
    )
    metrics = None
    try:
        if args.metrics_port is not None:
            from openmatch_persistence.metrics import serve_follower

            metrics = serve_follower(follower, args.metrics_port)
            print(f"metrics on {metrics.url}", file=sys.stderr)
        try:
            follower.run()
        except Stopped as e:
            print(
                f"openmatch-persistence: follow stopped by {e.name} at position "
                f"{follower.position}; flushing",
                file=sys.stderr,
            )
            follower.close()
            return e.code
    finally:
        if metrics is not None:
            metrics.close()
        if not follower.closed:
            follower.close()
    return 0
