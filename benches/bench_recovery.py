"""Recovery time of a 1,000,000-operation AOF: with no snapshot, and with a
snapshot covering its first half (issue 6). Targets on a 2-core machine:
<= 3 s and <= 1.5 s.

    python benches/bench_recovery.py [--ops 1000000] [--database-url URL]

The AOF is written once (fsync "no"; closing fsyncs) with the deterministic
workload; each measurement opens a fresh copy of the data directory with
``Persistence.open``, which recovers, and reports the wall time of the open
(store, writer, snapshot load, replay, check, digest).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from openmatch_persistence import _core
from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.recovery import RecoveryReport
from openmatch_persistence.workload import Workload

OFF = CompactionPolicy(max_bytes=None, max_age=None)


def build(data_dir: Path, n: int, snapshot_at: int) -> None:
    """The first ``snapshot_at`` operations through the facade, which leaves
    the database at that position when it closes; the rest straight into the
    AOF with a bare writer, so the snapshot covers exactly the first part."""
    stream = iter(Workload(seed=1))

    def batches(count: int) -> Iterator[list[_core.Operation]]:
        done = 0
        while done < count:
            batch = [next(stream) for _ in range(min(10_000, count - done))]
            done += len(batch)
            yield batch

    with Persistence.open(data_dir, fsync="no", flush_interval=3600, compaction=OFF) as p:
        for batch in batches(snapshot_at):
            p.append_many(batch)
    with _core.AofWriter(data_dir / "aof", "no") as writer:
        for batch in batches(n - snapshot_at):
            writer.append_many(batch)


def measure(template: Path, ignore_snapshot: bool) -> tuple[float, RecoveryReport]:
    """Opens a copy of ``template``; returns the wall time of the open
    (recovery included) and the recovery's report."""
    work = Path(tempfile.mkdtemp(prefix="om-recovery-"))
    try:
        shutil.copytree(template, work / "d")
        started = time.perf_counter()
        p = Persistence.open(work / "d", compaction=OFF, ignore_snapshot=ignore_snapshot)
        wall = time.perf_counter() - started
        p.close()
        return wall, p.recovery
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=1_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="om-recovery-template-"))
    try:
        t0 = time.perf_counter()
        build(root / "half", args.ops, args.ops // 2)
        print(f"wrote {args.ops:,} operations in {time.perf_counter() - t0:.1f} s")
        rows = []
        for label, ignore in (("no snapshot (full replay)", True), ("snapshot at half", False)):
            best = None
            for _ in range(3):
                wall, report = measure(root / "half", ignore)
                if best is None or wall < best[0]:
                    best = (wall, report)
            assert best is not None
            rows.append((label, *best))
        aof = sum(f.stat().st_size for f in (root / "half" / "aof").glob("*.aof"))
        print(f"{platform.machine()}, Python {platform.python_version()}")
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
