"""Factories, a stand-in change source and store fixtures for the store,
migration and flusher tests (no tests here)."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from openmatch_persistence import (
    EpochPhase,
    MarketPair,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Trade,
    _core,
)
from openmatch_persistence.store import SqliteStore
from openmatch_persistence.store.postgres import PostgresStore

T0 = 1_772_228_125_123_456_789  # 2026-02-27T21:35:25.123456789Z


def node(n: int) -> bytes:
    return bytes((n + i) % 256 for i in range(32))


def make_order(**kw: Any) -> Order:
    args: dict[str, Any] = dict(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        market=MarketPair("BTC", "USDT"),
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        status=OrderStatus.ACTIVE,
        price=Decimal("50000.5"),
        quantity=Decimal("1.25"),
        remaining_qty=Decimal("1.25"),
        sr_id=uuid.uuid4(),
        epoch_id=None,
        origin_node=node(1),
        sequence=3,
        created_at=T0,
        updated_at=T0,
    )
    args.update(kw)
    return Order(**args)


def make_trade(taker: Order, maker: Order, **kw: Any) -> Trade:
    args: dict[str, Any] = dict(
        id=uuid.uuid4(),
        epoch_id=7,
        market=taker.market,
        taker_order_id=taker.id,
        taker_user_id=taker.user_id,
        maker_order_id=maker.id,
        maker_user_id=maker.user_id,
        price=Decimal("50000.5"),
        quantity=Decimal("0.5"),
        quote_amount=Decimal("25000.25"),
        taker_side=OrderSide.BUY,
        matcher_node=node(9),
        executed_at=T0 + 1,
    )
    args.update(kw)
    return Trade(**args)


def make_balance(**kw: Any) -> _core.Balance:
    args: dict[str, Any] = dict(
        user_id=uuid.uuid4(), asset="USDT", available=Decimal("1500.25"), frozen=Decimal("0")
    )
    args.update(kw)
    return _core.Balance(**args)


def make_epoch(**kw: Any) -> _core.Epoch:
    args: dict[str, Any] = dict(
        epoch_id=7,
        phase=EpochPhase.SEAL,
        batch_hash=node(3),
        result_hash=None,
        trade_count=0,
        started_at=T0,
        completed_at=None,
    )
    args.update(kw)
    return _core.Epoch(**args)


class FakeState:
    """A stand-in for the Rust ``State``: current rows, the keys changed
    since the last take, and an AOF position that grows with every put."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orders: dict[Any, Any] = {}
        self.trades: dict[Any, Any] = {}
        self.balances: dict[Any, Any] = {}
        self.epochs: dict[Any, Any] = {}
        self.changed: dict[str, set[Any]] = {k: set() for k in ("o", "t", "b", "e")}
        self.position = 0

    def _put(self, table: dict[Any, Any], kind: str, key: Any, row: Any) -> None:
        with self.lock:
            table[key] = row
            self.changed[kind].add(key)
            self.position += 100

    def put_order(self, o: Any) -> None:
        self._put(self.orders, "o", o.id, o)

    def put_trade(self, t: Any) -> None:
        self._put(self.trades, "t", t.id, t)

    def put_balance(self, b: Any) -> None:
        self._put(self.balances, "b", (b.user_id, b.asset), b)

    def put_epoch(self, e: Any) -> None:
        self._put(self.epochs, "e", e.epoch_id, e)

    def take_changes_into(self, target: _core.StateChanges) -> int:
        with self.lock:
            taken = _core.StateChanges(
                [self.orders[k] for k in self.changed["o"]],
                [self.trades[k] for k in self.changed["t"]],
                [self.balances[k] for k in self.changed["b"]],
                [self.epochs[k] for k in self.changed["e"]],
                self.position,
            )
            for s in self.changed.values():
                s.clear()
            target.absorb(taken)
            return len(taken)


def balance_key(b: Any) -> tuple[Any, ...]:
    """A balance's attributes, exact text of the decimals included (the
    store returns the engine's ``Balance``)."""
    return (b.user_id, b.asset, str(b.available), str(b.frozen))


def epoch_key(e: Any) -> tuple[Any, ...]:
    return (
        e.epoch_id, e.phase, e.batch_hash, e.result_hash, e.trade_count, e.started_at_ns,
        e.completed_at_ns,
    )  # fmt: skip


def assert_store_holds(store: Any, state: FakeState) -> None:
    """The store's rows are exactly the state's, at the state's position."""
    loaded = store.load_state()
    assert {o.id: o for o in loaded.orders} == state.orders
    assert {t.id: t for t in loaded.trades} == state.trades
    assert {balance_key(b) for b in loaded.balances} == {
        balance_key(b) for b in state.balances.values()
    }
    assert {epoch_key(e) for e in loaded.epochs} == {epoch_key(e) for e in state.epochs.values()}
    assert loaded.checkpoint is not None
    assert loaded.checkpoint.position == state.position


# --- fixtures -----------------------------------------------------------------


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A fresh schema of its own (parallel runs do not collide), dropped after."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def pg_store(database_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    store = PostgresStore(database_url, schema=pg_schema, max_connections=4)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def sqlite_store() -> Iterator[SqliteStore]:
    store = SqliteStore(":memory:")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest) -> Any:
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    return request.getfixturevalue(name)
