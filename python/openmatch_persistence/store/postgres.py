"""The PostgreSQL store: psycopg 3 over a psycopg_pool connection pool.

A flush is one transaction: the batch's rows go by COPY into temporary
tables (one round trip per table, not per row) and from there into the real
tables with ``INSERT ... ON CONFLICT DO UPDATE``, followed by the checkpoint.
Scales, exact nanoseconds and the market's split are computed on the server
from the copied values (``scale(numeric)``, integer arithmetic), which keeps
the per-row Python work to reading the engine's attributes.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from openmatch_persistence import _core
from openmatch_persistence.dsn import mask_dsn, scrub
from openmatch_persistence.errors import StoreError
from openmatch_persistence.store.base import (
    HOLDS_SNAPSHOT_SQL,
    SELECT_ALL_BALANCES,
    SELECT_BALANCES,
    SELECT_CHECKPOINT,
    SELECT_EPOCHS,
    SELECT_IDENTITY,
    SELECT_IMAGE,
    SELECT_ORDERS,
    SELECT_ORPHAN_TRADES,
    SELECT_TRADES,
    STAMPED_TABLES,
    ChangeBatch,
    Checkpoint,
    ClosesOnExit,
    DatabaseIdentity,
    HotRows,
    LoadedState,
    StateImage,
    WriteResult,
    check_image_size,
    check_owner,
    check_schema,
    decide_claim,
    hot_rows_sql,
    schema_label,
    window_start_id,
)
from openmatch_persistence.store.migrate import POSTGRES_MIGRATIONS, migrate_postgres
from openmatch_persistence.store.rows import (
    PHASE,
    PHASE_NAME,
    from_name,
    make_balance,
    make_epoch,
    order_from_row,
    trade_from_row,
    with_scale,
)
from openmatch_persistence.store.tables import BALANCES, EPOCHS, ORDERS, ORPHAN_TRADES, TRADES

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 10
_UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

# An exact TIMESTAMPTZ (microseconds, truncated) from BIGINT nanoseconds:
# whole seconds through to_timestamp (exact for integers), the rest as an
# integral number of microseconds.
_TS = (
    "(to_timestamp(({c} / 1000000000)::double precision)"
    " + (mod({c}, 1000000000) / 1000) * interval '1 microsecond')"
)


def _ts(column: str) -> str:
    return _TS.format(c=column)


# The temporary tables that COPY fills. Their NUMERIC columns have no typmod,
# so scale() sees the engine's scale; the CHECKs stop a value that
# validate_for_store would have refused from being rounded by the cast.
_TEMP_TABLES = {
    "tmp_orders": """
        id uuid, user_id uuid, market_base text, market_quote text, side text,
        order_type text, status text,
        price numeric CONSTRAINT price_fits_numeric_28_8 CHECK (scale(price) <= 8),
        quantity numeric CONSTRAINT quantity_fits_numeric_28_8 CHECK (scale(quantity) <= 8),
        remaining_qty numeric
            CONSTRAINT remaining_qty_fits_numeric_28_8 CHECK (scale(remaining_qty) <= 8),
        sr_id uuid, batch_id bigint, sequence bigint, origin_node bytea,
        created_at_ns bigint, updated_at_ns bigint""",
    "tmp_trades": """
        id uuid, batch_id bigint, market_base text, market_quote text,
        taker_order_id uuid, maker_order_id uuid, taker_user_id uuid, maker_user_id uuid,
        price numeric CONSTRAINT price_fits_numeric_28_8 CHECK (scale(price) <= 8),
        quantity numeric CONSTRAINT quantity_fits_numeric_28_8 CHECK (scale(quantity) <= 8),
        quote_amount numeric
            CONSTRAINT quote_amount_fits_numeric_28_8 CHECK (scale(quote_amount) <= 8),
        taker_side text, matcher_node bytea, executed_at_ns bigint""",
    "tmp_balances": """
        user_id uuid, asset text,
        available numeric CONSTRAINT available_fits_numeric_28_8 CHECK (scale(available) <= 8),
        frozen numeric CONSTRAINT frozen_fits_numeric_28_8 CHECK (scale(frozen) <= 8)""",
    "tmp_epochs": """
        epoch_id bigint, phase text, batch_hash bytea, result_hash bytea, trade_count int,
        started_at_ns bigint, completed_at_ns bigint""",
}
# ON COMMIT DELETE ROWS: each table is made once per connection and is empty
# at the start of every transaction.
_CREATE_TEMP_TABLE = {
    table: f"CREATE TEMP TABLE IF NOT EXISTS {table} ({columns}) ON COMMIT DELETE ROWS"
    for table, columns in _TEMP_TABLES.items()
}

# Balances and epochs go by binary COPY with these types (psycopg's C
# dumpers; a Decimal keeps its scale). Orders and trades, the bulk, go as
# text COPY lines that Rust builds from the values (rows.rs).
_COPY_TYPES = {
    "tmp_epochs": ["int8", "text", "bytea", "bytea", "int4", "int8", "int8"],
}  # fmt: skip

_ORDER_SELECT = f"""
    SELECT id, user_id, market_base || '/' || market_quote, side, order_type, status,
           price, quantity, remaining_qty, batch_id, sequence, origin_node,
           {_ts("created_at_ns")}, {_ts("updated_at_ns")},
           sr_id, market_base, market_quote, scale(price), scale(quantity),
           scale(remaining_qty), created_at_ns, updated_at_ns
    FROM tmp_orders"""

_TRADE_SELECT = f"""
    SELECT id, batch_id, market_base || '/' || market_quote, taker_order_id, maker_order_id,
           taker_user_id, maker_user_id, price, quantity, quote_amount, taker_side,
           matcher_node, {_ts("executed_at_ns")}, market_base, market_quote,
           scale(price), scale(quantity), scale(quote_amount), executed_at_ns
    FROM tmp_trades s"""
# Each trade's two orders, looked up by primary key. Scalar subqueries, not
# EXISTS: the planner may turn an EXISTS into a hash join or a hashed subplan
# over every order ever written, and did once a flush's trades were a few
# thousand against stale statistics (two sequential scans of `orders` per
# flush: the flush's time then grew with the history, to seconds past 5 M
# operations). A correlated scalar subquery has no such rewrite; it stays one
# index probe per trade, whatever the table's size or statistics.
_BOTH_ORDERS_KNOWN = """
    COALESCE((SELECT TRUE FROM orders o WHERE o.id = {t}.taker_order_id), FALSE)
    AND COALESCE((SELECT TRUE FROM orders o WHERE o.id = {t}.maker_order_id), FALSE)"""

_EPOCH_SELECT = f"""
    SELECT epoch_id, phase, batch_hash, result_hash, trade_count, {_ts("started_at_ns")},
           CASE WHEN completed_at_ns IS NULL THEN NULL ELSE {_ts("completed_at_ns")} END,
           started_at_ns, completed_at_ns
    FROM tmp_epochs"""

_BALANCE_SELECT = """
    SELECT user_id, asset, available, frozen, scale(available), scale(frozen) FROM tmp_balances"""


_UPSERT_ORDERS = ORDERS.upsert(_ORDER_SELECT, "postgres")
_UPSERT_TRADES = TRADES.upsert(
    _TRADE_SELECT + " WHERE" + _BOTH_ORDERS_KNOWN.format(t="s"), "postgres"
)
_UPSERT_ORPHANS = (
    ORPHAN_TRADES.upsert(
        _TRADE_SELECT.replace("FROM tmp_trades s", ", %(position)s::bigint FROM tmp_trades s")
        + " WHERE NOT ("
        + _BOTH_ORDERS_KNOWN.format(t="s")
        + ")",
        "postgres",
    )
    + " RETURNING id"
)
_cols = ", ".join(TRADES.columns)
_REHOME_ORPHANS = f"""
    WITH moved AS (
        DELETE FROM orphan_trades t WHERE {_BOTH_ORDERS_KNOWN.format(t="t")} RETURNING {_cols}
    )
    INSERT INTO trades ({_cols}) SELECT {_cols} FROM moved ON CONFLICT (id) DO NOTHING"""
_UPSERT_BALANCES = BALANCES.upsert(_BALANCE_SELECT, "postgres")
_UPSERT_EPOCHS = EPOCHS.upsert(_EPOCH_SELECT, "postgres")
_WRITE_CHECKPOINT = """
    INSERT INTO persistence_checkpoint AS t
        (singleton, aof_position, epoch_id, flushed_at, data_dir_id, clock_ns,
         closed_epochs_through)
    VALUES (TRUE, %s, (SELECT max(epoch_id) FROM epochs), now(), %s, %s, %s)
    ON CONFLICT (singleton) DO UPDATE
        SET aof_position = EXCLUDED.aof_position, epoch_id = EXCLUDED.epoch_id,
            flushed_at = EXCLUDED.flushed_at, data_dir_id = EXCLUDED.data_dir_id,
            clock_ns = EXCLUDED.clock_ns, closed_epochs_through = EXCLUDED.closed_epochs_through
        WHERE (t.aof_position, t.epoch_id, t.data_dir_id, t.clock_ns, t.closed_epochs_through)
            IS DISTINCT FROM (EXCLUDED.aof_position, EXCLUDED.epoch_id, EXCLUDED.data_dir_id,
                              EXCLUDED.clock_ns, EXCLUDED.closed_epochs_through)
