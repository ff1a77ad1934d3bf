"""The SQLite rows built in Rust (``_core.sqlite_order_rows``) hold exactly
the texts and numbers the store's readers expect (``store/rows.py``): for any
order or trade, each column is what the Python formats give."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.errors import InvalidTypeError
from openmatch_persistence.store.rows import SIDE_NAME, STATUS_NAME, TYPE_NAME, ns_to_text, scale_of

from strategies import orders, trades


def _text(d: Any) -> str | None:
    return None if d is None else format(d, "f")


@given(orders)
def test_an_order_row_has_the_python_formats(o: om.Order) -> None:
    (row,) = _core.sqlite_order_rows(_core.StateChanges([o]))
    r = dict(zip(_core.SQLITE_ORDER_COLUMNS, row, strict=True))
    assert r == {
        "id": str(o.id),
        "user_id": str(o.user_id),
        "market": o.market.symbol,
        "side": SIDE_NAME[o.side],
        "order_type": TYPE_NAME[o.order_type],
        "status": STATUS_NAME[o.status],
        "price": _text(o.price),
        "quantity": _text(o.quantity),
        "remaining_qty": _text(o.remaining_qty),
        "batch_id": o.epoch_id,
        "sequence": o.sequence,
        "origin_node": o.origin_node,
        "created_at": ns_to_text(o.created_at_ns),
        "updated_at": ns_to_text(o.updated_at_ns),
        "sr_id": str(o.sr_id),
        "market_base": o.market.base,
        "market_quote": o.market.quote,
        "price_scale": None if o.price is None else scale_of(o.price),
        "quantity_scale": scale_of(o.quantity),
        "remaining_qty_scale": scale_of(o.remaining_qty),
        "created_at_ns": o.created_at_ns,
        "updated_at_ns": o.updated_at_ns,
    }


@given(trades)
def test_a_trade_row_has_the_python_formats(t: om.Trade) -> None:
    (row,) = _core.sqlite_trade_rows(_core.StateChanges(trades=[t]))
    r = dict(zip(_core.SQLITE_TRADE_COLUMNS, row, strict=True))
    assert r == {
        "id": str(t.id),
        "batch_id": t.epoch_id,
        "market": t.market.symbol,
        "taker_order_id": str(t.taker_order_id),
        "maker_order_id": str(t.maker_order_id),
        "taker_user_id": str(t.taker_user_id),
        "maker_user_id": str(t.maker_user_id),
        "price": _text(t.price),
        "quantity": _text(t.quantity),
        "quote_amount": _text(t.quote_amount),
        "taker_side": SIDE_NAME[t.taker_side],
        "matcher_node": t.matcher_node,
        "executed_at": ns_to_text(t.executed_at_ns),
        "market_base": t.market.base,
        "market_quote": t.market.quote,
        "price_scale": scale_of(t.price),
        "quantity_scale": scale_of(t.quantity),
        "quote_amount_scale": scale_of(t.quote_amount),
        "executed_at_ns": t.executed_at_ns,
    }


def test_a_wrong_item_is_a_typed_error() -> None:
    with pytest.raises(InvalidTypeError, match=r"orders\[0\]: expected Order"):
        _core.StateChanges(["nope"])  # type: ignore[list-item]
