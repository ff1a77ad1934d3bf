"""``openmatch-persistence simulate``: the whole pipeline under a realistic
OpenMatch workload, ending with a recovery check; and ``status``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.cli.common import (
    CliError,
    Stopped,
    add_database_url_argument,
    add_json_argument,
    add_max_payload_argument,
    json_default,
    rfc3339,
)
from openmatch_persistence.cli.db import add_schema_argument
from openmatch_persistence.cli.sampling import Reservoir, RunSampler
from openmatch_persistence.compaction import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, CompactionPolicy
from openmatch_persistence.dsn import mask_dsn
from openmatch_persistence.identity import AOF_DIRNAME, read_identity, require_data_dir
from openmatch_persistence.persistence import SQLITE_FILENAME, Persistence
from openmatch_persistence.progress import Progress
from openmatch_persistence.store.base import identity_mismatch, schema_label
from openmatch_persistence.workload import Workload

DEFAULT_DATA_DIR = "openmatch-data"


def _database(parser: argparse.ArgumentParser) -> None:
    add_database_url_argument(parser, default_help="the SQLite file in the data dir")
    add_schema_argument(parser)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {port}")
    return port


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted(int(n.replace("_", "")) for n in text.split(",") if n.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("counts are >= 1")
    return counts


def register(subparsers: Any) -> None:
    sim = subparsers.add_parser(
        "simulate",
        help="drive an OpenMatch workload through AOF, state, flush and compaction",
    )
    sim.add_argument(
        "--ops", type=int, default=20_000, metavar="N", help="operations to append (20000)"
    )
    sim.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="R",
        help="operations per second (default: as fast as it goes)",
    )
    sim.add_argument(
        "--fsync",
        choices=["always", "everysec", "no"],
        default="always",
        help="when an append is durable: always (fdatasync before it returns; the default), "
        "everysec (a background fsync every second), no (the kernel decides); "
        "docs/fsync-policies.md",
    )
    sim.add_argument(
        "--batch",
        type=int,
        default=32,
        metavar="B",
        help="operations per append call, as an engine writes an epoch's changes (32)",
    )
    sim.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="D",
        help=f"the data directory, created if missing (default: ./{DEFAULT_DATA_DIR})",
    )
    _database(sim)
    sim.add_argument(
        "--compact-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"compact when the AOF passes this many bytes ({DEFAULT_MAX_BYTES})",
    )
    sim.add_argument(
        "--compact-age",
        type=float,
        default=DEFAULT_MAX_AGE,
        metavar="S",
        help=f"or when its oldest record is this many seconds old ({DEFAULT_MAX_AGE:.0f})",
    )
    sim.add_argument(
        "--adopt",
        action="store_true",
        help="take a database that holds a snapshot but no data directory identity as this "
        "data directory's (never one that belongs to another)",
    )
    sim.add_argument(
        "--seed", type=int, default=None, metavar="S", help="workload seed (default: random)"
    )
    sim.add_argument(
        "--crash-after",
        type=int,
        default=None,
        metavar="N",
        help="SIGKILL this process right after its N-th acknowledged operation",
    )
    sim.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics while it runs "
        "(0: any free port, printed on stderr)",
    )
    sim.add_argument(
        "--report-at",
        type=_counts,
        default=(),
        metavar="N,N,...",
        help="at these operation counts, snapshot and print one JSON line (memory, state image "
        "size, snapshot time with its flush and image parts, flush lag p99, AOF held) on stderr",
    )
    add_max_payload_argument(sim)
    add_json_argument(sim)
    sim.set_defaults(handler=cmd_simulate)

    status = subparsers.add_parser(
        "status", help="segments, last snapshot, flush position and lag of a data directory"
    )
    status.add_argument("data_dir", metavar="DATA_DIR", help="the data directory")
    _database(status)
    add_json_argument(status)
    status.set_defaults(handler=cmd_status)


def _failures(stats: dict[str, Any]) -> list[str]:
    """What kept failing in the run, in words, for the end of its summary."""
    out = []
    if stats["last_compaction_error"]:
        out.append(
            f"compaction is failing ({stats['compaction_failures_in_a_row']} in a row, "
            f"{stats['compaction_failures']} in all): {stats['last_compaction_error']}; "
            "the AOF grows until one succeeds"
        )
    if stats["last_image_error"]:
        out.append(
            f"the last state image was not written: {stats['last_image_error']}; "
            "recovery replays the AOF from the previous one"
        )
    if stats["flusher"]["consecutive_failures"]:
        out.append(
            f"the flusher is failing ({stats['flusher']['consecutive_failures']} in a row): "
            f"{stats['flusher']['last_error']}"
        )
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.ops < 0 or args.batch < 1:
        raise CliError("simulate: --ops must be >= 0 and --batch >= 1")
    if args.crash_after is not None and args.crash_after < 1:
        raise CliError("simulate: --crash-after must be >= 1")
    policy = CompactionPolicy(max_bytes=args.compact_bytes, max_age=args.compact_age)
    p = Persistence.open(
        args.data_dir,
        database_url=args.database_url,
        schema=args.schema,
        fsync=args.fsync,
        compaction=policy,
        adopt=args.adopt,
        max_payload=args.max_payload,
    )
    crashed = False
    metrics = None
    done = 0
    progress: Progress | None = None
    try:
        if args.metrics_port is not None:
            # Imported on request: prometheus_client is needed only here.
            from openmatch_persistence.metrics import serve as serve_metrics

            metrics = serve_metrics(p, args.metrics_port)
            print(f"metrics on {metrics.url}", file=sys.stderr)
        seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
        # A used data dir is continued, not restarted: replaying the seed's
        # fresh stream would repeat its ids and epochs and reset balances.
        workload = Workload.continuing(p.state, seed=seed)
        resume = workload.resume
        if resume is not None and not resume.is_empty:
            print(
                f"continuing from position {resume.position}: {resume.order_count} orders, "
                f"last epoch {resume.last_epoch}"
            )
            sys.stdout.flush()
        stream = iter(workload)
        sampler = RunSampler(p)
        reports = list(args.report_at)
        progress = Progress(args.ops, unit="ops")
        latencies = Reservoir()
        started = time.monotonic()
        while done < args.ops:
            size = min(args.batch, args.ops - done)
            if args.crash_after is not None and done < args.crash_after:
                size = min(size, args.crash_after - done)
            if reports:
                size = min(size, reports[0] - done)
            batch = [next(stream) for _ in range(size)]
            if args.rate:
                # Pace to the requested rate: this batch is due at done/rate.
                delay = started + done / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t0 = time.perf_counter()
            position = p.append_many(batch)
            latencies.add(time.perf_counter() - t0)
            done += size
            if args.crash_after is not None and done == args.crash_after:
                print(f"acknowledged {done} operations up to position {position}; crashing")
                sys.stdout.flush()
                crashed = True
                os.kill(os.getpid(), signal.SIGKILL)
            sampler.sample()
            if reports and done == reports[0]:
                reports.pop(0)
                reported = sampler.report(done, time.monotonic() - started)
                print(json.dumps(reported, sort_keys=True), file=sys.stderr)
            progress.update(done, extra=f"flush lag {sampler.last_lag:.2f} s")
        sampler.sample(force=True)
        progress.finish()
        elapsed = time.monotonic() - started
        # A compaction that started during the run finishes before the
        # summary (close() would wait for it anyway): the summary says what
        # the run did, not how far a background thread had got.
        p.wait_compaction()
        digest_before = p.digest()
        stats = p.stats()
    except Stopped:
        if progress is not None:
            progress.finish()
        # What was acknowledged is durable; close() below flushes it to the
        # database and writes the state's image, so the next open replays
        # nothing.
        print(
            f"stopping: {done} operations acknowledged up to position {p.position}; "
            "flushing and closing",
            file=sys.stderr,
        )
        raise
    finally:
        if metrics is not None:
            metrics.close()
        if not crashed:
            p.close()
    writer = stats["writer"]
    flusher = stats["flusher"]
    failing = _failures(stats)
    # The recovery check: reopen what was just closed and compare states.
    with Persistence.open(
        args.data_dir,
        database_url=args.database_url,
        schema=args.schema,
        max_payload=args.max_payload,
    ) as again:
        recovered = again.digest()
        report = again.recovery
    ok = recovered == digest_before
    if args.json:
        print(
            json.dumps(
                {
                    "operations": done,
                    "seconds": round(elapsed, 6),
                    "data_dir": str(args.data_dir),
                    "database": p.database,
                    "fsync": args.fsync,
                    "stats": stats,
                    "append_latency_p50": latencies.percentile(0.5),
                    "append_latency_p99": latencies.percentile(0.99),
                    **sampler.summary(),
                    "failures": failing,
                    "recovery_check": {
                        "ok": ok,
                        "snapshot": report.snapshot,
                        "replayed": report.replayed,
                        "digest": recovered,
                    },
                },
                sort_keys=True,
                default=json_default,
            )
        )
        return 0 if ok and not failing else 1
    print(
        f"simulated {done} operations in {elapsed:.2f} s ({done / max(elapsed, 1e-9):,.0f} ops/s)"
    )
    print(f"  data dir       {args.data_dir} (database {p.database}), fsync={args.fsync}")
    measured = sampler.summary()
    print(
        f"  AOF            {writer['bytes']:,} bytes appended, {stats['aof_bytes']:,} held "
        f"(at most {measured['aof_bytes_max']:,})"
    )
    print(
        f"  fsyncs         {writer['fsyncs']:,} ({writer['records_per_fsync']:.1f} operations each)"
    )
    print(
        f"  append latency p50 {latencies.percentile(0.5) * 1e3:.2f} ms, "
        f"p99 {latencies.percentile(0.99) * 1e3:.2f} ms per call of up to {args.batch}"
    )
    print(
        f"  flush          {flusher['flushes']} flushes, {flusher['rows_written']:,} rows; "
        f"lag p99 {measured['flush_lag_p99']:.3f} s, at the end {flusher['seconds_behind']:.3f} s"
    )
    if stats["held_back_seconds"] >= 0.001:
        print(
            f"  held back      appends waited {stats['held_back_seconds']:.2f} s for the flusher "
            "(max_flush_lag)"
        )
    print(f"  memory         {measured['rss_max_bytes'] / 2**20:,.0f} MiB resident at most")
    print(f"  compactions    {stats['compactions']} ({stats['compaction_failures']} failed)")
    print(
        f"  recovery check {'OK' if ok else 'FAILED'}: snapshot at {report.snapshot}, "
        f"{report.replayed} replayed, digest {recovered[:16]}"
    )
    # A failure the operator must act on is the last word of the run, and
    # its exit status, even when the recovery check passed.
    for line in failing:
        print(f"  WARNING: {line}")
    return 0 if ok and not failing else 1


def cmd_status(args: argparse.Namespace) -> int:
    from openmatch_persistence.store import open_store, store_schema

    schema = store_schema(args.database_url, args.schema)
    root = Path(args.data_dir)
    require_data_dir(root)
    aof_dir = root / AOF_DIRNAME
    identity = read_identity(root)
    segments = _core.list_segments(aof_dir)
    backups = _core.list_backups(aof_dir)
    end = segments[-1][0] + segments[-1][2] if segments else 0
    checkpoint = None
    image = None
    owner = None
    sqlite_path = root / SQLITE_FILENAME
    store_label = (
        f"sqlite:{sqlite_path}"
        if args.database_url is None
        else schema_label(mask_dsn(args.database_url), schema)
    )
    if args.database_url is not None or sqlite_path.exists():
        store = open_store(
            args.database_url, sqlite_path=str(sqlite_path), max_connections=1, schema=schema
        )
        try:
            store.migrate()  # the schema only, as any open would
            owner = store.identity()
            if owner is not None and (identity is None or owner.data_dir_id != identity.id):
                # Its checkpoint says nothing about this data directory.
                raise identity_mismatch(
                    store_label,
                    None if identity is None else identity.id,
                    str(root.absolute()),
                    owner,
                    "status",
                )
            checkpoint = store.checkpoint()
            image = store.load_image()
        finally:
            store.close()
    info: dict[str, Any] = {
        "data_dir": str(root),
        "data_dir_id": None if identity is None else str(identity.id),
        "database_claimed_as": None if owner is None else owner.claimed_as,
        "segments": [{"start": s, "path": path, "bytes": n} for s, path, n in segments],
        "aof_bytes": sum(n for _, _, n in segments),
        "aof_end": end,
        "snapshot": None
        if checkpoint is None
        else {
            "position": checkpoint.position,
            "epoch": checkpoint.epoch_id,
            "flushed_at": rfc3339(checkpoint.flushed_at),
        },
        "flush_lag_bytes": end - (checkpoint.position if checkpoint else 0),
        "image": None if image is None else {"position": image.position, "bytes": len(image.data)},
        "bytes_past_image": end - (image.position if image else 0),
        "backups": [{"path": path, "bytes": n} for path, n in backups],
    }
    # Compaction keeps the AOF past the last image under its bound; far past
    # it, compaction is failing (or the writer never ran it): say so.
    behind = info["bytes_past_image"] > 2 * DEFAULT_MAX_BYTES
    info["warnings"] = (
        [
            f"{info['bytes_past_image']:,} AOF bytes are past the last state image, more than "
            f"twice the default compaction bound ({DEFAULT_MAX_BYTES:,}): compaction is failing "
            "or not running (see the writer's log and stats); recovery replays all of them"
        ]
        if behind
        else []
    )
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    print(f"data dir {root} (id {info['data_dir_id'] or 'none yet'})")
    if owner is not None:
        print(f"database: {store_label}, this data directory's ({owner.claimed_as})")
    elif checkpoint is not None or args.database_url is not None:
        print(f"database: {store_label}, not claimed by any data directory yet")
    print(f"AOF: {len(segments)} segment(s), {info['aof_bytes']:,} bytes, end at {end}")
    for s in info["segments"]:
        print(f"  {Path(s['path']).name}  {s['bytes']:>12,} bytes")
    if checkpoint is None:
        print("snapshot: none yet")
    else:
        print(
            f"snapshot: position {checkpoint.position}, epoch {checkpoint.epoch_id}, "
            f"flushed at {info['snapshot']['flushed_at']}"
        )
    print(f"flush lag: {info['flush_lag_bytes']:,} AOF bytes not in the database")
    if image is None:
        print("state image: none yet")
    else:
        print(
            f"state image: position {image.position}, {len(image.data):,} bytes; "
            f"{info['bytes_past_image']:,} AOF bytes past it"
        )
    if backups:
        # Bytes a repair or a writer cut; kept until an operator deletes them.
        print(f"backups: {len(backups)} file(s) of cut AOF bytes")
        for path, n in backups:
            print(f"  {path}  {n:>12,} bytes")
    else:
        print("backups: none")
    for warning in info["warnings"]:
        print(f"WARNING: {warning}")
    return 0
