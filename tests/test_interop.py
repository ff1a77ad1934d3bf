"""Interop with AOF files written by Rust (tests/fixtures/golden.*, written by
``cargo run -p openmatch-aof --example write_golden -- tests/fixtures``)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

import openmatch_persistence as om

from golden import (
    FIXTURES,
    PHASES,
    SIDES,
    STATUSES,
    TYPES,
    golden_lines,
    golden_ops_from_python,
    ns_datetime,
    rfc3339_ns,
)

GOLDEN = (FIXTURES / "golden.aof").read_bytes()


def frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "little")
        out.append(data[pos : pos + 8 + length])
        pos += 8 + length
    return out


def test_every_variant_is_covered() -> None:
    kinds = {op.kind for op in om.decode_all(GOLDEN)}
    assert kinds == {
        "OrderReceived",
        "OrderCancelled",
        "BufferSealed",
        "TradeExecuted",
        "BalanceUpdated",
        "EpochAdvanced",
    }


@pytest.mark.parametrize("index", range(len(golden_lines())))
def test_rust_frame_decodes_reencodes_and_prints_as_serde_json(index: int) -> None:
    frame = frames(GOLDEN)[index]
    line = golden_lines()[index]
    op = om.decode(frame)
    assert om.encode(op) == frame
    assert om.to_json(op) == line
    assert om.encode(om.from_json(line)) == frame


def assert_order(order: om.Order, o: dict[str, Any]) -> None:
    assert order.id == uuid.UUID(o["id"])
    assert order.user_id == uuid.UUID(o["user_id"])
    assert (order.market.base, order.market.quote) == (o["market"]["base"], o["market"]["quote"])
    assert order.market.symbol == f"{o['market']['base']}/{o['market']['quote']}"
    assert order.side is SIDES[o["side"]]
    assert order.order_type is TYPES[o["order_type"]]
    assert order.status is STATUSES[o["status"]]
    if o["price"] is None:
        assert order.price is None
    else:
        assert str(order.price) == str(Decimal(o["price"]))
    assert str(order.quantity) == str(Decimal(o["quantity"]))
    assert str(order.remaining_qty) == str(Decimal(o["remaining_qty"]))
    assert order.sr_id == uuid.UUID(o["sr_id"])
    assert order.epoch_id == o["epoch_id"]
    assert order.origin_node == bytes(o["origin_node"])
    assert order.sequence == o["sequence"]
    assert order.created_at_ns == rfc3339_ns(o["created_at"])
    assert order.updated_at_ns == rfc3339_ns(o["updated_at"])
    assert order.created_at == ns_datetime(rfc3339_ns(o["created_at"]))
    assert order.updated_at == ns_datetime(rfc3339_ns(o["updated_at"]))
    assert order.created_at.tzinfo is not None


def assert_trade(trade: om.Trade, t: dict[str, Any]) -> None:
    assert trade.id == uuid.UUID(t["id"])
    assert trade.epoch_id == t["epoch_id"]
    assert trade.market.symbol == f"{t['market']['base']}/{t['market']['quote']}"
    for field in ("taker_order_id", "taker_user_id", "maker_order_id", "maker_user_id"):
        assert getattr(trade, field) == uuid.UUID(t[field]), field
    for field in ("price", "quantity", "quote_amount"):
        assert str(getattr(trade, field)) == str(Decimal(t[field])), field
    assert trade.taker_side is SIDES[t["taker_side"]]
    assert trade.matcher_node == bytes(t["matcher_node"])
    assert trade.executed_at_ns == rfc3339_ns(t["executed_at"])
    assert trade.executed_at == ns_datetime(rfc3339_ns(t["executed_at"]))


@pytest.mark.parametrize("index", range(len(golden_lines())))
def test_every_field_matches_the_rust_json(index: int) -> None:
    op = om.decode(frames(GOLDEN)[index])
    ((kind, body),) = json.loads(golden_lines()[index]).items()
    assert op.kind == kind
    if isinstance(op, om.OrderReceived):
        assert_order(op.order, body)
    elif isinstance(op, om.OrderCancelled):
        assert op.order_id == uuid.UUID(body)
    elif isinstance(op, om.BufferSealed):
        assert (op.batch_id, op.batch_hash) == (body[0], bytes(body[1]))
    elif isinstance(op, om.TradeExecuted):
        assert_trade(op.trade, body)
    elif isinstance(op, om.BalanceUpdated):
        assert op.user_id == uuid.UUID(body[0])
        assert op.asset == body[1]
        assert str(op.available) == str(Decimal(body[2]))
        assert str(op.frozen) == str(Decimal(body[3]))
    else:
        assert isinstance(op, om.EpochAdvanced)
        assert (op.epoch_id, op.phase) == (body[0], PHASES[body[1]])


def test_edges_spelled_out() -> None:
    ops = om.decode_all(GOLDEN)
    third = ops[2]
    assert isinstance(third, om.OrderReceived)
    assert third.order.created_at_ns == 1_772_228_125_123_456_789
    assert third.order.price == Decimal("1E-28")
    assert str(third.order.price) == "1E-28"
    assert third.order.remaining_qty == Decimal("-0.5")
    assert third.order.epoch_id == 0
    assert third.order.sequence == 2**64 - 1
    fourth = ops[3]
    assert isinstance(fourth, om.OrderReceived)
    assert fourth.order.price == Decimal(2**96 - 1)
    assert fourth.order.quantity == Decimal(-(2**96 - 1))
    assert fourth.order.updated_at_ns == -1
    fifth = ops[4]
    assert isinstance(fifth, om.OrderReceived)
    assert fifth.order.market.symbol == "ÉTH₿/日本円"
    assert str(fifth.order.remaining_qty) == "0.00"
    second = ops[1]
    assert isinstance(second, om.OrderReceived)
    assert second.order.price is None and second.order.epoch_id is None


def test_python_built_operations_encode_to_the_rust_bytes() -> None:
    built = golden_ops_from_python()
    assert om.encode_many(built) == GOLDEN
    assert built == om.decode_all(GOLDEN)


def test_checked_in_python_written_file_is_current() -> None:
    # rust/openmatch-aof/tests/interop.rs reads this file; it must be what the
    # package writes today (regenerate: python tests/fixtures/make_python_written.py).
    assert (FIXTURES / "python_written.aof").read_bytes() == om.encode_many(
        golden_ops_from_python()
    )


@pytest.mark.parametrize("zero", ["-0", "-0.00"])
def test_negative_zero_keeps_its_sign_bytes_and_json(zero: str) -> None:
    # The engine writes -Decimal::ZERO as "-0"; reading must not turn it into "0".
    line = f'{{"BalanceUpdated":["{uuid.UUID(int=7)}","BTC","{zero}","1"]}}'
    frame = om.encode(om.from_json(line))
    assert zero.encode() in frame
    op = om.decode(frame)
    assert isinstance(op, om.BalanceUpdated)
    assert str(op.available) == zero and op.available.is_signed()
    assert om.encode(op) == frame
    assert om.to_json(op) == line
    rebuilt = om.BalanceUpdated(op.user_id, op.asset, Decimal(zero), op.frozen)
    assert om.encode(rebuilt) == frame
