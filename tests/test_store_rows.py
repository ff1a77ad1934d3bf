"""The SQLite rows built in Rust (``_core.sqlite_order_json``, read by one
``INSERT ... SELECT`` over ``json_each``) hold exactly the texts and numbers
the store's readers expect (``store/rows.py``): for any order or trade, each
stored column is what the Python formats give."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from test_store_support import make_order

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.errors import InvalidTypeError, InvalidValueError
from openmatch_persistence.store.base import ChangeBatch
from openmatch_persistence.store.rows import SIDE_NAME, STATUS_NAME, TYPE_NAME, ns_to_text, scale_of
from openmatch_persistence.store.sqlite import SqliteStore

from strategies import decimals, orders, texts, trades, uuids


def _text(d: Any) -> str | None:
    return None if d is None else format(d, "f")


def _stored(batch: ChangeBatch, table: str, refused: bool) -> list[dict[str, Any]] | None:
    """What the SQLite store keeps of ``batch`` in ``table``, column by
    column; None when it refused the batch (``refused``: a value the journal
    refuses at append, which SQLite's JSON rows cannot carry), having
    written nothing."""
    with SqliteStore(":memory:") as store:
        store.migrate()
        if refused:
            with pytest.raises(
                InvalidValueError, match=r"NUL character|does not fit the store's BIGINT"
            ):
                store.write_changes(batch)
            assert store.checkpoint() is None and store.execute(f"SELECT * FROM {table}") == []
            return None
        store.write_changes(batch)
        return [dict(r) for r in store.execute(f"SELECT * FROM {table} ORDER BY 1")]


def _unstorable(market: om.MarketPair, *ids: int | None) -> bool:
    """A NUL in a market's text, or an id past the store's BIGINT."""
    return "\x00" in market.symbol or any(n is not None and n >= 1 << 63 for n in ids)


@settings(deadline=None)  # a database is made and migrated per example
@given(orders)
def test_an_order_row_has_the_python_formats(o: om.Order) -> None:
    refused = _unstorable(o.market, o.epoch_id, o.sequence)
    stored = _stored(ChangeBatch([o], position=1), "orders", refused)
    if stored is None:
        return
    (r,) = stored
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


@settings(deadline=None)  # a database is made and migrated per example
@given(trades)
def test_a_trade_row_has_the_python_formats(t: om.Trade) -> None:
    # Its orders unknown to the database, the trade waits in orphan_trades
    # with the position of the flush that wrote it.
    refused = _unstorable(t.market, t.epoch_id)
    stored = _stored(ChangeBatch(trades=[t], position=7), "orphan_trades", refused)
    if stored is None:
        return
    (r,) = stored
    assert r.pop("aof_position") == 7
    assert r == _trade_columns(t)


def _trade_columns(t: om.Trade) -> dict[str, Any]:
    return {
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


@settings(deadline=None)  # a database is made and migrated per example
@given(uuids, texts, decimals(), decimals())
def test_a_balance_row_has_the_python_formats(
    user: uuid.UUID, asset: str, available: Decimal, frozen: Decimal
) -> None:
    b = _core.Balance(user_id=user, asset=asset, available=available, frozen=frozen)
    stored = _stored(ChangeBatch(balances=[b], position=1), "balances", "\x00" in asset)
    if stored is None:
        return
    (r,) = stored
    assert r.pop("updated_at")  # the store's own stamp
    assert r == {
        "user_id": str(user),
        "asset": asset,
        "available": _text(available),
        "frozen": _text(frozen),
        "available_scale": scale_of(available),
        "frozen_scale": scale_of(frozen),
    }


@pytest.mark.parametrize(
    "change",
    [
        {"market": om.MarketPair("BTC\x00", "USDT")},
        {"sequence": 1 << 63},
        {"epoch_id": 1 << 63},
    ],
    ids=["nul-in-market", "sequence-past-bigint", "epoch-past-bigint"],
)
def test_an_order_the_sqlite_rows_cannot_carry_is_refused_whole(change: dict[str, Any]) -> None:
    # Values the journal refuses at append; a batch built without it must
    # not be stored as another value (SQLite's JSON cuts text at a NUL and
    # reads a number past i64 as a float).
    bad = make_order(**change)
    refused = _stored(ChangeBatch([make_order(), bad], position=1), "orders", refused=True)
    assert refused is None
