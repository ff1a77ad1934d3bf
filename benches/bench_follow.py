"""Follow lag: the Rust ``engine_writer`` example appends at a steady rate
(default 10,000 ops/s) to DATA_DIR/aof; a :class:`Follower` in this process
keeps PostgreSQL current. The lag of a byte is the time from when it is
first seen in the segment (a thread stats the live segment every
millisecond) to the commit of the flush whose checkpoint covers it;
p50/p99/max over every sample. Goal (issue 16): p99 <= 250 ms.

Run (not in CI):  python benches/bench_follow.py [--rate 10000] [--seconds 20]
Needs release builds (``maturin develop --release``, ``cargo build --release
-p openmatch-aof --example engine_writer``) for honest numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from openmatch_persistence import _core
from openmatch_persistence.follower import Follower

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def watch(aof_dir: Path, seen: list[tuple[float, int]], stop: threading.Event) -> None:
    """Records (time, log end) each time the log's end moves, every ms."""
    last = -1
    while not stop.is_set():
        segments = _core.list_segments(aof_dir)
        if segments:
            start, _, length = segments[-1]
            if start + length != last:
                last = start + length
                seen.append((time.monotonic(), last))
        time.sleep(0.001)


def run(rate: int, seconds: float, url: str, fsync: str) -> None:
    schema = f"bench_follow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    binary = ROOT / "target" / "release" / "examples" / "engine_writer"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "engine"
            ops = int(rate * seconds)
            args = ["--rate", str(rate), "--ops", str(ops), "--fsync", fsync]
            writer = subprocess.Popen([str(binary), str(data_dir), *args])
            while not (data_dir / "aof").is_dir():
                time.sleep(0.01)
            follower = Follower(data_dir, database_url=url, schema=schema, writer_fsync=fsync)
            seen: list[tuple[float, int]] = []
            stop = threading.Event()
            watcher = threading.Thread(target=watch, args=(data_dir / "aof", seen, stop))
            watcher.start()
            lags: list[float] = []
            matched = 0
            try:
                next_flush = time.monotonic()
                while writer.poll() is None or matched < len(seen):
                    follower.poll()
                    if time.monotonic() >= next_flush:
                        next_flush = time.monotonic() + 0.1
                        flushed = follower.flush() or 0
                        done = time.monotonic()
                        while matched < len(seen) and seen[matched][1] <= flushed:
                            lags.append(done - seen[matched][0])
                            matched += 1
                        if writer.poll() is not None and follower.position >= seen[-1][1]:
                            stop.set()
                    time.sleep(0.005)
            finally:
                stop.set()
                watcher.join()
                follower.close()
                writer.wait()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"rate {rate} ops/s for {seconds:.0f} s, writer fsync {fsync}: {len(lags)} samples")
    print(
        f"follow lag: p50 {statistics.median(lags) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {lags[-1] * 1000:.0f} ms (goal p99 <= 250 ms: {'met' if p99 <= 0.25 else 'MISSED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    run(args.rate, args.seconds, args.database_url, args.fsync)


if __name__ == "__main__":
    main()
