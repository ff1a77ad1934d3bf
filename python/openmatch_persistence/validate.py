"""Refuses, before the AOF append, values that the database store cannot
hold exactly: a decimal past NUMERIC(28,8), text past a VARCHAR of the
schema, an integer past BIGINT, a timestamp past BIGINT nanoseconds.

An operation that passed here is stored and read back unchanged; one that
did not is never appended, so the AOF and the database cannot disagree.
"""

from __future__ import annotations

import decimal
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.errors import InvalidValueError

#: NUMERIC(28,8): at most 8 places and 20 integer digits.
NUMERIC_SCALE = 8
NUMERIC_INTEGER_DIGITS = 20
_NUMERIC_LIMIT = decimal.Decimal(10) ** NUMERIC_INTEGER_DIGITS

#: VARCHAR lengths of the engine schema (characters).
MARKET_LEN = 20
ASSET_LEN = 10

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
INT_MAX = 2**31 - 1


def check_decimal(value: decimal.Decimal, field: str) -> None:
    """Raises :class:`InvalidValueError` unless ``value`` fits NUMERIC(28,8)
    exactly (it would otherwise be rounded or refused by the database)."""
    if not value.is_finite():
        raise InvalidValueError(f"{field}: {value} is not a finite number")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > NUMERIC_SCALE:
        raise InvalidValueError(
            f"{field}: {value:f} has {-exponent} decimal places; the store's NUMERIC(28,8) "
            f"holds {NUMERIC_SCALE} (refused, not rounded)"
        )
    if abs(value) >= _NUMERIC_LIMIT:
        raise InvalidValueError(
            f"{field}: {value:f} has more than {NUMERIC_INTEGER_DIGITS} integer digits; "
            "the store's NUMERIC(28,8) cannot hold it"
        )


def check_text(value: str, limit: int | None, field: str) -> None:
    if limit is not None and len(value) > limit:
        raise InvalidValueError(
            f"{field}: {value!r} is {len(value)} characters; the store's VARCHAR({limit}) "
            f"holds at most {limit} (refused, not truncated)"
        )
    if "\x00" in value:
        raise InvalidValueError(f"{field}: {value!r} contains a NUL character (PostgreSQL text)")


def check_bigint(value: int, field: str) -> None:
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise InvalidValueError(f"{field}: {value} does not fit the store's BIGINT")


def check_timestamp_ns(value: int, field: str) -> None:
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise InvalidValueError(
            f"{field}: {value} ns since 1970 is outside the store's BIGINT nanoseconds "
            "(years 1677..2262)"
        )


def check_market(market: _core.MarketPair, field: str) -> None:
    check_text(market.symbol, MARKET_LEN, field)


def check_order(order: Any, where: str = "order") -> None:
    where = f"{where} {order.id}"
    check_market(order.market, f"{where}: market")
    if order.price is not None:
        check_decimal(order.price, f"{where}: price")
    check_decimal(order.quantity, f"{where}: quantity")
    check_decimal(order.remaining_qty, f"{where}: remaining_qty")
    if order.epoch_id is not None:
        check_bigint(order.epoch_id, f"{where}: epoch_id (batch_id)")
    check_bigint(order.sequence, f"{where}: sequence")
    check_timestamp_ns(order.created_at_ns, f"{where}: created_at")
    check_timestamp_ns(order.updated_at_ns, f"{where}: updated_at")


def check_trade(trade: Any, where: str = "trade") -> None:
    where = f"{where} {trade.id}"
    check_market(trade.market, f"{where}: market")
    check_bigint(trade.epoch_id, f"{where}: epoch_id (batch_id)")
    check_decimal(trade.price, f"{where}: price")
    check_decimal(trade.quantity, f"{where}: quantity")
    check_decimal(trade.quote_amount, f"{where}: quote_amount")
    check_timestamp_ns(trade.executed_at_ns, f"{where}: executed_at")


def check_balance(user_id: Any, asset: str, available: Any, frozen: Any, where: str) -> None:
    where = f"{where} {user_id}/{asset}"
    check_text(asset, ASSET_LEN, f"{where}: asset")
    check_decimal(available, f"{where}: available")
    check_decimal(frozen, f"{where}: frozen")


def validate_for_store(op: _core.Operation) -> None:
    """Raises :class:`InvalidValueError`, naming the field and the value, if
    any value of ``op`` does not fit the database schema exactly. Call it
    before appending ``op`` to the AOF."""
    if isinstance(op, _core.OrderReceived):
        check_order(op.order, "OrderReceived: order")
    elif isinstance(op, _core.TradeExecuted):
        check_trade(op.trade, "TradeExecuted: trade")
    elif isinstance(op, _core.BalanceUpdated):
        check_balance(op.user_id, op.asset, op.available, op.frozen, "BalanceUpdated: balance")
    elif isinstance(op, _core.BufferSealed):
        check_bigint(op.batch_id, "BufferSealed: batch_id")
    elif isinstance(op, _core.EpochAdvanced):
        check_bigint(op.epoch_id, "EpochAdvanced: epoch_id")
    elif isinstance(op, _core.OrderCancelled):
        pass
    else:
        raise InvalidValueError(f"not an operation: {type(op).__name__}")


__all__ = ["validate_for_store"]
