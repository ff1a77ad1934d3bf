"""The SQLite store (stdlib ``sqlite3``): the embedded default, and
``:memory:`` for unit tests.

The same tables and columns as PostgreSQL in SQLite's dialect: decimals as
their exact TEXT, UUIDs as hyphenated TEXT, timestamps as RFC 3339 TEXT with
9 fractional digits beside their BIGINT nanoseconds. One connection, guarded
by a lock (SQLite has one writer anyway); WAL and ``synchronous=FULL`` on a
file, so a committed flush survives a power loss.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from openmatch_persistence import _core
from openmatch_persistence.errors import StoreError
from openmatch_persistence.fileio import create_file_durably
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
    decide_claim,
    hot_rows_sql,
    window_start_id,
)
from openmatch_persistence.store.migrate import SQLITE_MIGRATIONS, migrate_sqlite
from openmatch_persistence.store.rows import (
    PHASE,
    PHASE_NAME,
    from_name,
    make_balance,
    make_epoch,
    ns_to_text,
    order_from_row,
    trade_from_row,
)
from openmatch_persistence.store.tables import BALANCES, EPOCHS, ORDERS, ORPHAN_TRADES, TRADES

#: The embedded database when no URL is given (relative to the working directory).
DEFAULT_SQLITE_PATH = Path("openmatch-data") / "state.sqlite3"


log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _json_rows(columns: tuple[str, ...], node: str | None) -> str:
    """The columns of a chunk of ``_core.sqlite_order_json`` /
    ``sqlite_trade_json`` (``?1`` the JSON rows, ``?2`` their nodes; rows.rs's
    ``JsonRows`` says the layout) as the ``SELECT`` list over ``_JSON_EACH``."""
    return ", ".join(
        "substr(?2, 32 * j.key + 1, 32)" if c == node else f"j.value ->> {i}"
        for i, c in enumerate(columns)
    )


def _orders_known(taker: str, maker: str) -> str:
    """A trade whose two orders the database has."""
    return " AND ".join(f"EXISTS (SELECT 1 FROM orders o WHERE o.id = {x})" for x in (taker, maker))


# The JSON comes as UTF-8 bytes (a str would cost a decode under the GIL);
# the CAST makes it the text the JSON functions read.
_JSON_EACH = "json_each(CAST(?1 AS TEXT)) AS j"
_ORDER_JSON = _json_rows(ORDERS.columns, "origin_node")
_TRADE_JSON = _json_rows(TRADES.columns, "matcher_node")
_JSON_TRADE_KNOWN = _orders_known(
    *(f"j.value ->> {TRADES.columns.index(c)}" for c in ("taker_order_id", "maker_order_id"))
)
# ``WHERE true`` keeps SQLite from reading the upsert's ON as a join's.
_UPSERT_ORDERS = ORDERS.upsert(f"SELECT {_ORDER_JSON} FROM {_JSON_EACH} WHERE true", "sqlite")
_UPSERT_TRADES = TRADES.upsert(
    f"SELECT {_TRADE_JSON} FROM {_JSON_EACH} WHERE {_JSON_TRADE_KNOWN}", "sqlite"
)
_UPSERT_ORPHANS = ORPHAN_TRADES.upsert(
    f"SELECT {_TRADE_JSON}, ?3 FROM {_JSON_EACH} WHERE NOT ({_JSON_TRADE_KNOWN})", "sqlite"
)
_ORPHANED_IDS = f"SELECT j.value ->> 0 FROM {_JSON_EACH} WHERE NOT ({_JSON_TRADE_KNOWN})"
# updated_at (?2) moves only when a value changes (the WHERE of the upsert).
_UPSERT_BALANCES = BALANCES.upsert(
    f"SELECT {_json_rows(BALANCES.columns, None)}, ?2 FROM {_JSON_EACH} WHERE true", "sqlite"
)
_UPSERT_EPOCHS = EPOCHS.upsert(EPOCHS.values_clause("?"), "sqlite")
_BOTH_KNOWN = _orders_known("t.taker_order_id", "t.maker_order_id")
_cols = ", ".join(TRADES.columns)
_REHOME = [
    f"INSERT INTO trades ({_cols}) SELECT {_cols} FROM orphan_trades t WHERE {_BOTH_KNOWN}"
    " ON CONFLICT (id) DO NOTHING",
    f"DELETE FROM orphan_trades AS t WHERE {_BOTH_KNOWN}",
]


def _epoch_row(e: Any) -> tuple[Any, ...]:
    done = e.completed_at_ns
    return (
        e.epoch_id, PHASE_NAME[e.phase], e.batch_hash, e.result_hash, e.trade_count,
        ns_to_text(e.started_at_ns), None if done is None else ns_to_text(done),
        e.started_at_ns, done,
    )  # fmt: skip


def _decoded(row: sqlite3.Row, uuids: tuple[str, ...], decimals: tuple[str, ...]) -> dict[str, Any]:
    r = dict(row)
    for k in uuids:
        if r.get(k) is not None:
            r[k] = uuid.UUID(r[k])
    for k in decimals:
        if r.get(k) is not None:
            r[k] = decimal.Decimal(r[k])
    return r


_TRADE_UUIDS = ("id", "taker_order_id", "maker_order_id", "taker_user_id", "maker_user_id")
_TRADE_DECIMALS = ("price", "quantity", "quote_amount")


_UPSERT_IMAGE = """
    INSERT INTO persistence_state_image (id, aof_position, epoch_id, data, written_at, data_dir_id)
    VALUES (1, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        aof_position = excluded.aof_position, epoch_id = excluded.epoch_id,
        data = excluded.data, written_at = excluded.written_at,
        data_dir_id = excluded.data_dir_id
    WHERE excluded.aof_position >= persistence_state_image.aof_position
"""

# The other statements the store runs, each named once (those both stores
# run as they are come from base.py).
_FOREIGN_KEYS_ON = "PRAGMA foreign_keys = ON"
# A file only (``:memory:`` has no journal to write ahead of, nothing to sync).
_WRITE_AHEAD_LOG = "PRAGMA journal_mode = WAL"
_SYNC_FULLY = "PRAGMA synchronous = FULL"
_MOVE_IDENTITY = "UPDATE persistence_identity SET data_dir_path = ?"
_INSERT_IDENTITY = (
    "INSERT INTO persistence_identity (singleton, data_dir_id, data_dir_path,"
    " claimed_as, claimed_at) VALUES (1, ?, ?, ?, ?)"
)
#: A claim stamps the snapshot rows written before any data directory's.
_STAMP_UNCLAIMED = tuple(
    f"UPDATE {table} SET data_dir_id = ? WHERE data_dir_id IS NULL" for table in STAMPED_TABLES
)
# A write takes SQLite's one write lock at once (not at its first write).
_BEGIN_WRITE = "BEGIN IMMEDIATE"
_BEGIN_READ = "BEGIN"
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"
_SELECT_CHECKPOINT_POSITION = "SELECT aof_position FROM persistence_checkpoint"
_WRITE_CHECKPOINT = (
    "INSERT INTO persistence_checkpoint AS t"
    " (singleton, aof_position, epoch_id, flushed_at, data_dir_id, clock_ns,"
    " closed_epochs_through)"
    " VALUES (1, ?, (SELECT max(epoch_id) FROM epochs), ?, ?, ?, ?)"
    " ON CONFLICT (singleton) DO UPDATE SET aof_position = excluded.aof_position,"
    " epoch_id = excluded.epoch_id, flushed_at = excluded.flushed_at,"
    " data_dir_id = excluded.data_dir_id, clock_ns = excluded.clock_ns,"
    " closed_epochs_through = excluded.closed_epochs_through"
    " WHERE (t.aof_position, t.epoch_id, t.data_dir_id, t.clock_ns,"
    " t.closed_epochs_through) IS NOT (excluded.aof_position, excluded.epoch_id,"
    " excluded.data_dir_id, excluded.clock_ns, excluded.closed_epochs_through)"
)
_HOT = hot_rows_sql("?", "id")


class SqliteStore(ClosesOnExit):
    """The engine's state in an SQLite file (or ``:memory:``)."""

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, migrations_dir: Path = SQLITE_MIGRATIONS
    ) -> None:
        self._path = os.fspath(path)
        self._migrations_dir = migrations_dir
        on_disk = self._path != ":memory:"
        if on_disk:
            target = Path(self._path)
            # Owner-only from the first byte (sqlite3 would create it 0644),
            # and durably named before the first commit lands in it.
            create_file_durably(target)
            _owner_only(target)
        try:
            self._conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(_FOREIGN_KEYS_ON)
            if on_disk:
                self._conn.execute(_WRITE_AHEAD_LOG)
                self._conn.execute(_SYNC_FULLY)
        except sqlite3.Error as e:
            raise StoreError(f"{self._path}: {e}") from e
        self._lock = threading.Lock()
        #: The data directory this store writes for (``claim``), or None.
        self._data_dir_id: uuid.UUID | None = None
        self._data_dir_path: str | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"

    @property
    def path(self) -> str:
        return self._path

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def execute(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """Runs one statement and returns its rows (for tools and tests)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def migrate(self) -> list[int]:
        with self._lock:
            return migrate_sqlite(self._conn, self._migrations_dir)

    def checkpoint(self) -> Checkpoint | None:
        rows = self.execute(SELECT_CHECKPOINT)
        return None if not rows else _checkpoint(rows[0])

    def identity(self) -> DatabaseIdentity | None:
        try:
            with self._lock:
                return self._identity_in(self._conn)
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return None  # not migrated yet: no identity
            raise StoreError(f"{self._path}: {e}") from e

    def claim(
        self, data_dir_id: uuid.UUID, data_dir_path: str, *, adopt: bool, claimed_as: str
    ) -> str:
        how = self._in_write_transaction(
            "claiming the database",
            lambda c: self._claim(c, data_dir_id, data_dir_path, adopt, claimed_as),
        )
        self._data_dir_id, self._data_dir_path = data_dir_id, data_dir_path
        return how

    def _claim(
        self,
        c: sqlite3.Connection,
        data_dir_id: uuid.UUID,
        path: str,
        adopt: bool,
        claimed_as: str,
    ) -> str:
        database = f"sqlite:{self._path}"
        claim = decide_claim(
            database,
            self._identity_in(c),
            lambda: bool(c.execute(HOLDS_SNAPSHOT_SQL).fetchone()[0]),
            data_dir_id,
            path,
            adopt=adopt,
            claimed_as=claimed_as,
        )
        if claim.move:
            c.execute(_MOVE_IDENTITY, (path,))
        if claim.insert:
            now = datetime.datetime.now(datetime.timezone.utc).isoformat()
            c.execute(_INSERT_IDENTITY, (str(data_dir_id), path, claim.how, now))
            for stamp in _STAMP_UNCLAIMED:
                c.execute(stamp, (str(data_dir_id),))
        return claim.how

    @staticmethod
    def _identity_in(c: sqlite3.Connection) -> DatabaseIdentity | None:
        row = c.execute(SELECT_IDENTITY).fetchone()
        return None if row is None else DatabaseIdentity(uuid.UUID(row[0]), row[1], row[2])

    def _check_identity(self, c: sqlite3.Connection, doing: str) -> None:
        """Inside a write transaction: the database must be this store's
        data directory's (or, for a store bound to none, of none)."""
        theirs = self._identity_in(c)
        check_owner(f"sqlite:{self._path}", self._data_dir_id, self._data_dir_path, theirs, doing)

    def write_image(self, position: int, epoch_id: int | None, data: bytes) -> None:
        check_image_size(f"sqlite:{self._path}", len(data))
        written_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
        what = f"state image at position {position}"
        ours = None if self._data_dir_id is None else str(self._data_dir_id)

        def write(c: sqlite3.Connection) -> None:
            self._check_identity(c, what)
            c.execute(_UPSERT_IMAGE, (position, epoch_id, data, written_at, ours))

        self._in_write_transaction(what, write)

    def load_image(self) -> StateImage | None:
        try:
            rows = self.execute(SELECT_IMAGE)
        except sqlite3.Error as e:
            raise StoreError(f"{self._path}: cannot read the state image: {e}") from e
        if not rows:
            return None
        position, epoch_id, data, data_dir_id = rows[0]
        if not isinstance(data, bytes):
            raise StoreError(f"{self._path}: the state image is {type(data).__name__}, not a blob")
        return StateImage(position, epoch_id, data, _opt_uuid(data_dir_id))

    def write_changes(self, batch: ChangeBatch) -> WriteResult:
        return self._in_write_transaction(
            f"flush to position {batch.position}", lambda c: self._write(c, batch)
        )

    def _in_write_transaction(self, what: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """``body`` in one ``BEGIN IMMEDIATE`` transaction under the store's
        lock: committed when it returns, rolled back if it raises; SQLite's
        errors become :class:`StoreError` naming ``what``.

        Not a generator context manager: an exception a signal raises
        between its ``__enter__`` taking the lock and the ``with`` that
        would release it would leave the lock held by a suspended generator
        (and the next write of this thread waiting for it forever). Here the
        lock is a ``with`` of this frame. Whether a transaction is open is
        asked of SQLite, not inferred from which statement ran: such an
        exception between BEGIN and the body, or after COMMIT, must neither
        leave one open (every later write would fail with "cannot start a
        transaction within a transaction") nor roll back a committed one."""
        with self._lock:
            c = self._conn
            try:
                if c.in_transaction:
                    c.execute(_ROLLBACK)
                try:
                    c.execute(_BEGIN_WRITE)
                    result = body(c)
                    c.execute(_COMMIT)
                    return result
                except BaseException:
                    if c.in_transaction:
                        c.execute(_ROLLBACK)
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"{self._path}: {what}: {e}") from e

    def _write(self, c: sqlite3.Connection, batch: ChangeBatch) -> WriteResult:
        self._check_identity(c, f"flush to position {batch.position}")
        row = c.execute(_SELECT_CHECKPOINT_POSITION).fetchone()
        if row is not None and batch.position < row[0]:
            return WriteResult(batch.position, 0, 0, 0, 0, stale=True)
        orders, trades, balances, epochs = batch.counts()
        # Each statement reads a whole chunk in one step, which sqlite3 runs
        # without the GIL (see ``JsonRows`` in rows.rs).
        if orders:
            for rows, nodes in _core.sqlite_order_json(batch.rows):
                c.execute(_UPSERT_ORDERS, (rows, nodes))
        orphans: list[uuid.UUID] = []
        if trades:
            # A trade kept apart whose orders are now known leaves
            # orphan_trades through _REHOME below: whenever its orders
            # arrive, in this flush or an earlier one, that flush moves it.
            for rows, nodes in _core.sqlite_trade_json(batch.rows):
                orphaned = [uuid.UUID(r[0]) for r in c.execute(_ORPHANED_IDS, (rows,))]
                c.execute(_UPSERT_TRADES, (rows, nodes))
                if orphaned:
                    c.execute(_UPSERT_ORPHANS, (rows, nodes, batch.position))
                    orphans += orphaned
        if orders:
            for sql in _REHOME:
                c.execute(sql)
        if balances:
            now = ns_to_text(_now_ns())
            for rows, _ in _core.sqlite_balance_json(batch.rows):
                c.execute(_UPSERT_BALANCES, (rows, now))
        if epochs:
            c.executemany(_UPSERT_EPOCHS, map(_epoch_row, batch.epochs))
        c.execute(
            _WRITE_CHECKPOINT,
            (
                batch.position,
                ns_to_text(_now_ns()),
                None if self._data_dir_id is None else str(self._data_dir_id),
                batch.clock_ns,
                batch.closed_epochs_through,
            ),
        )
        return WriteResult(batch.position, orders, trades, balances, epochs, tuple(orphans))

    def load_hot_state(self) -> HotRows | None:
        with self._lock:
            c = self._conn
            c.execute(_BEGIN_READ)  # one read snapshot
            try:
                cp_row = c.execute(SELECT_CHECKPOINT).fetchone()
                cp = None if cp_row is None else _checkpoint(cp_row)
                if cp is None or cp.clock_ns is None:
                    return None
                start = (str(window_start_id(cp.clock_ns)),)
                order_rows = c.execute(_HOT["orders"]).fetchall()
                retired_orders = c.execute(_HOT["retired_orders"], start).fetchall()
                retired_trades = c.execute(_HOT["retired_trades"], start).fetchall()
                balance_rows = c.execute(SELECT_ALL_BALANCES).fetchall()
                epoch_rows = c.execute(_HOT["epochs"]).fetchall()
            finally:
                c.execute(_COMMIT)
        return HotRows(
            orders=[_order_from_row(r) for r in order_rows],
            retired_order_ids=[uuid.UUID(r[0]) for r in retired_orders],
            retired_trade_ids=[uuid.UUID(r[0]) for r in retired_trades],
            balances=[_balance_from_row(r) for r in balance_rows],
            epochs=[_epoch_from_row(r) for r in epoch_rows],
            checkpoint=cp,
        )

    def load_state(self) -> LoadedState:
        with self._lock:
            c = self._conn
            c.execute(_BEGIN_READ)  # one read snapshot
            try:
                order_rows = c.execute(SELECT_ORDERS).fetchall()
                trade_rows = c.execute(SELECT_TRADES).fetchall()
                orphan_rows = c.execute(SELECT_ORPHAN_TRADES).fetchall()
                balance_rows = c.execute(SELECT_BALANCES).fetchall()
                epoch_rows = c.execute(SELECT_EPOCHS).fetchall()
                cp = c.execute(SELECT_CHECKPOINT).fetchone()
            finally:
                c.execute(_COMMIT)
        orders = [_order_from_row(r) for r in order_rows]
        trades_raw = [_decoded(r, _TRADE_UUIDS, _TRADE_DECIMALS) for r in trade_rows]
        orphans_raw = [_decoded(r, _TRADE_UUIDS, _TRADE_DECIMALS) for r in orphan_rows]
        all_trades = sorted(trades_raw + orphans_raw, key=lambda r: (r["executed_at_ns"], r["id"]))
        return LoadedState(
            orders=orders,
            trades=[trade_from_row(r) for r in all_trades],
            balances=[_balance_from_row(r) for r in balance_rows],
            epochs=[_epoch_from_row(r) for r in epoch_rows],
            checkpoint=None if cp is None else _checkpoint(cp),
            orphan_trade_ids=[r["id"] for r in orphans_raw],
        )


def _checkpoint(r: sqlite3.Row | tuple[Any, ...]) -> Checkpoint:
    return Checkpoint(r[0], r[1], r[2], _opt_uuid(r[3]), r[4], r[5])


def _order_from_row(r: sqlite3.Row) -> Any:
    return order_from_row(
        _decoded(r, ("id", "user_id", "sr_id"), ("price", "quantity", "remaining_qty"))
    )


def _balance_from_row(r: sqlite3.Row) -> Any:
    return make_balance(
        uuid.UUID(r["user_id"]),
        r["asset"],
        decimal.Decimal(r["available"]),
        decimal.Decimal(r["frozen"]),
    )


def _epoch_from_row(r: sqlite3.Row) -> Any:
    return make_epoch(
        r["epoch_id"],
        from_name(PHASE, r["phase"], f"epochs row {r['epoch_id']}: phase"),
        r["batch_hash"],
        r["result_hash"],
        r["trade_count"] or 0,
        r["started_at_ns"],
        r["completed_at_ns"],
    )


def _owner_only(path: Path) -> None:
    """A database file someone else made (sqlx, a copy) may be readable by
    others: it holds every balance, so it is tightened to 0600, or, when
    that is not allowed, a warning says it stays open."""
    mode = path.stat().st_mode & 0o777
    if not mode & 0o077:
        return
    try:
        path.chmod(0o600)
    except OSError as e:
        log.warning(
            "%s is readable by others (mode %o) and could not be made owner-only: %s",
            path,
            mode,
            e,
        )


def _opt_uuid(text: str | None) -> uuid.UUID | None:
    return None if text is None else uuid.UUID(text)


def _now_ns() -> int:
    return time.time_ns()