"""


def _epoch_row(e: Any) -> tuple[Any, ...]:
    return (
        e.epoch_id, PHASE_NAME[e.phase], e.batch_hash, e.result_hash, e.trade_count,
        e.started_at_ns, e.completed_at_ns,
    )  # fmt: skip


# %b: the image travels in binary both ways (as text, bytea is hex: twice
# the bytes, and a 512 MB image would pass the 1 GB message limit).
_UPSERT_IMAGE = """
    INSERT INTO persistence_state_image (id, aof_position, epoch_id, data, data_dir_id)
    VALUES (1, %s, %s, %b, %s)
    ON CONFLICT (id) DO UPDATE SET
        aof_position = EXCLUDED.aof_position, epoch_id = EXCLUDED.epoch_id,
        data = EXCLUDED.data, written_at = now(), data_dir_id = EXCLUDED.data_dir_id
    WHERE EXCLUDED.aof_position >= persistence_state_image.aof_position
"""

# The other statements the store runs, each named once (those both stores
# run as they are come from base.py).
_IDENTITY_TABLE_EXISTS = "SELECT to_regclass('persistence_identity') IS NOT NULL"
# A write's check of the identity: the row lock keeps the identity as it is
# until the write commits, and a claim (which locks the table) waits for it.
_SELECT_IDENTITY_FOR_SHARE = f"{SELECT_IDENTITY} FOR SHARE"
_LOCK_IDENTITY = "LOCK TABLE persistence_identity IN EXCLUSIVE MODE"
_MOVE_IDENTITY = "UPDATE persistence_identity SET data_dir_path = %s"
_INSERT_IDENTITY = (
    "INSERT INTO persistence_identity (data_dir_id, data_dir_path, claimed_as) VALUES (%s, %s, %s)"
)
#: A claim stamps the snapshot rows written before any data directory's.
_STAMP_UNCLAIMED = tuple(
    f"UPDATE {table} SET data_dir_id = %s WHERE data_dir_id IS NULL" for table in STAMPED_TABLES
)
_SYNCHRONOUS_COMMIT = "SET LOCAL synchronous_commit = on"
# FOR UPDATE: two flushers of one database take turns here.
_LOCK_CHECKPOINT_POSITION = "SELECT aof_position FROM persistence_checkpoint FOR UPDATE"
#: One snapshot for every read of a load: the rows and the checkpoint agree.
_READ_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
# The planner has no statistics for the untimed-id predicate (it guesses a
# third of the table) and would scan the whole history; the partial indexes
# are what the hot queries are for, and they hold only the hot part
# (measured: a sequential scan of 2 M trades took most of 3.2 s).
_USE_INDEXES = "SET LOCAL enable_seqscan = off"
_HOT = hot_rows_sql("%s", "id::text")


class PostgresStore(ClosesOnExit):
    """The engine's state in PostgreSQL. Thread-safe: every call borrows a
    connection from the pool (at most ``max_connections``)."""

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        min_connections: int = 1,
        schema: str | None = None,
        timeout: float = 5.0,
        migrations_dir: Path = POSTGRES_MIGRATIONS,
        connect_timeout: int = 5,
    ) -> None:
        self._dsn = dsn
        self._schema = check_schema(schema)
        self._label = schema_label(mask_dsn(dsn), self._schema)
        self._migrations_dir = migrations_dir
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": connect_timeout}
        if self._schema is not None:
            # One schema per store: every connection (the pool's and the
            # migrator's) resolves the unqualified names, _sqlx_migrations
            # included, in it and only in it (pg_catalog and the session's
            # temporary tables are always searched). The name is checked,
            # and kept after any options of the URL (the last -c wins).
            try:
                given = conninfo_to_dict(dsn).get("options")
            except psycopg.ProgrammingError:
                given = None  # psycopg reports the bad DSN when it connects
            ours = f"-c search_path={self._schema}"
            kwargs["options"] = f"{given} {ours}" if given else ours
        self._connect_kwargs = kwargs
        self._pool = ConnectionPool(
            dsn,
            min_size=min(min_connections, max_connections),
            max_size=max_connections,
            kwargs=kwargs,
            timeout=timeout,
            check=ConnectionPool.check_connection,
            open=False,
            name="openmatch-store",
        )
        self._open_lock = threading.Lock()
        self._opened = False
        #: The data directory this store writes for (``claim``), or None.
        self._data_dir_id: uuid.UUID | None = None
        self._data_dir_path: str | None = None

    def _ensure_open(self) -> None:
        # Opened on first use (``migrate`` alone needs no pool), and without
        # waiting: a store made while the database is down works once it is
        # back (the pool keeps trying in the background).
        if not self._opened:
            with self._open_lock:
                if not self._opened:
                    self._pool.open(wait=False)
                    self._opened = True

    def __repr__(self) -> str:
        return f"PostgresStore({self._label!r})"

    @property
    def schema(self) -> str | None:
        """The schema this store keeps to, or None: the connection's own."""
        return self._schema

    @property
    def label(self) -> str:
        """The database as messages name it: masked URL, and the schema."""
        return self._label

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection; driver errors become
        :class:`StoreError` with the DSN's password masked."""
        self._ensure_open()
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as e:
            raise StoreError(
                f"no connection to {self._label} within {self._pool.timeout} s: "
                f"{scrub(str(e), self._dsn)}"
            ) from None
        except psycopg.Error as e:
            raise StoreError(
                f"{self._label}: {type(e).__name__}: {scrub(str(e), self._dsn)}"
            ) from None

    def close(self) -> None:
        self._pool.close()

    def migrate(self) -> list[int]:
        # A connection of its own, not the pool's: a failure to connect is
        # reported at once and with libpq's reason.
        try:
            with psycopg.connect(self._dsn, **self._connect_kwargs) as conn:
                return migrate_postgres(conn, self._migrations_dir, schema=self._schema)
        except psycopg.Error as e:
            raise StoreError(
                f"{self._label}: {type(e).__name__}: {scrub(str(e), self._dsn)}"
            ) from None

    def checkpoint(self) -> Checkpoint | None:
        with self.connection() as conn:
            row = conn.cursor(row_factory=dict_row).execute(SELECT_CHECKPOINT).fetchone()
        return None if row is None else _checkpoint(row)

    def identity(self) -> DatabaseIdentity | None:
        with self.connection() as conn:
            exists = conn.execute(_IDENTITY_TABLE_EXISTS).fetchone()
            if not exists or not exists[0]:
                return None  # not migrated yet: no identity
            return self._identity_in(conn)

    @staticmethod
    def _identity_in(
        conn: psycopg.Connection[Any], query: str = SELECT_IDENTITY
    ) -> DatabaseIdentity | None:
        row = conn.execute(query).fetchone()
        return None if row is None else DatabaseIdentity(row[0], row[1], row[2])

    def claim(
        self, data_dir_id: uuid.UUID, data_dir_path: str, *, adopt: bool, claimed_as: str
    ) -> str:
        database = self._label
        with self.connection() as conn, conn.transaction():
            # Claims take turns, and wait for the flushes in flight (their
            # FOR SHARE), so two data directories never both claim.
            conn.execute(_LOCK_IDENTITY)
            claim = decide_claim(
                database,
                self._identity_in(conn),
                lambda: bool(conn.execute(HOLDS_SNAPSHOT_SQL).fetchone()[0]),  # type: ignore[index]
                data_dir_id,
                data_dir_path,
                adopt=adopt,
                claimed_as=claimed_as,
            )
            if claim.move:
                conn.execute(_MOVE_IDENTITY, (data_dir_path,))
            if claim.insert:
                conn.execute(_INSERT_IDENTITY, (data_dir_id, data_dir_path, claim.how))
                for stamp in _STAMP_UNCLAIMED:
                    conn.execute(stamp, (data_dir_id,))
        self._data_dir_id, self._data_dir_path = data_dir_id, data_dir_path
        return claim.how

    def _check_identity(self, conn: psycopg.Connection[Any], doing: str) -> None:
        """Inside a write transaction, first: the database must be this
        store's data directory's (or, for a store bound to none, of none).
        FOR SHARE keeps the row as it is until the commit."""
        theirs = self._identity_in(conn, _SELECT_IDENTITY_FOR_SHARE)
        check_owner(self._label, self._data_dir_id, self._data_dir_path, theirs, doing)

    def write_image(self, position: int, epoch_id: int | None, data: bytes) -> None:
        check_image_size(self._label, len(data))
        with self.connection() as conn, conn.transaction():
            # Compaction deletes the segments a snapshot covers once this
            # commit returns, so it must be durable whatever the server's
            # default (synchronous_commit = off is a common tuning). Its WAL
            # flush also covers every earlier commit, the snapshot's
            # checkpoint included; the flusher's own commits keep the
            # server's setting (the AOF still holds what they wrote).
            conn.execute(_SYNCHRONOUS_COMMIT)
            self._check_identity(conn, f"state image at position {position}")
            conn.execute(_UPSERT_IMAGE, (position, epoch_id, data, self._data_dir_id))

    def load_image(self) -> StateImage | None:
        with self.connection() as conn:
            row = conn.cursor(binary=True).execute(SELECT_IMAGE).fetchone()
        return None if row is None else StateImage(row[0], row[1], bytes(row[2]), row[3])

    def write_changes(self, batch: ChangeBatch) -> WriteResult:
        with self.connection() as conn, conn.transaction():
            self._check_identity(conn, f"flush to position {batch.position}")
            cur = conn.cursor()
            row = cur.execute(_LOCK_CHECKPOINT_POSITION).fetchone()
            if row is not None and batch.position < row[0]:
                return WriteResult(batch.position, 0, 0, 0, 0, stale=True)
            orphans: list[uuid.UUID] = []
            orders, trades, balances, epochs = batch.counts()
            if orders:
                self._copy_text(cur, "tmp_orders", _core.pg_copy_orders(batch.rows))
                cur.execute(_UPSERT_ORDERS)
            if trades:
                self._copy_text(cur, "tmp_trades", _core.pg_copy_trades(batch.rows))
                cur.execute(_UPSERT_TRADES)
                cur.execute(_UPSERT_ORPHANS, {"position": batch.position})
                orphans = [r[0] for r in cur.fetchall()]
            if orders:
                cur.execute(_REHOME_ORPHANS)
            if balances:
                self._copy_text(cur, "tmp_balances", _core.pg_copy_balances(batch.rows))
                cur.execute(_UPSERT_BALANCES)
            if epochs:
                self._copy(cur, "tmp_epochs", map(_epoch_row, batch.epochs))
                cur.execute(_UPSERT_EPOCHS)
            cur.execute(
                _WRITE_CHECKPOINT,
                (batch.position, self._data_dir_id, batch.clock_ns, batch.closed_epochs_through),
            )
        return WriteResult(batch.position, orders, trades, balances, epochs, tuple(orphans))

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], table: str, rows: Any) -> None:
        cur.execute(_CREATE_TEMP_TABLE[table])
        with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES[table])
            for r in rows:
                copy.write_row(r)

    @staticmethod
    def _copy_text(cur: psycopg.Cursor[Any], table: str, data: bytes) -> None:
        """COPY ``data``, the text lines that ``_core.pg_copy_orders`` /
        ``pg_copy_trades`` / ``pg_copy_balances`` make (rows.rs), into
        ``table``."""
        cur.execute(_CREATE_TEMP_TABLE[table])
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            view = memoryview(data)
            for start in range(0, len(data), 1 << 20):
                copy.write(view[start : start + (1 << 20)])

    def load_state(self) -> LoadedState:
        with self.connection() as conn:
            with conn.transaction():
                conn.execute(_READ_SNAPSHOT)
                cur = conn.cursor(row_factory=dict_row)
                orders = [order_from_row(r) for r in cur.execute(SELECT_ORDERS)]
                trade_rows = cur.execute(SELECT_TRADES).fetchall()
                orphan_rows = cur.execute(SELECT_ORPHAN_TRADES).fetchall()
                rows = sorted(
                    trade_rows + orphan_rows, key=lambda r: (r["executed_at_ns"], r["id"])
                )
                trades = [trade_from_row(r) for r in rows]
                balances = [_balance_from_row(r) for r in cur.execute(SELECT_BALANCES)]
                epochs = [_epoch_from_row(r) for r in cur.execute(SELECT_EPOCHS)]
                cp = cur.execute(SELECT_CHECKPOINT).fetchone()
        checkpoint = None if cp is None else _checkpoint(cp)
        return LoadedState(
            orders, trades, balances, epochs, checkpoint, [r["id"] for r in orphan_rows]
        )

    def load_hot_state(self) -> HotRows | None:
        with self.connection() as conn:
            with conn.transaction():
                conn.execute(_READ_SNAPSHOT)
                conn.execute(_USE_INDEXES)
                cur = conn.cursor(row_factory=dict_row)
                row = cur.execute(SELECT_CHECKPOINT).fetchone()
                cp = None if row is None else _checkpoint(row)
                if cp is None or cp.clock_ns is None:
                    return None
                start = (window_start_id(cp.clock_ns),)
                return HotRows(
                    orders=[order_from_row(r) for r in cur.execute(_HOT["orders"])],
                    retired_order_ids=[r["id"] for r in cur.execute(_HOT["retired_orders"], start)],
                    retired_trade_ids=[r["id"] for r in cur.execute(_HOT["retired_trades"], start)],
                    balances=[_balance_from_row(r) for r in cur.execute(SELECT_ALL_BALANCES)],
                    epochs=[_epoch_from_row(r) for r in cur.execute(_HOT["epochs"])],
                    checkpoint=cp,
                )


