"""Both stores: every table round-trips exactly; flushes are idempotent,
ordered by position, and keep trades with unknown orders apart."""

from __future__ import annotations

import datetime
import re
import sqlite3
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.adapt import Loader
from test_store_support import (
    T0,
    balance_key,
    epoch_key,
    make_balance,
    make_epoch,
    make_order,
    make_trade,
    node,
)

from openmatch_persistence import (
    EpochPhase,
    MarketPair,
    OrderReceived,
    OrderSide,
    OrderStatus,
    OrderType,
    TradeExecuted,
    _core,
    encode,
)
from openmatch_persistence._core import SQLITE_ROWS_PER_STATEMENT
from openmatch_persistence.errors import IdentityMismatchError, StoreError
from openmatch_persistence.store import ChangeBatch, SqliteStore
from openmatch_persistence.store.base import (
    Claim,
    DatabaseIdentity,
    StateImage,
    WriteResult,
    check_image_size,
    decide_claim,
    hot_rows_sql,
    identity_mismatch,
    schema_label,
    unclaimed_snapshot,
    window_start_id,
)
from openmatch_persistence.store.postgres import PostgresStore

pytest_plugins = ["test_store_support"]  # the store fixtures


def _rich_batch() -> ChangeBatch:
    a = make_order(
        price=Decimal("1.5"),
        quantity=Decimal("12345678901234567890.12345678"),
        remaining_qty=Decimal("0.00000001"),
        created_at=T0,
        updated_at=T0 + 999,  # nanoseconds that TIMESTAMPTZ cannot hold
        origin_node=bytes(range(32)),
        epoch_id=2**63 - 1,
        sequence=2**63 - 1,
        status=OrderStatus.PENDING_ESCROW,
    )
    b = make_order(
        market=MarketPair("A/B", "C"),  # a symbol that cannot be split back
        side=OrderSide.SELL,
        order_type=OrderType.MARKET,
        price=None,
        quantity=Decimal("1.50000000"),
        remaining_qty=Decimal("0"),
        status=OrderStatus.PARTIALLY_FILLED,
        created_at=0,
        updated_at=1,
        origin_node=bytes([255] * 32),
    )
    c = make_order(
        quantity=Decimal("-7.10"),
        remaining_qty=Decimal("100"),
        price=Decimal("3"),
        market=MarketPair("€UR", "ÜSD"),
    )
    d = make_order(market=MarketPair("A\\B\tC", "D\nE\r"))  # COPY's escapes
    trade = make_trade(a, b, price=Decimal("1.50"), quote_amount=Decimal("0.75000000"))
    balances = [
        make_balance(asset="BTC", available=Decimal("0.10"), frozen=Decimal("2.00000000")),
        make_balance(asset="USDTTTTTTT", available=Decimal("99999999999999999999.99999999")),
    ]
    epochs = [
        make_epoch(
            epoch_id=1,
            phase=EpochPhase.FINALIZE,
            result_hash=node(5),
            trade_count=3,
            completed_at=T0 + 7,
        ),
        make_epoch(epoch_id=2, phase=EpochPhase.COLLECT, batch_hash=None),
    ]
    return ChangeBatch([a, b, c, d], [trade], balances, epochs, position=4096)


def test_every_table_round_trips_exactly(any_store: Any) -> None:
    batch = _rich_batch()
    result = any_store.write_changes(batch)
    assert not result.stale and result.orphan_trade_ids == ()
    loaded = any_store.load_state()

    by_id = {o.id: o for o in loaded.orders}
    assert set(by_id) == {o.id for o in batch.orders}
    for o in batch.orders:
        got = by_id[o.id]
        assert got == o
        # Scale and nanoseconds included: the AOF bytes are identical.
        assert encode(OrderReceived(got)) == encode(OrderReceived(o))
        assert str(got.quantity) == str(o.quantity)
        assert got.updated_at_ns == o.updated_at_ns
    assert [encode(TradeExecuted(t)) for t in loaded.trades] == [
        encode(TradeExecuted(t)) for t in batch.trades
    ]
    assert sorted(map(balance_key, loaded.balances)) == sorted(map(balance_key, batch.balances))
    assert [epoch_key(e) for e in loaded.epochs] == [
        epoch_key(e) for e in sorted(batch.epochs, key=lambda e: e.epoch_id)
    ]
    assert loaded.checkpoint is not None
    assert loaded.checkpoint.position == 4096
    assert loaded.checkpoint.epoch_id == 2


def test_postgres_keeps_the_engine_columns_readable(pg_store: Any) -> None:
    pg_store.write_changes(_rich_batch())
    with pg_store.connection() as conn:
        row = conn.execute(
            "SELECT market, side, order_type, status, price, created_at, created_at_ns"
            " FROM orders WHERE market = 'A/B/C'"
        ).fetchone()
    assert row[:5] == ("A/B/C", "SELL", "MARKET", "PARTIALLY_FILLED", None)
    assert row[5].timestamp() == 0 and row[6] == 0


def test_writing_the_same_batch_twice_changes_nothing(any_store: Any) -> None:
    batch = _rich_batch()
    any_store.write_changes(batch)
    before = _row_versions(any_store)
    first = any_store.load_state()
    any_store.write_changes(batch)
    assert _row_versions(any_store) == before
    assert any_store.load_state() == first


