"""Flush throughput and lag of the PostgreSQL store.

1. Order rows per second through ``PostgresStore.write_changes`` (COPY into a
   temporary table, then INSERT ... ON CONFLICT DO UPDATE, one transaction
   per batch with its checkpoint), beside the ceiling measured in the same
   run on the same schema: a server-side
   ``INSERT ... SELECT FROM generate_series`` of the same number of rows
   (no client, no network, no conversion).
2. The flush lag (operation taken -> its transaction committed) at a steady
   rate of operations (default 10,000/s) through the background Flusher with
   its default 100 ms interval; p50/p99/max.

Run (not in CI):  python benches/bench_flush.py [--rows 200000] [--rate 10000]
Needs the release build (maturin develop --release) for honest numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from openmatch_persistence import (
    MarketPair,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    StateChanges,
)
from openmatch_persistence.flusher import Flusher
from openmatch_persistence.store import ChangeBatch, WriteResult
from openmatch_persistence.store.postgres import PostgresStore

DEFAULT_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARKET = MarketPair("BTC", "USDT")
NODE = bytes(range(32))


def order(i: int, *, oid: uuid.UUID | None = None, status: Any = OrderStatus.ACTIVE) -> Order:
    now = time.time_ns()
    return Order(
        id=oid or uuid.uuid4(), user_id=uuid.uuid4(), market=MARKET, side=OrderSide.BUY,
        order_type=OrderType.LIMIT, status=status, price=Decimal("50000.5"),
        quantity=Decimal("1.25"), remaining_qty=Decimal("1.25"), sr_id=uuid.uuid4(),
        epoch_id=i // 1000, origin_node=NODE, sequence=i, created_at=now, updated_at=now,
    )  # fmt: skip


_CEILING = """
INSERT INTO orders (id, user_id, market, side, order_type, status, price, quantity,
    remaining_qty, batch_id, sequence, origin_node, created_at, updated_at, sr_id, market_base,
    market_quote, price_scale, quantity_scale, remaining_qty_scale, created_at_ns, updated_at_ns)
SELECT gen_random_uuid(), gen_random_uuid(), 'BTC/USDT', 'BUY', 'LIMIT', 'ACTIVE', 50000.5, 1.25,
    1.25, i / 1000, i, %s, now(), now(), gen_random_uuid(), 'BTC', 'USDT', 1, 2, 2,
    1772228125123456789 + i, 1772228125123456789 + i
FROM generate_series(1, %s) AS i
"""


_TRUNCATE = "TRUNCATE orders, trades, orphan_trades, balances, epochs, persistence_checkpoint"


def throughput(url: str, schema: str, rows: int, batch: int) -> tuple[float, float]:
    store = PostgresStore(url, schema=schema)
    store.migrate()
    orders = [order(i) for i in range(rows)]
    with store.connection() as conn:
        conn.execute(_TRUNCATE)
        conn.execute("CHECKPOINT")
    start = time.perf_counter()
    for n, i in enumerate(range(0, rows, batch), start=1):
        store.write_changes(ChangeBatch(orders=orders[i : i + batch], position=n))
    flushed = rows / (time.perf_counter() - start)
    with store.connection() as conn:
        conn.execute(_TRUNCATE)
        conn.execute("CHECKPOINT")
        start = time.perf_counter()
        with conn.transaction():
            conn.execute(_CEILING, (NODE, rows))
        ceiling = rows / (time.perf_counter() - start)
        conn.execute(_TRUNCATE)
    store.close()
    return flushed, ceiling


@dataclass
class SteadySource:
    """New orders and updates of existing ones, the times they were made."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: dict[uuid.UUID, Order] = field(default_factory=dict)
    position: int = 0
    made: list[tuple[int, float]] = field(default_factory=list)

    def put(self, o: Order) -> None:
        with self.lock:
            self.changed[o.id] = o
            self.position += 1
            self.made.append((self.position, time.monotonic()))

    def take_changes_into(self, target: StateChanges) -> int:
        with self.lock:
            rows, self.changed = list(self.changed.values()), {}
            taken = StateChanges(rows, position=self.position)
            target.absorb(taken)
            return len(taken)


class TimedStore:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.commits: list[tuple[int, float]] = []

    def write_changes(self, batch: ChangeBatch) -> WriteResult:
        result = self.store.write_changes(batch)
        self.commits.append((batch.position, time.monotonic()))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def lag(url: str, schema: str, rate: int, seconds: float) -> tuple[float, float, float, int]:
    """The engine is simulated by a thread that hands prebuilt orders (half
    new, half updates of live ones) to the source at ``rate``: the cost of
    making Python objects is the engine's, not the flusher's."""
    store = PostgresStore(url, schema=schema)
    store.migrate()
    timed = TimedStore(store)
    source = SteadySource()
    flusher = Flusher(timed, source)
    total = int(rate * seconds)
    rng = random.Random(1)
    ops: list[Order] = []
    live: list[uuid.UUID] = []
    for i in range(total):
        if live and rng.random() < 0.5:
            ops.append(order(i, oid=rng.choice(live), status=OrderStatus.PARTIALLY_FILLED))
        else:
            ops.append(order(i))
            live.append(ops[-1].id)
    tick = 0.005
    flusher.start()
    start = time.monotonic()
    i = 0
    while i < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            source.put(ops[i])
            i += 1
        time.sleep(tick)
    flusher.stop()
    store.close()
    commits = timed.commits
    lags = []
    c = 0
    for position, t in source.made:
        while commits[c][0] < position:
            c += 1
        lags.append(commits[c][1] - t)
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    return statistics.median(lags), p99, lags[-1], len(lags)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with psycopg.connect(DEFAULT_URL) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"PostgreSQL {server} on localhost"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        print(f"machine: {machine()}")
        print("| rows/batch | flushed rows/s | ceiling rows/s | ratio (min..max) |")
        print("|---:|---:|---:|---:|")
        for batch in args.batch:
            runs = [throughput(args.database_url, schema, args.rows, batch)
                    for _ in range(args.repeat)]  # fmt: skip
            flushed = statistics.median(r[0] for r in runs)
            ceiling = statistics.median(r[1] for r in runs)
            # Each run measures both back to back; the median of the per-run
            # ratios is less exposed to the load of a shared machine.
            ratios = sorted(r[0] / r[1] for r in runs)
            print(
                f"| {batch:,} | {flushed:,.0f} | {ceiling:,.0f} | {statistics.median(ratios):.0%}"
                f" ({ratios[0]:.0%}..{ratios[-1]:.0%}) |"
            )
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"SET search_path = {schema}")
            conn.execute(_TRUNCATE)
        p50, p99, worst, n = lag(args.database_url, schema, args.rate, args.seconds)
        print(
            f"\nlag at {args.rate:,} ops/s for {args.seconds:g} s ({n:,} ops, 100 ms interval): "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
        )
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
