"""Reading the golden fixtures' JSON independently of the package's own JSON
decoder: plain ``json`` plus the stdlib's UUID, Decimal and datetime, so that
the tests compare the Rust decoder against a second implementation."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import openmatch_persistence as om

FIXTURES = Path(__file__).parent / "fixtures"

SIDES = {"Buy": om.OrderSide.BUY, "Sell": om.OrderSide.SELL}
TYPES = {"Limit": om.OrderType.LIMIT, "Market": om.OrderType.MARKET, "Cancel": om.OrderType.CANCEL}
STATUSES = {
    "PendingEscrow": om.OrderStatus.PENDING_ESCROW,
    "Active": om.OrderStatus.ACTIVE,
    "PartiallyFilled": om.OrderStatus.PARTIALLY_FILLED,
    "Filled": om.OrderStatus.FILLED,
    "Cancelled": om.OrderStatus.CANCELLED,
    "Rejected": om.OrderStatus.REJECTED,
    "Expired": om.OrderStatus.EXPIRED,
}
PHASES = {
    "Collect": om.EpochPhase.COLLECT,
    "Seal": om.EpochPhase.SEAL,
    "Match": om.EpochPhase.MATCH,
    "Finalize": om.EpochPhase.FINALIZE,
}


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since 1970 of an RFC 3339 UTC text with 0-9 fraction digits."""
    assert text.endswith("Z"), text
    whole, _, fraction = text[:-1].partition(".")
    seconds = calendar.timegm(dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").timetuple())
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or "0")


def ns_datetime(ns: int) -> dt.datetime:
    """The datetime (microseconds, floored) of nanoseconds since 1970."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return epoch + dt.timedelta(microseconds=ns // 1000)


def golden_lines() -> list[str]:
    return (FIXTURES / "golden.jsonl").read_text(encoding="utf-8").splitlines()


def _order(o: dict[str, Any]) -> om.Order:
    return om.Order(
        id=uuid.UUID(o["id"]),
        user_id=uuid.UUID(o["user_id"]),
        market=om.MarketPair(o["market"]["base"], o["market"]["quote"]),
        side=SIDES[o["side"]],
        order_type=TYPES[o["order_type"]],
        status=STATUSES[o["status"]],
        price=None if o["price"] is None else Decimal(o["price"]),
        quantity=Decimal(o["quantity"]),
        remaining_qty=Decimal(o["remaining_qty"]),
        sr_id=uuid.UUID(o["sr_id"]),
        epoch_id=o["epoch_id"],
        origin_node=bytes(o["origin_node"]),
        sequence=o["sequence"],
        created_at=rfc3339_ns(o["created_at"]),
        updated_at=rfc3339_ns(o["updated_at"]),
    )


def _trade(t: dict[str, Any]) -> om.Trade:
    return om.Trade(
        id=uuid.UUID(t["id"]),
        epoch_id=t["epoch_id"],
        market=om.MarketPair(t["market"]["base"], t["market"]["quote"]),
        taker_order_id=uuid.UUID(t["taker_order_id"]),
        taker_user_id=uuid.UUID(t["taker_user_id"]),
        maker_order_id=uuid.UUID(t["maker_order_id"]),
        maker_user_id=uuid.UUID(t["maker_user_id"]),
        price=Decimal(t["price"]),
        quantity=Decimal(t["quantity"]),
        quote_amount=Decimal(t["quote_amount"]),
        taker_side=SIDES[t["taker_side"]],
        matcher_node=bytes(t["matcher_node"]),
        executed_at=rfc3339_ns(t["executed_at"]),
    )


def build_op(value: dict[str, Any]) -> om.Operation:
    """The operation of a JSON value, built through the Python constructors."""
    ((kind, body),) = value.items()
    if kind == "OrderReceived":
        return om.OrderReceived(_order(body))
    if kind == "OrderCancelled":
        return om.OrderCancelled(uuid.UUID(body))
    if kind == "BufferSealed":
        return om.BufferSealed(body[0], bytes(body[1]))
    if kind == "TradeExecuted":
        return om.TradeExecuted(_trade(body))
    if kind == "BalanceUpdated":
        return om.BalanceUpdated(uuid.UUID(body[0]), body[1], Decimal(body[2]), Decimal(body[3]))
    if kind == "EpochAdvanced":
        return om.EpochAdvanced(body[0], PHASES[body[1]])
    raise AssertionError(f"unknown kind {kind}")


def golden_ops_from_python() -> list[om.Operation]:
    return [build_op(json.loads(line)) for line in golden_lines()]
