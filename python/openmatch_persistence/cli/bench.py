"""``openmatch-persistence bench ...``: benchmarks against same-run baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from openmatch_persistence.bench import fsync
from openmatch_persistence.bench.chart import Bar, Series, bar_chart
from openmatch_persistence.cli.common import CliError

#: Legend entries by the first part of a case's key.
SERIES = {
    "raw": Series("raw write + fdatasync (baseline)", "#5a5a5a"),
    "always": Series("writer, fsync=always, N threads", "#1e64c8"),
    "many": Series("writer, always, append_many(N)", "#1e9646"),
    "everysec": Series("writer, fsync=everysec", "#8c5abe"),
    "no": Series("writer, fsync=no", "#c89628"),
    "redis": Series("Redis, appendfsync always", "#c83c28"),
    "persist": Series("Persistence.append (journal + flusher)", "#2aa6a6"),
}
OTHER = Series("other", "#999999")


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="run benchmarks")
    commands = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    p = commands.add_parser(
        "fsync",
        help="durable writer vs raw write+fdatasync vs Redis appendfsync always",
        description=(
            "Measures the durable AOF writer against a raw write+fdatasync loop and "
            "against a Redis started for the purpose (appendonly yes, appendfsync always), "
            "in one run on the file system of --dir; prints a table and the targets as "
            "ratios, and writes an SVG chart."
        ),
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where the scratch files go: the file system under test (default: .)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--duration",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds per case, over all rounds (default 2: about 40 s in all)",
    )
    size.add_argument(
        "--quick", action="store_true", help="0.5 s per case, for a smoke run (noisier)"
    )
    p.add_argument(
        "--chart",
        type=Path,
        default=Path("fsync-benchmark.svg"),
        metavar="PATH",
        help="the SVG chart to write (default: fsync-benchmark.svg)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        metavar="N",
        help="interleaved rounds per case, the best kept (default 5)",
    )
    p.add_argument("--no-redis", action="store_true", help="skip the Redis peer")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.set_defaults(handler=cmd_fsync)


def cmd_fsync(args: argparse.Namespace) -> int:
    duration = 0.5 if args.quick else args.duration
    if duration <= 0 or args.rounds < 1:
        raise CliError("--duration and --rounds must be positive")
    if not args.chart.parent.is_dir():
        # Found before a minute of measuring, not after.
        raise CliError(f"--chart {args.chart}: the directory {args.chart.parent} does not exist")

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr)

    print(f"fsync benchmark, {duration:g} s per case, in {args.dir}", file=sys.stderr)
    report = fsync.run(
        args.dir, duration=duration, redis=not args.no_redis, rounds=args.rounds, progress=progress
    )
    print(fsync.format_table(report))
    quick = args.quick or args.rounds == 1
    bars = [Bar(r.label, r.rate, SERIES.get(r.key.split("_")[0], OTHER).name) for r in report.rows]
    used = {b.series for b in bars}
    bar_chart(
        args.chart,
        "openmatch-persistence fsync benchmark: durable appends per second",
        bars,
        [s for s in [*SERIES.values(), OTHER] if s.name in used],
        subtitle=[
            f"machine: {report.machine}",
            f"file system: {report.filesystem}",
            f"{args.rounds} interleaved round(s), {duration:g} s per case in all, best round "
            f"kept; Redis {'skipped' if args.no_redis else 'included'}",
        ],
        warning=(
            f"QUICK RUN ({duration:g} s per case, {args.rounds} round(s)): noisy, "
            "not for comparison"
            if quick
            else None
        ),
    )
    print(f"\nchart: {args.chart}", file=sys.stderr)
    if args.check and not all(t.met for t in report.targets):
        return 1
    return 0
