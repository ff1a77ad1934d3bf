"""Operations to append in benchmarks and tests: realistic Orders."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

from openmatch_persistence._core import (
    MarketPair,
    Order,
    OrderReceived,
    OrderSide,
    OrderStatus,
    OrderType,
)

_MARKET = MarketPair("BTC", "USDT")
_EPOCH = datetime.datetime(2026, 2, 27, 21, 35, 25, 123456, tzinfo=datetime.timezone.utc)
_NODE = bytes(range(32))


def sample_order(sequence: int) -> Order:
    """A limit order as the engine writes them (about 400 bytes encoded);
    ids derive from ``sequence`` so that runs are reproducible."""
    at = _EPOCH + datetime.timedelta(microseconds=sequence)
    return Order(
        id=uuid.UUID(int=(1 << 64) | sequence),
        user_id=uuid.UUID(int=(2 << 64) | (sequence % 1000)),
        market=_MARKET,
        side=OrderSide.BUY if sequence % 2 else OrderSide.SELL,
        order_type=OrderType.LIMIT,
        status=OrderStatus.ACTIVE,
        price=Decimal("50000.5") + sequence % 100,
        quantity=Decimal("1.25"),
        remaining_qty=Decimal("1.25"),
        sr_id=uuid.UUID(int=(3 << 64) | sequence),
        epoch_id=None,
        origin_node=_NODE,
        sequence=sequence,
        created_at=at,
        updated_at=at,
    )


def order_ops(count: int, first: int = 0) -> list[OrderReceived]:
    """``count`` OrderReceived operations, sequences ``first`` onwards."""
    return [OrderReceived(sample_order(first + i)) for i in range(count)]