def _row_versions(store: Any) -> Any:
    tables = ["orders", "trades", "balances", "epochs", "persistence_checkpoint"]
    if hasattr(store, "connection"):
        with store.connection() as conn:
            return [conn.execute(f"SELECT xmin::text, * FROM {t} ORDER BY 2").fetchall()
                    for t in tables]  # fmt: skip
    return [[tuple(r) for r in store.execute(f"SELECT * FROM {t} ORDER BY 1")] for t in tables]


def test_a_changed_row_is_updated(any_store: Any) -> None:
    o = make_order()
    any_store.write_changes(ChangeBatch(orders=[o], position=100))
    filled = make_order(
        id=o.id, user_id=o.user_id, sr_id=o.sr_id, status=OrderStatus.FILLED,
        remaining_qty=Decimal("0.00"), updated_at=T0 + 5, epoch_id=9,
    )  # fmt: skip
    any_store.write_changes(ChangeBatch(orders=[filled], position=200))
    assert any_store.load_state().orders == [filled]


def test_a_batch_older_than_the_checkpoint_writes_nothing(any_store: Any) -> None:
    new = make_order(status=OrderStatus.FILLED)
    any_store.write_changes(ChangeBatch(orders=[new], position=500))
    old = make_order(id=new.id, user_id=new.user_id, sr_id=new.sr_id, status=OrderStatus.ACTIVE)
    result = any_store.write_changes(ChangeBatch(orders=[old], position=400))
    assert result == WriteResult(400, 0, 0, 0, 0, stale=True)
    state = any_store.load_state()
    assert state.orders == [new]
    assert state.checkpoint.position == 500
    # Only an older batch is dropped: one at the checkpoint's own position
    # is written (idempotent when it holds the same rows).
    again = make_order(id=new.id, user_id=new.user_id, sr_id=new.sr_id, epoch_id=3)
    assert any_store.write_changes(ChangeBatch(orders=[again], position=500)) == WriteResult(
        500, 1, 0, 0, 0
    )
    assert any_store.load_state().orders == [again]


def test_the_checkpoint_records_when_it_was_flushed(any_store: Any) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    any_store.write_changes(ChangeBatch(position=10))
    after = datetime.datetime.now(datetime.timezone.utc)
    flushed_at = any_store.checkpoint().flushed_at
    if isinstance(flushed_at, str):  # SQLite: RFC 3339 text
        flushed_at = datetime.datetime.fromisoformat(flushed_at)
    assert before <= flushed_at <= after


def test_a_position_only_batch_moves_the_checkpoint(any_store: Any) -> None:
    any_store.write_changes(ChangeBatch(position=10))
    assert any_store.checkpoint().position == 10
    any_store.write_changes(ChangeBatch(position=20))
    assert any_store.checkpoint().position == 20


def test_a_trade_with_unknown_orders_is_kept_apart_then_moved(any_store: Any) -> None:
    taker, maker = make_order(), make_order(side=OrderSide.SELL)
    trade = make_trade(taker, maker)  # its maker unknown
    stranger = make_order()
    other = make_trade(stranger, taker)  # its taker unknown
    batch = ChangeBatch(trades=[trade, other], orders=[taker], position=100)
    result = any_store.write_changes(batch)
    assert set(result.orphan_trade_ids) == {trade.id, other.id}
    state = any_store.load_state()
    assert state.trades == sorted([trade, other], key=lambda t: (t.executed_at, t.id))
    assert set(state.orphan_trade_ids) == {trade.id, other.id}  # nothing lost
    # The missing order arrives: the trade moves to `trades`.
    assert any_store.write_changes(ChangeBatch(orders=[maker], position=200)).orphan_trade_ids == ()
    state = any_store.load_state()
    assert set(state.orphan_trade_ids) == {other.id}
    any_store.write_changes(ChangeBatch(orders=[stranger], position=300))
    state = any_store.load_state()
    assert {t.id for t in state.trades} == {trade.id, other.id}
    assert state.orphan_trade_ids == []


def test_postgres_refuses_to_round_a_value_that_skipped_validation(pg_store: Any) -> None:
    bad = make_order(quantity=Decimal("1.123456789"))
    with pytest.raises(StoreError, match="quantity_fits_numeric_28_8"):
        pg_store.write_changes(ChangeBatch(orders=[bad], position=1))
    state = pg_store.load_state()
    assert state.orders == [] and state.checkpoint is None  # nothing half-written


def test_postgres_finds_a_flushs_orders_by_key_whatever_the_history(pg_store: Any) -> None:
    # The shape in which PostgreSQL's planner turned the trades' EXISTS
    # checks into hash joins over every order ever written: many orders and
    # a flush of thousands of trades. Each statement that checks a trade's
    # orders must probe the primary key per trade, never read the table.
    import psycopg

    from openmatch_persistence.store import postgres

    orders = 50_000
    with pg_store.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO orders (id, user_id, market, side, order_type, status, quantity, "
            "remaining_qty, origin_node, created_at, updated_at) "
            "SELECT gen_random_uuid(), gen_random_uuid(), 'BTC/USDT', 'BUY', 'LIMIT', 'FILLED', "
            "1, 0, '\\x00', now(), now() FROM generate_series(1, %s)",
            (orders,),
        )
        conn.execute("ANALYZE orders")
        conn.execute(f"CREATE TEMP TABLE tmp_trades ({postgres._TEMP_TABLES['tmp_trades']})")
        conn.execute(
            "INSERT INTO tmp_trades (id, taker_order_id, maker_order_id) "
            "SELECT gen_random_uuid(), id, id FROM orders LIMIT %s",
            (orders // 2,),
        )
        for statement in (
            postgres._UPSERT_TRADES,
            postgres._UPSERT_ORPHANS.replace("%(position)s", "1"),
            postgres._REHOME_ORPHANS,
        ):
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement))
            assert "orders_pkey" in plan, plan
            assert "Scan on orders" not in plan and "Hash" not in plan, plan
        raise psycopg.Rollback()  # leaves the schema as the fixture made it


