"""``openmatch-persistence bench ...``: benchmarks against same-run baselines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from openmatch_persistence.bench import fsync
from openmatch_persistence.bench.chart import bar_chart

_COLORS = {
    "raw": (90, 90, 90),
    "always": (30, 100, 200),
    "many": (30, 150, 70),
    "everysec": (140, 90, 190),
    "no": (200, 150, 40),
    "redis": (200, 60, 40),
}


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
            "ratios, and writes a PNG chart."
        ),
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("."),
        help="where the scratch files go: the file system under test (default: .)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="seconds per case, over all rounds (default 2: about 40 s in all)",
    )
    size.add_argument(
        "--quick", action="store_true", help="0.5 s per case, for a smoke run (noisier)"
    )
    p.add_argument(
        "--png",
        type=Path,
        default=Path("fsync-benchmark.png"),
        help="the chart to write (default: fsync-benchmark.png)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds per case, the best kept (default 5)",
    )
    p.add_argument("--no-redis", action="store_true", help="skip the Redis peer")
    p.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    p.set_defaults(handler=cmd_fsync)


def cmd_fsync(args: argparse.Namespace) -> int:
    duration = 0.5 if args.quick else args.duration
    if duration <= 0 or args.rounds < 1:
        print(
            "openmatch-persistence: error: --duration and --rounds must be positive",
            file=sys.stderr,
        )
        return 2

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr)

    print(f"fsync benchmark, {duration:g} s per case, in {args.dir}", file=sys.stderr)
    report = fsync.run(
        args.dir, duration=duration, redis=not args.no_redis, rounds=args.rounds, progress=progress
    )
    print(fsync.format_table(report))
    bars = [
        (r.label, r.rate, _COLORS.get(r.key.split("_")[0], (120, 120, 120))) for r in report.rows
    ]
    bar_chart(args.png, "openmatch-persistence fsync benchmark (ops/s, log scale)", bars)
    print(f"\nchart: {args.png}", file=sys.stderr)
    if args.check and not all(t.met for t in report.targets):
        return 1
    return 0
