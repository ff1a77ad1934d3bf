"""The engine's values as database columns and back, shared by the stores.

Enums are stored by their display names (``BUY``, ``LIMIT``,
``PENDING_ESCROW``, ``COLLECT``), decimals with their original scale,
timestamps with their exact nanoseconds.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from typing import Any, TypeVar

from openmatch_persistence import _core
from openmatch_persistence.errors import StoreError

E = TypeVar("E")


def _names(cls: Any, names: tuple[str, ...]) -> tuple[dict[Any, str], dict[str, Any]]:
    to_name = {getattr(cls, n): n for n in names}
    return to_name, {n: v for v, n in to_name.items()}


SIDE_NAME, SIDE = _names(_core.OrderSide, ("BUY", "SELL"))
TYPE_NAME, ORDER_TYPE = _names(_core.OrderType, ("LIMIT", "MARKET", "CANCEL"))
STATUS_NAME, STATUS = _names(
    _core.OrderStatus,
    (
        "PENDING_ESCROW",
        "ACTIVE",
        "PARTIALLY_FILLED",
        "FILLED",
        "CANCELLED",
        "REJECTED",
        "EXPIRED",
    ),
)
PHASE_NAME, PHASE = _names(_core.EpochPhase, ("COLLECT", "SEAL", "MATCH", "FINALIZE"))


def from_name(table: dict[str, E], value: str, what: str) -> E:
    try:
        return table[value]
    except KeyError:
        raise StoreError(f"{what}: unknown value {value!r} in the database") from None


def scale_of(value: decimal.Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def with_scale(value: decimal.Decimal, scale: int | None) -> decimal.Decimal:
    """A NUMERIC(28,8) read back (always 8 places) at its original scale.
    Exact: the stored value had ``scale`` places, the rest are zeros."""
    if scale is None:
        return value
    result = value.quantize(decimal.Decimal(1).scaleb(-scale))
    if result != value:
        raise StoreError(f"stored decimal {value} does not have scale {scale}")
    return result


# --- timestamps as RFC 3339 text (SQLite) -------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    # The rows of one flush share few distinct seconds: cached, formatting
    # a timestamp is a dict look-up and an f-string (it was a tenth of a
    # flush's time).
    return f"{_EPOCH + datetime.timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}"


def ns_to_text(ns: int) -> str:
    """``2026-02-27T21:35:25.123456789Z``: always 9 digits, so the text sorts
    in time order."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{nanos:09d}Z"


def text_to_ns(text: str) -> int:
    """The nanoseconds of an RFC 3339 UTC text (0 to 9 fractional digits)."""
    if not text.endswith("Z"):
        raise StoreError(f"timestamp {text!r} is not RFC 3339 UTC text")
    body = text[:-1]
    whole, _, fraction = body.partition(".")
    if len(fraction) > 9 or not (fraction.isdigit() or fraction == ""):
        raise StoreError(f"timestamp {text!r} has an unreadable fraction")
    dt = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc
    )
    delta = dt - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or "0")


# --- rebuilding the engine's objects -----------------------------------------


def _market(symbol: str, base: str | None, quote: str | None) -> _core.MarketPair:
    if base is None or quote is None:
        # A row written without the split columns: the symbol is the only
        # source, and it splits unambiguously only with exactly one '/'.
        if symbol.count("/") != 1:
            raise StoreError(f"market {symbol!r}: cannot split into base/quote")
        base, quote = symbol.split("/")
    return _core.MarketPair(base, quote)


def _require(value: E | None, what: str) -> E:
    if value is None:
        raise StoreError(f"{what} is NULL: the row was not written by this store")
    return value


def order_from_row(r: dict[str, Any]) -> _core.Order:
    oid = r["id"]
    what = f"orders row {oid}"
    return _core.Order(
        id=oid,
        user_id=r["user_id"],
        market=_market(r["market"], r["market_base"], r["market_quote"]),
        side=from_name(SIDE, r["side"], f"{what}: side"),
        order_type=from_name(ORDER_TYPE, r["order_type"], f"{what}: order_type"),
        status=from_name(STATUS, r["status"], f"{what}: status"),
        price=None if r["price"] is None else with_scale(r["price"], r["price_scale"]),
        quantity=with_scale(r["quantity"], r["quantity_scale"]),
        remaining_qty=with_scale(r["remaining_qty"], r["remaining_qty_scale"]),
        sr_id=_require(r["sr_id"], f"{what}: sr_id"),
        epoch_id=r["batch_id"],
        origin_node=bytes(r["origin_node"]),
        sequence=r["sequence"],
        created_at=_require(r["created_at_ns"], f"{what}: created_at_ns"),
        updated_at=_require(r["updated_at_ns"], f"{what}: updated_at_ns"),
    )


def trade_from_row(r: dict[str, Any]) -> _core.Trade:
    what = f"trades row {r['id']}"
    return _core.Trade(
        id=r["id"],
        epoch_id=r["batch_id"],
        market=_market(r["market"], r["market_base"], r["market_quote"]),
        taker_order_id=r["taker_order_id"],
        taker_user_id=r["taker_user_id"],
        maker_order_id=r["maker_order_id"],
        maker_user_id=r["maker_user_id"],
        price=with_scale(r["price"], r["price_scale"]),
        quantity=with_scale(r["quantity"], r["quantity_scale"]),
        quote_amount=with_scale(r["quote_amount"], r["quote_amount_scale"]),
        taker_side=from_name(SIDE, r["taker_side"], f"{what}: taker_side"),
        matcher_node=bytes(r["matcher_node"]),
        executed_at=_require(r["executed_at_ns"], f"{what}: executed_at_ns"),
    )


def make_balance(
    user_id: uuid.UUID, asset: str, available: decimal.Decimal, frozen: decimal.Decimal
) -> _core.Balance:
    return _core.Balance(user_id, asset, available, frozen)


def make_epoch(
    epoch_id: int,
    phase: Any,
    batch_hash: bytes | None,
    result_hash: bytes | None,
    trade_count: int,
    started_at_ns: int,
    completed_at_ns: int | None,
) -> _core.Epoch:
    return _core.Epoch(
        epoch_id=epoch_id,
        phase=phase,
        started_at=started_at_ns,
        batch_hash=batch_hash,
        result_hash=result_hash,
        trade_count=trade_count,
        completed_at=completed_at_ns,
    )