def test_sqlite_file_is_owner_only(tmp_path: Any) -> None:
    from openmatch_persistence.store import SqliteStore

    path = tmp_path / "data" / "state.sqlite3"
    with SqliteStore(path) as store:
        store.migrate()
        store.write_changes(ChangeBatch(orders=[make_order()], position=1))
    assert path.stat().st_mode & 0o777 == 0o600
    with SqliteStore(path) as again:
        assert again.migrate() == []
        assert len(again.load_state().orders) == 1


def test_a_sqlite_file_is_written_ahead_synced_fully_and_waits_for_a_busy_writer(
    tmp_path: Path,
) -> None:
    # WAL and synchronous=FULL: a committed flush survives a power loss; a
    # writer waits up to 30 s for another (a CLI next to the engine).
    with SqliteStore(tmp_path / "state.sqlite3") as store:
        pragmas = [store.execute(f"PRAGMA {p}")[0][0] for p in ("journal_mode", "synchronous")]
        assert pragmas == ["wal", 2]
        assert store.execute("PRAGMA busy_timeout")[0][0] == 30_000
        assert store.execute("PRAGMA foreign_keys")[0][0] == 1
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database, " * 64)
    with pytest.raises(StoreError, match=rf"^{garbage}: file is not a database$"):
        SqliteStore(garbage)


def test_an_empty_store_loads_empty(any_store: Any) -> None:
    state = any_store.load_state()
    assert (state.orders, state.trades, state.balances, state.epochs) == ([], [], [], [])
    assert state.checkpoint is None and any_store.checkpoint() is None


def test_a_database_file_made_by_someone_else_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "made-elsewhere.sqlite3"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    with SqliteStore(path) as store:
        store.migrate()
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("event", ["INSERT", "UPDATE"])
def test_sqlite_writes_rows_and_checkpoint_in_one_transaction(
    sqlite_store: SqliteStore, event: str
) -> None:
    # The checkpoint says which AOF position the rows hold: rows committed
    # without it (or it without them) would be replayed onto, or skipped.
    # A trigger aborts the checkpoint's write, the last statement of the
    # flush: every row written before it in the batch must go too. INSERT
    # is the first flush (no checkpoint yet), UPDATE a later one.
    kept = make_order()
    if event == "UPDATE":
        sqlite_store.write_changes(
            ChangeBatch([kept], [], [make_balance(user_id=kept.user_id)], [make_epoch()], 100)
        )
    before = sqlite_store.load_state()
    before_rows = _row_versions(sqlite_store)
    sqlite_store.execute(
        f"CREATE TRIGGER refuse_checkpoint BEFORE {event} ON persistence_checkpoint"
        " BEGIN SELECT RAISE(ABORT, 'checkpoint refused by the test'); END"
    )
    changed = make_order(id=kept.id, user_id=kept.user_id, sr_id=kept.sr_id,
                         status=OrderStatus.FILLED, remaining_qty=Decimal("0"))  # fmt: skip
    batch = _rich_batch()
    batch = ChangeBatch(
        [changed, *batch.orders], batch.trades, batch.balances, batch.epochs, position=200
    )
    with pytest.raises(StoreError, match="checkpoint refused by the test"):
        sqlite_store.write_changes(batch)
    assert _row_versions(sqlite_store) == before_rows
    assert sqlite_store.load_state() == before
    # Without the trigger the same batch lands whole.
    sqlite_store.execute("DROP TRIGGER refuse_checkpoint")
    sqlite_store.write_changes(batch)
    checkpoint = sqlite_store.checkpoint()
    assert checkpoint is not None and checkpoint.position == 200
    assert {o.id for o in sqlite_store.load_state().orders} == {o.id for o in batch.orders}


def test_a_checkpoint_with_a_clock_loads_the_hot_rows(any_store: Any) -> None:
    # Recovery from rows reads the hot part through indexes when the
    # checkpoint has a clock (load_state, the whole history, otherwise):
    # the hot rows must be the checkpoint's state.
    assert any_store.load_hot_state() is None  # no checkpoint yet
    any_store.write_changes(ChangeBatch(position=10))
    assert any_store.load_hot_state() is None  # a checkpoint without a clock
    batch = _rich_batch()
    open_orders = [o for o in batch.orders if o.status != OrderStatus.FILLED]
    any_store.write_changes(
        ChangeBatch(batch.orders, batch.trades, batch.balances, batch.epochs, position=4096,
                    clock_ns=T0 + 10**9, closed_epochs_through=None)
    )  # fmt: skip
    hot = any_store.load_hot_state()
    assert hot is not None
    assert hot.checkpoint.position == 4096 and hot.checkpoint.clock_ns == T0 + 10**9
    assert {o.id for o in hot.orders} == {o.id for o in open_orders}
    assert sorted(map(balance_key, hot.balances)) == sorted(map(balance_key, batch.balances))
    assert sorted(map(epoch_key, hot.epochs)) == sorted(map(epoch_key, batch.epochs))
    state = hot.state()  # at the checkpoint's position and clock, not its rows' latest time
    assert (state.position, state.clock_ns) == (4096, T0 + 10**9)


