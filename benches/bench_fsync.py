"""Durable appends: the writer against write+fdatasync and Redis.

    pytest benches/bench_fsync.py --benchmark-enable     # pytest-benchmark rows
    openmatch-persistence bench fsync                    # the table, ratios, chart

The ratios of issue 3 (always at 1 thread >= 0.9x the raw loop; 16 threads
>= 8x one thread and >= 2x Redis at 16 clients; append_many of 10,000
Orders >= 500,000 ops/s) and of issue 15 (AsyncPersistence with 1,000
asyncio tasks >= 20x the raw loop and >= 1.5x Redis driven by 64 asyncio
clients; 64 tasks >= 10x the raw loop) are computed by the command, which
measures every case in one run; these rows are the same cases, sized to
keep ``pytest benches/`` within a couple of minutes.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openmatch_persistence import AofWriter, AsyncPersistence, _core, encode
from openmatch_persistence.bench.fsync import RAW_RECORD_SIZE
from openmatch_persistence.bench.redis_peer import (
    AsyncRespClient,
    RedisPeer,
    RespClient,
    resp_command,
)
from openmatch_persistence.bench.workload import order_ops
from openmatch_persistence.compaction import CompactionPolicy

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


@pytest.mark.parametrize("tasks", [1, 64, 1000])
def test_async_persistence_tasks_always(benchmark: Any, tmp_path: Path, tasks: int) -> None:
    """``AsyncPersistence.append`` from ``tasks`` asyncio tasks at once,
    ``fsync="always"``, the SQLite flusher running: one round is a burst of
    ``per_task`` appends per task, on a loop that lives for all rounds."""
    per_task = 200 if tasks == 1 else 20
    rounds = 5
    benchmark.extra_info["ops_per_call"] = per_task * tasks
    pools = [
        order_ops(per_task * (rounds + 1), first=(t + 1) << 40) for t in range(tasks)
    ]  # fresh orders: the journal refuses an id received twice
    loop = asyncio.new_event_loop()
    p = loop.run_until_complete(
        AsyncPersistence.open(tmp_path / "data", compaction=CompactionPolicy(None, None))
    )
    burst_no = iter(range(rounds + 1))

    async def burst(n: int) -> None:
        async def task(pool: list[Any]) -> None:
            for op in pool[n * per_task : (n + 1) * per_task]:
                await p.append(op)

        await asyncio.gather(*(task(pool) for pool in pools))

    try:
        benchmark.pedantic(
            lambda: loop.run_until_complete(burst(next(burst_no))),
            rounds=rounds,
            warmup_rounds=1,
        )
        benchmark.extra_info["records_per_fsync"] = p.stats()["writer"]["records_per_fsync"]
    finally:
        loop.run_until_complete(p.close())
        loop.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_appendfsync_always_64_asyncio_clients(benchmark: Any, tmp_path: Path) -> None:
    clients, per_client = 64, 20
    benchmark.extra_info["ops_per_call"] = clients * per_client
    command = resp_command(b"RPUSH", b"bench", encode(ORDER))
    loop = asyncio.new_event_loop()
    with RedisPeer(tmp_path) as peer:

        async def connect() -> list[AsyncRespClient]:
            return [await AsyncRespClient.connect(peer.port) for _ in range(clients)]

        conns = loop.run_until_complete(connect())

        async def burst() -> None:
            async def work(conn: AsyncRespClient) -> None:
                for _ in range(per_client):
                    await conn.call(command)

            await asyncio.gather(*(work(c) for c in conns))

        try:
            benchmark.pedantic(lambda: loop.run_until_complete(burst()), rounds=5)
        finally:

            async def close() -> None:
                for c in conns:
                    await c.close()

            loop.run_until_complete(close())
            loop.close()


if __name__ == "__main__":
    import sys

    from openmatch_persistence.cli import main

    sys.exit(main(["bench", "fsync", *sys.argv[1:]]))
