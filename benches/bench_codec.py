"""Codec throughput: Order-heavy streams between Python objects and AOF bytes.

The Rust codec beside the pure-Python one in ``pure_python_codec.py`` (the same
format with only the standard library), measured in the same run.

    pytest benches/bench_codec.py --benchmark-enable     # pytest-benchmark rows
    python benches/bench_codec.py                        # the table with ratios

Targets (issue 2): decode >= 20x and encode >= 10x the pure-Python codec, and
>= 500,000 Order ops/s each way on one core.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pure_python_codec as pure
import pytest

import openmatch_persistence as om

STREAM_OPS = 20_000


def order_stream(n: int = STREAM_OPS, seed: int = 1) -> list[om.Operation]:
    """n operations, nine in ten of them OrderReceived, the rest cancels and
    balance updates, with distinct ids and realistic values."""
    base = 1_772_228_125_000_000_000
    ops: list[om.Operation] = []
    for i in range(n):
        oid = uuid.UUID(int=(seed << 64) | i)
        if i % 10 == 9:
            ops.append(om.OrderCancelled(uuid.UUID(int=(seed << 64) | (i - 1))))
        elif i % 20 == 4:
            ops.append(om.BalanceUpdated(oid, "USDT", Decimal(f"{i}.25"), Decimal("0")))
        else:
            qty = Decimal(f"{1 + i % 50}.{i % 1000:03d}")
            ops.append(
                om.OrderReceived(
                    om.Order(
                        id=oid,
                        user_id=uuid.UUID(int=i % 997),
                        market=om.MarketPair("BTC", "USDT"),
                        side=om.OrderSide.BUY if i % 2 else om.OrderSide.SELL,
                        order_type=om.OrderType.LIMIT,
                        status=om.OrderStatus.ACTIVE,
                        price=Decimal(f"{50_000 + i % 500}.{i % 100:02d}"),
                        quantity=qty,
                        remaining_qty=qty,
                        sr_id=uuid.UUID(int=(7 << 64) | i),
                        epoch_id=i // 1000,
                        origin_node=bytes(32),
                        sequence=i,
                        created_at=base + i * 1_000_123,
                        updated_at=base + i * 1_000_123,
                    )
                )
            )
    return ops


STREAM = order_stream()
FRAMES = om.encode_many(STREAM)
PURE_OPS = pure.decode_frames(FRAMES)


def test_the_two_codecs_agree() -> None:
    assert b"".join(pure.encode_frame(op) for op in PURE_OPS) == FRAMES


def rust_encode() -> bytes:
    return om.encode_many(STREAM)


def rust_decode() -> list[om.Operation]:
    return om.decode_all(FRAMES)


ORDER_FIELDS = [
    "id",
    "user_id",
    "market",
    "side",
    "order_type",
    "status",
    "price",
    "quantity",
    "remaining_qty",
    "sr_id",
    "epoch_id",
    "origin_node",
    "sequence",
    "created_at",
    "updated_at",
]


def rust_decode_and_read_fields() -> int:
    """Decoded objects make their UUID/Decimal/datetime faces on first read;
    this reads every one, to compare like with like against pure Python."""
    touched = 0
    for op in om.decode_all(FRAMES):
        if isinstance(op, om.OrderReceived):
            order = op.order
            for field in ORDER_FIELDS:
                getattr(order, field)
                touched += 1
    return touched


def pure_encode() -> bytes:
    return b"".join([pure.encode_frame(op) for op in PURE_OPS])


def pure_decode() -> list[Any]:
    return pure.decode_frames(FRAMES)


@pytest.mark.parametrize(
    "fn",
    [rust_encode, rust_decode, rust_decode_and_read_fields, pure_encode, pure_decode],
    ids=lambda f: f.__name__,
)
def test_codec(benchmark: Any, fn: Callable[[], object]) -> None:
    benchmark(fn)


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    n = len(STREAM)
    rows = {
        "encode: objects -> bytes": (best_seconds(rust_encode, 15), best_seconds(pure_encode, 3)),
        "decode: bytes -> objects": (best_seconds(rust_decode, 15), best_seconds(pure_decode, 3)),
    }
    pure_decode_s = best_seconds(pure_decode, 3)
    rows["decode + read every field"] = (
        best_seconds(rust_decode_and_read_fields, 5),
        pure_decode_s,
    )
    print(f"{n:,} operations ({len(FRAMES) / n:.0f} bytes each, 90% OrderReceived), best of runs")
    print(f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"at {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| direction | Rust ops/s | pure Python ops/s | ratio | targets |")
    print("|---|---:|---:|---:|---|")
    for (name, (rust, slow)), need in zip(rows.items(), (10, 20, None)):
        ratio = slow / rust
        if need is None:
            target = "(no target: shown for a like-for-like comparison)"
        else:
            ok = "met" if ratio >= need and n / rust >= 500_000 else "MISSED"
            target = f">= {need}x and >= 500,000/s: {ok}"
        print(f"| {name} | {n / rust:,.0f} | {n / slow:,.0f} | {ratio:.1f}x | {target} |")


if __name__ == "__main__":
    main()