def test_a_database_file_that_cannot_be_made_owner_only_is_used_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.sqlite3"
    sqlite3.connect(path).close()
    path.chmod(0o640)

    def refuse(self: Path, mode: int) -> None:
        raise PermissionError("not the owner")

    private = tmp_path / "private.sqlite3"
    sqlite3.connect(private).close()
    private.chmod(0o600)
    monkeypatch.setattr(Path, "chmod", refuse)
    with caplog.at_level("WARNING", logger="openmatch_persistence.store.sqlite"):
        with SqliteStore(private):
            pass  # owner-only already: left alone
        with SqliteStore(path) as store:
            store.migrate()
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} is readable by others (mode 640) and could not be made owner-only: not the owner"
    ]
    assert path.stat().st_mode & 0o777 == 0o640


def test_the_state_image_keeps_the_newest_and_a_claim_stamps_it(any_store: Any) -> None:
    assert any_store.load_image() is None
    any_store.write_image(500, 7, b"five")
    assert any_store.load_image() == StateImage(500, 7, b"five", None)
    any_store.write_image(400, 6, b"four")  # older than the one kept: dropped
    assert any_store.load_image() == StateImage(500, 7, b"five", None)
    any_store.write_image(500, 8, b"again")  # the same position: replaced
    assert any_store.load_image() == StateImage(500, 8, b"again", None)

    # An unclaimed database holding a snapshot is adopted only when asked;
    # the claim stamps what it holds.
    ours = uuid.UUID(int=5)
    with pytest.raises(IdentityMismatchError, match=r"holds a snapshot but no data directory"):
        any_store.claim(ours, "/data/a", adopt=False, claimed_as="adopted")
    assert any_store.identity() is None
    assert any_store.claim(ours, "/data/a", adopt=True, claimed_as="adopted") == "adopted"
    assert any_store.identity() == DatabaseIdentity(ours, "/data/a", "adopted")
    assert any_store.load_image() == StateImage(500, 8, b"again", ours)
    any_store.write_image(600, None, b"six")
    assert any_store.load_image() == StateImage(600, None, b"six", ours)
    # The same data directory, moved: the claim follows it.
    assert any_store.claim(ours, "/data/b", adopt=False, claimed_as="new") == "owned"
    assert any_store.identity() == DatabaseIdentity(ours, "/data/b", "adopted")
    with pytest.raises(IdentityMismatchError):
        any_store.claim(uuid.UUID(int=6), "/data/b", adopt=True, claimed_as="adopted")


def test_an_empty_database_is_claimed_as_new_and_stamps_its_first_flush() -> None:
    with SqliteStore(":memory:") as store:
        store.migrate()
        ours = uuid.UUID(int=7)
        assert store.claim(ours, "/data/c", adopt=False, claimed_as="adopted") == "new"
        store.write_changes(ChangeBatch(orders=[make_order()], position=100))
        checkpoint = store.checkpoint()
        assert checkpoint is not None and checkpoint.data_dir_id == ours


def test_a_state_image_that_is_no_blob_or_cannot_be_read_is_a_store_error(
    sqlite_store: SqliteStore,
) -> None:
    sqlite_store.write_image(500, 7, b"five")
    sqlite_store.execute("UPDATE persistence_state_image SET data = 'text'")
    with pytest.raises(StoreError, match="the state image is str, not a blob"):
        sqlite_store.load_image()
    with SqliteStore(":memory:") as unmigrated:
        with pytest.raises(StoreError, match="cannot read the state image: no such table"):
            unmigrated.load_image()


def test_sqlite_rows_read_as_text_by_other_programs(sqlite_store: SqliteStore) -> None:
    # The columns recovery does not read back (it uses the _ns and exact
    # decimal columns): a person's or another program's view of the state.
    user = uuid.UUID(int=3)
    sqlite_store.write_changes(
        ChangeBatch(
            balances=[make_balance(user_id=user, asset="BTC", available=Decimal("0.10"),
                                   frozen=Decimal("0.00000001"))],
            epochs=[make_epoch(epoch_id=1, phase=EpochPhase.FINALIZE, trade_count=2,
                               completed_at=T0 + 7), make_epoch(epoch_id=2)],
            position=100,
        )
    )  # fmt: skip
    [balance] = sqlite_store.execute(
        "SELECT user_id, asset, available, frozen, available_scale, frozen_scale FROM balances"
    )
    assert tuple(balance) == (str(user), "BTC", "0.10", "0.00000001", 2, 8)
    epochs = sqlite_store.execute(
        "SELECT epoch_id, phase, trade_count, started_at, completed_at, started_at_ns,"
        " completed_at_ns FROM epochs ORDER BY epoch_id"
    )
    started = "2026-02-27T21:35:25.123456789Z"
    assert [tuple(r) for r in epochs] == [
        (1, "FINALIZE", 2, started, "2026-02-27T21:35:25.123456796Z", T0, T0 + 7),
        (2, "SEAL", 0, started, None, T0, None),
    ]


