"""``openmatch-persistence recover | snapshot | compact DATA_DIR``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from openmatch_persistence.cli.common import (
    add_database_url_argument,
    add_json_argument,
    add_max_payload_argument,
)
from openmatch_persistence.cli.db import add_schema_argument
from openmatch_persistence.persistence import Persistence, cut_log_until


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="the data directory")
    add_database_url_argument(parser, default_help="the SQLite file in DATA_DIR")
    add_schema_argument(parser)
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="take a database that holds a snapshot but no data directory identity as this "
        "data directory's (never one that belongs to another)",
    )
    add_max_payload_argument(parser)


def register(subparsers: Any) -> None:
    recover = subparsers.add_parser(
        "recover",
        help="load the latest snapshot, replay the AOF after it, verify; say what happened",
    )
    _common(recover)
    recover.add_argument(
        "--ignore-snapshot",
        action="store_true",
        help="replay the whole AOF from its start instead (while compaction has kept it)",
    )
    recover.add_argument(
        "--until",
        type=int,
        metavar="POSITION",
        help="rebuild the state before the operation at POSITION (as recovery names one that "
        "breaks an invariant); that operation and all after it are moved to backup files",
    )
    add_json_argument(recover)
    recover.set_defaults(handler=cmd_recover)

    snapshot = subparsers.add_parser(
        "snapshot", help="recover, then write the whole state to the database at its position"
    )
    _common(snapshot)
    add_json_argument(snapshot)
    snapshot.set_defaults(handler=cmd_snapshot)

    compact = subparsers.add_parser(
        "compact", help="recover, snapshot, and delete the AOF segments the snapshot covers"
    )
    _common(compact)
    add_json_argument(compact)
    compact.set_defaults(handler=cmd_compact)


def cmd_recover(args: argparse.Namespace) -> int:
    cut = None
    if args.until is not None:
        cut = cut_log_until(
            args.data_dir,
            args.until,
            database_url=args.database_url,
            schema=args.schema,
            ignore_snapshot=args.ignore_snapshot,
            adopt=args.adopt,
            max_payload=args.max_payload,
        )
        if not args.json:
            print(cut.describe())
    with _open_existing(args, ignore_snapshot=args.ignore_snapshot) as p:
        report = p.recovery
        if args.json:
            print(
                json.dumps(
                    {
                        "digest": p.digest(),
                        "orders": report.orders,
                        "retired_ids": report.retired_ids,
                        "balances": report.balances,
                        "epochs": report.epochs,
                        "replayed": report.replayed,
                        "snapshot": report.snapshot,
                        "snapshot_epoch": report.snapshot_epoch,
                        "snapshot_source": report.snapshot_source,
                        "loaded": report.loaded,
                        "replay_from": report.replay_from,
                        "replay_to": report.replay_to,
                        "torn_tail_cut": report.torn_tail_cut,
                        "segments": report.segments,
                        "database": p.database,
                        "data_dir_id": str(p.identity.id),
                        "seconds": round(report.seconds, 6),
                        "cut": None
                        if cut is None
                        else {
                            "until": cut.until,
                            "position": cut.position,
                            "backups": [p.backup for p in cut.removed],
                        },
                    },
                    sort_keys=True,
                )
            )
        else:
            print(f"recovered {p.data_dir} (database {p.database})")
            print(report.describe())
            print(f"digest: {p.digest()}")
    return 0


def _open_existing(args: argparse.Namespace, **options: Any) -> Persistence:
    """The data dir named on the command line, which must exist."""
    return Persistence.open(
        args.data_dir,
        database_url=args.database_url,
        schema=args.schema,
        adopt=args.adopt,
        create=False,
        max_payload=args.max_payload,
        **options,
    )


def cmd_snapshot(args: argparse.Namespace) -> int:
    with _open_existing(args) as p:
        position = p.snapshot()
        if args.json:
            print(
                json.dumps(
                    {"data_dir": str(p.data_dir), "position": position, "database": p.database},
                    sort_keys=True,
                )
            )
        else:
            print(f"snapshot of {p.data_dir} at position {position} written to {p.database}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    with _open_existing(args) as p:
        report = p.compact()
        if args.json:
            print(
                json.dumps(
                    {
                        "aof_dir": str(p.aof_dir),
                        "rotated_at": report.rotated_at,
                        "snapshot_position": report.snapshot_position,
                        "deleted_segments": report.deleted_segments,
                        "deleted_bytes": report.deleted_bytes,
                    },
                    sort_keys=True,
                )
            )
            return 0
        print(
            f"compacted {p.aof_dir}: rotated at {report.rotated_at}, snapshot at "
            f"{report.snapshot_position}, deleted {report.deleted_segments} segment(s), "
            f"{report.deleted_bytes} bytes"
        )
    return 0
