"""Recovery time of a 1,000,000-operation AOF: with no snapshot, and with a
snapshot covering its first half (issue 6). Targets on a 2-core machine:
<= 3 s and <= 1.5 s.

    python benches/bench_recovery.py [--ops 1000000] [--database-url URL]

The AOF is written once (fsync "no", then closed: closing fsyncs) with the
deterministic workload; each measurement opens a fresh copy of the data
directory with ``Persistence.open``, which recovers, and reports the
recovery's own timing and the wall time of the open.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.workload import Workload

OFF = CompactionPolicy(max_bytes=None, max_age=None)


def build(data_dir: Path, n: int, snapshot_at: int | None, database_url: str | None) -> None:
    stream = iter(Workload(seed=1))
    with Persistence.open(
        data_dir, database_url=database_url, fsync="no", flush_interval=3600, compaction=OFF
    ) as p:
        done = 0
        while done < n:
            batch = [next(stream) for _ in range(min(10_000, n - done))]
            p.append_many(batch)
            done += len(batch)
            if snapshot_at is not None and done == snapshot_at:
                p.snapshot()
        # Keep the database at the snapshot: drop the flusher's later work.
        p._flusher.stop(final_flush=False)
        p._flusher.flush = lambda: None  # type: ignore[method-assign]


def measure(template: Path, database_url: str | None, ignore_snapshot: bool) -> tuple[float, Any]:
    work = Path(tempfile.mkdtemp(prefix="om-recovery-"))
    try:
        shutil.copytree(template, work / "d")
        started = time.perf_counter()
        p = Persistence.open(
            work / "d", database_url=database_url, compaction=OFF, ignore_snapshot=ignore_snapshot
        )
        wall = time.perf_counter() - started
        report = p.recovery
        p._flusher.stop(final_flush=False)
        p._flusher.flush = lambda: None  # type: ignore[method-assign]
        p.close()
        return wall, report
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=1_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="om-recovery-template-"))
    try:
        t0 = time.perf_counter()
        build(root / "half", args.ops, args.ops // 2, None)
        print(f"wrote {args.ops:,} operations in {time.perf_counter() - t0:.1f} s")
        rows = []
        for label, ignore in (("no snapshot (full replay)", True), ("snapshot at half", False)):
            best = None
            for _ in range(3):
                wall, report = measure(root / "half", None, ignore)
                if best is None or wall < best[0]:
                    best = (wall, report)
            assert best is not None
            rows.append((label, *best))
        aof = sum(f.stat().st_size for f in (root / "half" / "aof").glob("*.aof"))
        print(
            f"{platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}"
        )
        print(f"AOF {aof / 1e6:.0f} MB, SQLite store, best of 3\n")
        print("| recovery | wall time of open | replayed | loaded from snapshot | target |")
        print("|---|---:|---:|---:|---|")
        for (label, wall, report), target in zip(rows, (3.0, 1.5)):
            loaded = sum(report.loaded.values())
            ok = "met" if wall <= target else "MISSED"
            print(
                f"| {label} | {wall:.2f} s | {report.replayed:,} | {loaded:,} "
                f"| <= {target} s: {ok} |"
            )
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