def test_a_flush_longer_than_one_statement_keeps_every_rows_own_values(
    sqlite_store: SqliteStore,
) -> None:
    # Rows go to SQLite SQLITE_ROWS_PER_STATEMENT at a time, each row's node
    # found by its index in its statement's chunk: a wrong offset past the
    # first chunk would give a row another row's node.
    n = 2 * SQLITE_ROWS_PER_STATEMENT + 3
    nodes = [i.to_bytes(32, "big") for i in range(n)]
    orders = [make_order(origin_node=nodes[i]) for i in range(n)]
    # The first and the last trade's makers are orders the database does
    # not have: one orphan in the first statement, one in the last.
    makers = [make_order(), *orders[2:], make_order()]
    trades = [make_trade(orders[i], makers[i], matcher_node=nodes[i]) for i in range(n)]
    result = sqlite_store.write_changes(ChangeBatch(orders=orders, trades=trades, position=100))
    assert set(result.orphan_trade_ids) == {trades[0].id, trades[-1].id}
    stored = {r[0]: r[1] for r in sqlite_store.execute("SELECT id, origin_node FROM orders")}
    assert stored == {str(o.id): o.origin_node for o in orders}
    stored = {r[0]: r[1] for r in sqlite_store.execute("SELECT id, matcher_node FROM trades")}
    assert stored == {str(t.id): t.matcher_node for t in trades[1:-1]}
    orphans = sqlite_store.execute("SELECT id, matcher_node, aof_position FROM orphan_trades")
    assert sorted(tuple(r) for r in orphans) == sorted(
        (str(t.id), t.matcher_node, 100) for t in (trades[0], trades[-1])
    )


def test_the_json_rows_select_each_column_by_index_and_each_node_by_row() -> None:
    # The statements are built once at import; called here, so that a
    # mistake in how they are built shows as a wrong row, not only as SQL.
    from openmatch_persistence.store import sqlite as store_sqlite

    select = store_sqlite._json_rows(("a", "node", "b"), "node")
    known = store_sqlite._orders_known("j.value ->> 0", "j.value ->> 2")
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    c.execute("INSERT INTO orders VALUES ('x'), ('3')")
    rows = b'[["x", null, 3], ["y", null, 4], ["x", null, 4]]'
    nodes = b"A" * 32 + b"B" * 32 + b"C" * 32
    got = c.execute(f"SELECT {select}, {known} FROM {store_sqlite._JSON_EACH}", (rows, nodes))
    assert got.fetchall() == [
        ("x", b"A" * 32, 3, 1),
        ("y", b"B" * 32, 4, 0),
        ("x", b"C" * 32, 4, 0),
    ]


def _run_sql(store: Any, sql: str) -> None:
    """One statement on either store's database: a test's own edit of its rows."""
    if isinstance(store, SqliteStore):
        store.execute(sql)
    else:
        with store.connection() as conn:
            conn.execute(sql)


def test_an_unknown_epoch_phase_names_its_row(any_store: Any) -> None:
    any_store.write_changes(ChangeBatch(epochs=[make_epoch(epoch_id=4)], position=100))
    _run_sql(any_store, "UPDATE epochs SET phase = 'BOGUS'")
    with pytest.raises(StoreError, match=r"^epochs row 4: phase: unknown value 'BOGUS'"):
        any_store.load_state()


def test_postgres_reads_epoch_times_of_rows_from_before_the_ns_columns(pg_store: Any) -> None:
    # Rows written before the *_ns columns have only the TIMESTAMPTZ: the
    # times are read from it, to the microsecond it holds.
    done = T0 + 7_654
    epoch = make_epoch(epoch_id=4, phase=EpochPhase.FINALIZE, started_at=T0, completed_at=done)
    pg_store.write_changes(ChangeBatch(epochs=[epoch], position=100))
    _run_sql(pg_store, "UPDATE epochs SET started_at_ns = NULL, completed_at_ns = NULL")
    [loaded] = pg_store.load_state().epochs
    assert (loaded.started_at_ns, loaded.completed_at_ns) == (
        T0 // 1000 * 1000,
        done // 1000 * 1000,
    )


def test_postgres_takes_a_flush_past_one_copy_chunk_whole(pg_store: Any) -> None:
    # The orders' COPY text goes in 1 MiB writes: 5,000 orders are more.
    orders = [make_order() for _ in range(5_000)]
    assert len(_core.pg_copy_orders(ChangeBatch(orders=orders).rows)) > 1 << 20
    pg_store.write_changes(ChangeBatch(orders=orders, position=1))
    assert {o.id for o in pg_store.load_state().orders} == {o.id for o in orders}


def test_a_postgres_store_pool_defaults(database_url: str) -> None:
    with PostgresStore(database_url) as store:
        pool = store.pool
        assert (pool.min_size, pool.max_size, pool.timeout) == (1, 10, 5.0)
        assert isinstance(pool.kwargs, dict) and pool.kwargs["connect_timeout"] == 5
        assert pool.name == "openmatch-store"