def _checkpoint(r: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        r["aof_position"],
        r["epoch_id"],
        r["flushed_at"],
        r["data_dir_id"],
        r["clock_ns"],
        r["closed_epochs_through"],
    )


def _balance_from_row(r: dict[str, Any]) -> _core.Balance:
    return make_balance(
        r["user_id"],
        r["asset"],
        with_scale(r["available"], r["available_scale"]),
        with_scale(r["frozen"], r["frozen_scale"]),
    )


def _epoch_from_row(r: dict[str, Any]) -> _core.Epoch:
    return make_epoch(
        r["epoch_id"],
        from_name(PHASE, r["phase"], f"epochs row {r['epoch_id']}: phase"),
        None if r["batch_hash"] is None else bytes(r["batch_hash"]),
        None if r["result_hash"] is None else bytes(r["result_hash"]),
        r["trade_count"] or 0,
        _ns_or_micros(r["started_at_ns"], r["started_at"]),
        None
        if r["completed_at"] is None
        else _ns_or_micros(r["completed_at_ns"], r["completed_at"]),
    )


def _ns_or_micros(ns: int | None, ts: datetime.datetime) -> int:
    if ns is not None:
        return ns
    # A row from before the *_ns columns: microseconds are all there is.
    delta = ts - _UNIX_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
