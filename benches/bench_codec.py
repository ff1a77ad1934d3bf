"""Codec throughput: Order-heavy streams between Python objects and AOF bytes.

The Rust codec beside the pure-Python one in ``pure_python_codec.py`` (the same
format with only the standard library), measured in the same run.

    pytest benches/bench_codec.py --benchmark-enable     # pytest-benchmark rows
    python benches/bench_codec.py                        # the table with ratios

Targets: encode and decode >= 10x the pure-Python codec, like for like
(decode: every field built on both sides), and >= 500,000 ops/s each way on
one core (decode: the lazy objects, which build their UUID, Decimal and
datetime faces only when read; that row has no ratio target, being no
like-for-like comparison).
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
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


#: The fields of each decoded operation the pure-Python decoder builds.
OP_FIELDS = {
    om.OrderCancelled: ("order_id",),
    om.BalanceUpdated: ("user_id", "asset", "available", "frozen"),
}


def read_every_field(ops: Iterable[om.Operation]) -> int:
    """Reads every field of every operation once (what the pure-Python
    decoder builds): decoded objects make their UUID/Decimal/datetime faces
    on first read, so this is the like-for-like half of a decode. Returns
    the fields read."""
    touched = 0
    for op in ops:
        if isinstance(op, om.OrderReceived):
            order = op.order
            for field in ORDER_FIELDS:
                getattr(order, field)
            touched += len(ORDER_FIELDS)
        else:
            fields = OP_FIELDS[type(op)]
            for field in fields:
                getattr(op, field)
            touched += len(fields)
    return touched


def rust_decode_and_read_fields() -> int:
    return read_every_field(om.decode_all(FRAMES))


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


RUNS = 7  # each side of each row, alternating


def median_seconds(rust: Callable[[], object], pure: Callable[[], object]) -> tuple[float, float]:
    """The median of RUNS timed runs of each, interleaved (so that a burst of
    load on the shared machine hits both sides alike), after one warm-up."""
    rust(), pure()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(RUNS):
        for fn, out in ((rust, times[0]), (pure, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    n = len(STREAM)
    # (row, Rust side, pure side, target ratio): the headline decode row is
    # like for like, every field built on both sides; the lazy row is
    # Rust's decode alone, whose UUID/Decimal/datetime faces are built only
    # when read.
    rows = [
        ("encode: objects -> bytes", rust_encode, pure_encode, 10, 500_000),
        (
            "decode, every field built (like for like)",
            rust_decode_and_read_fields,
            pure_decode,
            10,
            None,
        ),
        (
            "decode, lazy: fields built when read (not like for like)",
            rust_decode,
            pure_decode,
            None,
            500_000,
        ),
    ]
    print(f"{n:,} operations ({len(FRAMES) / n:.0f} bytes each, 90% OrderReceived),")
    print(f"median of {RUNS} interleaved runs per side")
    print(f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"at {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| row | Rust ops/s | pure Python ops/s | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for name, rust_fn, pure_fn, ratio_need, rate_need in rows:
        rust, slow = median_seconds(rust_fn, pure_fn)
        ratio = slow / rust
        targets = []
        if ratio_need is not None:
            targets.append(f">= {ratio_need}x: {'met' if ratio >= ratio_need else 'MISSED'}")
        if rate_need is not None:
            targets.append(f">= {rate_need:,}/s: {'met' if n / rust >= rate_need else 'MISSED'}")
        print(
            f"| {name} | {n / rust:,.0f} | {n / slow:,.0f} | {ratio:.1f}x | {'; '.join(targets)} |"
        )


if __name__ == "__main__":
    main()