def _wait_until_blocked_by(
    database_url: str, holder: psycopg.Connection[Any], flush: Future[Any]
) -> None:
    """Returns once another backend waits for a lock ``holder`` holds; fails
    if ``flush`` ends first (the deadline is a bound against hanging, not a
    measure of time)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while not watcher.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)))",
            (holder.info.backend_pid,),
        ).fetchone()[0]:  # type: ignore[index]
            assert not flush.done(), f"the flush ended without waiting: {flush.result()}"
            assert time.monotonic() < deadline, "the flush never waited for the held row"
            time.sleep(0.01)


def test_a_postgres_claim_waits_for_a_flush_in_flight(pg_store: Any, database_url: str) -> None:
    # A flush reads the identity FOR SHARE first: until it commits, a claim
    # (LOCK TABLE persistence_identity IN EXCLUSIVE MODE) cannot change the
    # identity the flush checked. The flush is held inside its transaction,
    # past that check, by a row lock of the test's on the checkpoint; a
    # claim with a lock_timeout then fails instead of waiting.
    ours = uuid.UUID(int=1)
    pg_store.claim(ours, "/d", adopt=False, claimed_as="new")
    pg_store.write_changes(ChangeBatch(position=1))
    sep = "&" if "?" in database_url else "?"
    impatient = PostgresStore(
        f"{database_url}{sep}options=-clock_timeout%3D100", schema=pg_store.schema
    )
    with ThreadPoolExecutor(1) as pool, impatient:
        with psycopg.connect(database_url) as holder:
            holder.execute(f"SELECT 1 FROM {pg_store.schema}.persistence_checkpoint FOR UPDATE")
            flush = pool.submit(pg_store.write_changes, ChangeBatch(position=2))
            try:
                _wait_until_blocked_by(database_url, holder, flush)
                with pytest.raises(StoreError, match=r": LockNotAvailable: .*lock timeout"):
                    impatient.claim(ours, "/d", adopt=False, claimed_as="new")
            finally:
                holder.rollback()  # the flush goes on
        assert flush.result().position == 2
    assert pg_store.checkpoint().position == 2


class _BytesReadAsText(Loader):
    """A bytea that arrives in text format reads as this marker."""

    def load(self, data: Any) -> bytes:
        return b"read as text"


def test_a_postgres_state_image_is_read_in_binary(database_url: str, pg_schema: str) -> None:
    # As text, bytea travels as hex, twice its size (an image past 512 MB
    # would pass PostgreSQL's 1 GB limit on a field): the image is asked for
    # in binary. One pooled connection, whose text loader of bytea is marked.
    image = bytes(range(256)) * 3
    with PostgresStore(database_url, schema=pg_schema, max_connections=1) as store:
        store.migrate()
        store.write_image(3, None, image)
        with store.connection() as conn:
            conn.adapters.register_loader("bytea", _BytesReadAsText)
            [(as_text,)] = conn.execute("SELECT data FROM persistence_state_image").fetchall()
        assert as_text == b"read as text"  # the marker is in place
        assert store.load_image() == StateImage(3, None, image, None)


def test_a_postgres_store_migrates_from_the_directory_it_is_given(
    database_url: str, pg_schema: str, tmp_path: Path
) -> None:
    (tmp_path / "1_a_table_of_our_own.sql").write_text("CREATE TABLE ours (x int);\n")
    with PostgresStore(database_url, schema=pg_schema, migrations_dir=tmp_path) as store:
        assert store.migrate() == [1]
        with store.connection() as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,)
            ).fetchall()
    assert {t for (t,) in tables} == {"ours", "_sqlx_migrations"}


def test_a_postgres_migration_that_cannot_connect_says_why_and_hides_the_password() -> None:
    # Nothing listens on port 1: libpq's reason, under the masked URL.
    store = PostgresStore("postgresql://postgres:hunter2@127.0.0.1:1/test")
    with store, pytest.raises(StoreError) as refused:
        store.migrate()
    assert str(refused.value).startswith(
        "postgresql://postgres:****@127.0.0.1:1/test: OperationalError: connection failed: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    )
    assert "hunter2" not in str(refused.value)


def test_postgres_turns_nanoseconds_into_the_exact_microsecond(pg_store: Any) -> None:
    # Whole seconds through to_timestamp, the rest as whole microseconds:
    # truncated, never rounded through a double.
    from openmatch_persistence.store import postgres

    with pg_store.connection() as conn:
        for ns in (T0, T0 + 999, 0, 1_999, 2**62):
            [(at,)] = conn.execute(f"SELECT {postgres._ts('x')} FROM (VALUES ({ns}::bigint)) t(x)")
            assert at == datetime.datetime.fromtimestamp(0, datetime.timezone.utc) + (
                datetime.timedelta(microseconds=ns // 1000)
            ), ns


def test_an_unmigrated_postgres_schema_has_no_identity(database_url: str, pg_schema: str) -> None:
    with PostgresStore(database_url, schema=pg_schema) as store:
        assert store.identity() is None


def test_the_sqlite_store_names_what_it_was_doing_when_it_fails(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SqliteStore(":memory:") as unmigrated:
        with pytest.raises(StoreError, match=r"^:memory:: claiming the database: no such table"):
            unmigrated.claim(uuid.UUID(int=1), "/d", adopt=False, claimed_as="new")
        with pytest.raises(StoreError, match=r"^:memory:: state image at position 5: no such"):
            unmigrated.write_image(5, None, b"x")
    # Another data directory's database: refused before the image is written.
    sqlite_store.claim(uuid.UUID(int=1), "/d", adopt=False, claimed_as="new")
    sqlite_store.execute(f"UPDATE persistence_identity SET data_dir_id = '{uuid.UUID(int=2)}'")
    with pytest.raises(IdentityMismatchError, match=r"^state image at position 5: the database"):
        sqlite_store.write_image(5, None, b"x")
    with pytest.raises(IdentityMismatchError) as refused:
        sqlite_store.write_changes(ChangeBatch(position=6))
    assert str(refused.value) == str(
        identity_mismatch(
            "sqlite::memory:",
            uuid.UUID(int=1),
            "/d",
            DatabaseIdentity(uuid.UUID(int=2), "/d", "new"),
            "flush to position 6",
        )
    )
    sqlite_store.execute(f"UPDATE persistence_identity SET data_dir_id = '{uuid.UUID(int=1)}'")
    sqlite_store.execute(
        "CREATE TRIGGER refuse_checkpoint BEFORE INSERT ON persistence_checkpoint"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(StoreError, match=r"^:memory:: flush to position 7: refused$"):
        sqlite_store.write_changes(ChangeBatch(position=7))
    monkeypatch.setattr("openmatch_persistence.store.base.MAX_IMAGE_BYTES", 2)
    check_image_size("sqlite::memory:", 2)  # at the limit: taken
    with pytest.raises(
        StoreError,
        match=r"^sqlite::memory:: the state image is 3 bytes, past the 2-byte limit of a database"
        r" field: not written \(recovery replays the AOF from the last image\)$",
    ):
        SqliteStore(":memory:").write_image(5, None, b"xyz")


def test_postgres_names_what_it_was_doing_when_it_refuses_an_image_or_a_flush(
    pg_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    label = re.escape(pg_store.label)
    pg_store.claim(uuid.UUID(int=1), "/d", adopt=False, claimed_as="new")
    _run_sql(pg_store, f"UPDATE persistence_identity SET data_dir_id = '{uuid.UUID(int=2)}'")
    with pytest.raises(
        IdentityMismatchError, match=rf"^state image at position 5: the database {label} belongs"
    ):
        pg_store.write_image(5, None, b"x")
    with pytest.raises(IdentityMismatchError) as refused:
        pg_store.write_changes(ChangeBatch(position=6))
    theirs = DatabaseIdentity(uuid.UUID(int=2), "/d", "new")
    expected = identity_mismatch(
        pg_store.label, uuid.UUID(int=1), "/d", theirs, "flush to position 6"
    )
    assert str(refused.value) == str(expected)
    monkeypatch.setattr("openmatch_persistence.store.base.MAX_IMAGE_BYTES", 2)
    with pytest.raises(StoreError, match=rf"^{label}: the state image is 3 bytes, past"):
        pg_store.write_image(5, None, b"xyz")


def test_the_image_and_the_claim_record_their_time_in_utc(sqlite_store: SqliteStore) -> None:
    sqlite_store.claim(uuid.UUID(int=1), "/d", adopt=False, claimed_as="new")
    sqlite_store.write_image(5, None, b"x")
    [(written_at,)] = sqlite_store.execute("SELECT written_at FROM persistence_state_image")
    [(claimed_at,)] = sqlite_store.execute("SELECT claimed_at FROM persistence_identity")
    assert written_at.endswith("+00:00") and claimed_at.endswith("+00:00")


def test_an_identity_mismatch_names_both_sides_and_what_was_refused() -> None:
    ours, theirs = uuid.UUID(int=1), DatabaseIdentity(uuid.UUID(int=2), "/data/b", "new")
    unbound = identity_mismatch("db", ours, "/data/a", None, "flush to position 5")
    assert str(unbound) == (
        f"flush to position 5: the database db has no data directory identity, and this store "
        f"writes for data directory /data/a (id {ours}): refusing to write to it"
    )
    assert (unbound.data_dir_id, unbound.data_dir_path) == (ours, "/data/a")
    assert (unbound.database_id, unbound.database_path) == (None, None)

    other = identity_mismatch("db", ours, "/data/a", theirs, "opening")
    assert str(other) == (
        f"opening: the database db belongs to data directory /data/b (id {theirs.data_dir_id}),"
        f" not to data directory /data/a (id {ours}): nothing was written; give each data"
        " directory its own database (or schema)"
    )
    assert (other.data_dir_id, other.data_dir_path) == (ours, "/data/a")
    assert (other.database_id, other.database_path) == (theirs.data_dir_id, "/data/b")

    nobody = identity_mismatch("db", None, None, theirs, "opening")
    assert "not to a store bound to no data directory: nothing" in str(nobody)
    # The same path with another id: the data directory's identity file
    # was lost or replaced, and the message says how to restore it.
    same_path = identity_mismatch("db", ours, "/data/b", theirs, "opening")
    assert str(same_path).endswith(
        f"(or schema) (the same path: if /data/b/identity was deleted or replaced, restore it"
        f" with the id {theirs.data_dir_id})"
    )


def test_a_snapshot_of_no_data_directory_is_refused_naming_who_asked() -> None:
    ours = uuid.UUID(int=1)
    refused = unclaimed_snapshot("db", ours, "/data/a")
    assert str(refused) == (
        "the database db holds a snapshot but no data directory identity: it may be another"
        f" data directory's, so data directory /data/a (id {ours}) does not take it silently."
        " If it is this data directory's state, adopt it (--adopt, or"
        " Persistence.open(..., adopt=True)); otherwise use an empty database"
    )
    assert (refused.data_dir_id, refused.data_dir_path) == (ours, "/data/a")
    assert (refused.database_id, refused.database_path) == (None, None)


def test_a_schema_is_named_in_messages_unless_it_is_the_default() -> None:
    assert schema_label("postgresql://h/db", None) == "postgresql://h/db"
    assert schema_label("postgresql://h/db", "public") == "postgresql://h/db"
    assert schema_label("postgresql://h/db", "tenant") == "postgresql://h/db (schema tenant)"


def _v7(ms: int, n: int) -> uuid.UUID:
    """A UUIDv7 of millisecond ``ms`` (the variant bits set), ``n`` apart."""
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62) | n)


def _untimed(n: int) -> uuid.UUID:
    """A UUIDv4-shaped id: no time in it, so never out of the id window."""
    return uuid.UUID(int=(0x4 << 76) | (0b10 << 62) | n)


def test_the_id_window_starts_at_the_first_id_of_its_oldest_millisecond() -> None:
    window = _core.ID_WINDOW_MS
    clock = (window + 1000) * 1_000_000 + 999_999  # late in millisecond window + 1000
    start = window_start_id(clock)
    assert start == uuid.UUID(int=1000 << 80)
    assert _v7(999, 2**62 - 1) < start <= _v7(1000, 0)
    # A clock younger than the window: every id is inside it.
    assert window_start_id(window * 1_000_000 - 1) == uuid.UUID(int=0)


def test_the_hot_rows_queries_read_the_open_orders_the_window_and_the_kept_epochs(
    sqlite_store: SqliteStore,
) -> None:
    # hot_rows_sql's predicates run directly (the stores build theirs once,
    # at import): what each query keeps and what it leaves to the history.
    clock = (_core.ID_WINDOW_MS + 1000) * 1_000_000
    filled = {"status": OrderStatus.FILLED, "remaining_qty": Decimal("0")}
    open_new, open_old = make_order(id=_v7(1500, 1)), make_order(id=_v7(10, 2))
    retired = [make_order(id=i, **filled) for i in (_v7(1500, 3), _v7(1000, 4), _untimed(5))]
    forgotten = [make_order(id=i, **filled) for i in (_v7(999, 6), _v7(10, 7))]
    a, b = retired[0], forgotten[0]
    trades = [make_trade(a, b, id=i) for i in (_v7(1500, 8), _untimed(9), _v7(999, 10))]
    orphan = make_trade(make_order(), make_order(), id=_v7(10, 11))  # its orders unknown
    kept = _core.FINALIZED_EPOCHS_KEPT
    finalized = [
        make_epoch(epoch_id=i, phase=EpochPhase.FINALIZE, completed_at=T0 + 1)
        for i in range(1, kept + 3)
    ]
    sqlite_store.write_changes(
        ChangeBatch([open_new, open_old, *retired, *forgotten], [*trades, orphan], [],
                    [*finalized, make_epoch(epoch_id=kept + 3)], position=10, clock_ns=clock)
    )  # fmt: skip
    queries = hot_rows_sql("?", "id")
    start = (str(window_start_id(clock)),)

    def ids(key: str, *params: str) -> set[str]:
        return {r[0] for r in sqlite_store.execute(queries[key], params)}

    assert ids("orders") == {str(open_new.id), str(open_old.id)}
    assert ids("retired_orders", *start) == {str(o.id) for o in retired}
    assert ids("retired_trades", *start) == {str(trades[0].id), str(trades[1].id), str(orphan.id)}
    epochs = sorted(r["epoch_id"] for r in sqlite_store.execute(queries["epochs"]))
    assert epochs == list(range(3, kept + 4))  # the newest finalized, and the open one


def test_an_unmigrated_database_has_no_identity_and_a_broken_one_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with SqliteStore() as store:  # in memory by default: no file
        assert store.path == ":memory:" and list(tmp_path.iterdir()) == []
        assert store.identity() is None
        store.execute("CREATE TABLE persistence_identity (singleton INTEGER)")
        with pytest.raises(StoreError, match=r"^:memory:: no such column: data_dir_id"):
            store.identity()


def test_a_change_batch_shows_its_counts_and_position() -> None:
    batch = ChangeBatch(orders=[make_order(), make_order()], epochs=[make_epoch()], position=7)
    assert repr(batch) == "ChangeBatch(orders=2, trades=0, balances=0, epochs=1, position=7)"
    # Its rows, or lists made into rows: never both, whichever list is given.
    rows = batch.rows
    assert ChangeBatch(rows=rows, position=7).counts() == (2, 0, 0, 1)
    order = make_order()
    given: list[list[Any]] = [[order], [make_trade(order, order)], [make_balance()], [make_epoch()]]
    for kind in range(4):
        lists = [rows_of_kind if k == kind else [] for k, rows_of_kind in enumerate(given)]
        with pytest.raises(ValueError, match=r"^a ChangeBatch takes rows or lists, not both$"):
            ChangeBatch(lists[0], lists[1], lists[2], lists[3], rows=rows)


def test_the_claim_rule_keeps_moves_takes_or_refuses() -> None:
    ours, other = uuid.UUID(int=1), uuid.UUID(int=2)

    def never() -> bool:
        raise AssertionError("an owned database is not asked whether it holds a snapshot")

    def claim(theirs: DatabaseIdentity | None, held: bool | None, adopt: bool = False) -> Claim:
        holds = never if held is None else (lambda: held)
        return decide_claim("db", theirs, holds, ours, "/data/a", adopt=adopt, claimed_as="adopted")

    mine = DatabaseIdentity(ours, "/data/a", "new")
    assert claim(mine, None) == Claim("owned", insert=False, move=False)
    moved = DatabaseIdentity(ours, "/data/old", "new")
    assert claim(moved, None) == Claim("owned", insert=False, move=True)
    assert claim(None, False) == Claim("new", insert=True, move=False)
    assert claim(None, True, adopt=True) == Claim("adopted", insert=True, move=False)
    with pytest.raises(IdentityMismatchError) as refused:
        claim(None, True)
    assert str(refused.value) == str(unclaimed_snapshot("db", ours, "/data/a"))
    with pytest.raises(IdentityMismatchError, match=r"^opening: the database db belongs to"):
        claim(DatabaseIdentity(other, "/data/a", "new"), None)


def test_a_sqlite_database_claimed_by_another_data_dir_is_named_in_the_refusal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    with SqliteStore(path) as store:
        store.migrate()
        store.claim(uuid.uuid4(), str(tmp_path / "a"), adopt=False, claimed_as="a")
        with pytest.raises(IdentityMismatchError) as refused:
            store.claim(uuid.uuid4(), str(tmp_path / "b"), adopt=False, claimed_as="b")
    assert f"sqlite:{path}" in str(refused.value)
