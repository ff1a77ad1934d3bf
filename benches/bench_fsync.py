"""Durable appends: the writer against write+fdatasync and Redis.

    pytest benches/bench_fsync.py --benchmark-enable     # pytest-benchmark rows
    openmatch-persistence bench fsync                    # the table, ratios, chart

The ratios of issue 3 (always at 1 thread >= 0.9x the raw loop; 16 threads
>= 8x one thread and >= 2x Redis at 16 clients; append_many of 10,000
Orders >= 500,000 ops/s) are computed by the command, which measures every
case in one run; these rows are the same cases, sized to keep
``pytest benches/`` within a couple of minutes.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openmatch_persistence import AofWriter, _core, encode
from openmatch_persistence.bench.fsync import RAW_RECORD_SIZE
from openmatch_persistence.bench.redis_peer import RedisPeer, RespClient, resp_command
from openmatch_persistence.bench.workload import order_ops

ORDER = order_ops(1)[0]


@pytest.fixture
def aof_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "aof"
    shutil.rmtree(tmp_path / "aof", ignore_errors=True)


def test_raw_fdatasync_loop_rust(benchmark: Any, tmp_path: Path) -> None:
    benchmark.extra_info["ops_per_call"] = 50
    benchmark.pedantic(
        _core._raw_fdatasync_loop, args=(tmp_path / "raw", 50, RAW_RECORD_SIZE), rounds=5
    )


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_append_one_thread(benchmark: Any, aof_dir: Path, fsync: str) -> None:
    with AofWriter(aof_dir, fsync) as writer:  # type: ignore[arg-type]
        benchmark.pedantic(writer.append, args=(ORDER,), rounds=200, warmup_rounds=5)


@pytest.mark.parametrize("threads", [4, 16, 64])
def test_append_threads_always(benchmark: Any, aof_dir: Path, threads: int) -> None:
    per_thread = 20
    benchmark.extra_info["ops_per_call"] = per_thread * threads
    with AofWriter(aof_dir, "always") as writer:

        def burst() -> None:
            def work() -> None:
                for _ in range(per_thread):
                    writer.append(ORDER)

            workers = [threading.Thread(target=work) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        benchmark.pedantic(burst, rounds=5)
        benchmark.extra_info["records_per_fsync"] = writer.stats().records_per_fsync


@pytest.mark.parametrize("batch", [1, 100, 10_000])
def test_append_many_always(benchmark: Any, aof_dir: Path, batch: int) -> None:
    ops = order_ops(batch)
    benchmark.extra_info["ops_per_call"] = batch
    with AofWriter(aof_dir, "always") as writer:
        benchmark.pedantic(writer.append_many, args=(ops,), rounds=10, warmup_rounds=1)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_appendfsync_always_16_clients(benchmark: Any, tmp_path: Path) -> None:
    clients, per_client = 16, 20
    benchmark.extra_info["ops_per_call"] = clients * per_client
    command = resp_command(b"RPUSH", b"bench", encode(ORDER))
    with RedisPeer(tmp_path) as peer:
        conns = [RespClient(peer.port) for _ in range(clients)]

        def burst() -> None:
            def work(conn: RespClient) -> None:
                for _ in range(per_client):
                    conn.call(command)

            workers = [threading.Thread(target=work, args=(c,)) for c in conns]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        try:
            benchmark.pedantic(burst, rounds=5)
        finally:
            for c in conns:
                c.close()


if __name__ == "__main__":
    import sys

    from openmatch_persistence.cli import main

    sys.exit(main(["bench", "fsync", *sys.argv[1:]]))
