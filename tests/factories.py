"""Builders of engine values that several test modules share: small ids
that read well in assertions, and orders and trades around them."""

from __future__ import annotations

import uuid
from decimal import Decimal

from openmatch_persistence import MarketPair, Order, OrderSide, OrderStatus, OrderType, Trade

T0 = 1_700_000_000_000_000_000  # ns since 1970
MARKET = MarketPair("BTC", "USDT")


def oid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def tid(n: int) -> uuid.UUID:
    return uuid.UUID(int=(1 << 100) + n)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=(1 << 120) + n)


def order(n: int, qty: str, at: int = 0) -> Order:
    return Order(
        id=oid(n),
        user_id=uid(n),
        market=MARKET,
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        status=OrderStatus.ACTIVE,
        price=Decimal("100.5"),
        quantity=Decimal(qty),
        remaining_qty=Decimal(qty),
        sr_id=uuid.UUID(int=(1 << 110) + n),
        epoch_id=1,
        origin_node=b"\x07" * 32,
        sequence=n,
        created_at=T0 + at,
        updated_at=T0 + at,
    )


def trade(n: int, taker: int, maker: int, qty: str, epoch: int = 1, at: int = 0) -> Trade:
    return Trade(
        id=tid(n),
        epoch_id=epoch,
        market=MARKET,
        taker_order_id=oid(taker),
        taker_user_id=uid(taker),
        maker_order_id=oid(maker),
        maker_user_id=uid(maker),
        price=Decimal("100.5"),
        quantity=Decimal(qty),
        quote_amount=Decimal("0"),
        taker_side=OrderSide.BUY,
        matcher_node=b"\x09" * 32,
        executed_at=T0 + at,
    )
