"""The engine's tables as both stores write them: each table's columns in
the order a flush's rows carry them, its key, and the column the database
stamps when a row changes. ``sqlite.py`` (rows as tuples) and
``postgres.py`` (a SELECT over its COPY table) build their upserts from
these, so the two cannot disagree on a column. The order and trade columns
are those of the rows that rows.rs builds (``_core.SQLITE_ORDER_COLUMNS``,
``SQLITE_TRADE_COLUMNS``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openmatch_persistence import _core

Dialect = Literal["postgres", "sqlite"]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    #: Set when a row's values change, never compared (balances' updated_at).
    stamp: str | None = None

    @property
    def values(self) -> tuple[str, ...]:
        """The columns an update may change."""
        return tuple(c for c in self.columns if c not in self.key)

    def upsert(self, source: str, dialect: Dialect) -> str:
        """``INSERT ... {source} ON CONFLICT DO UPDATE`` that leaves a row
        alone when no value changed, so that writing the same rows again
        writes nothing (not even a new row version). ``source`` is a
        ``SELECT`` of the columns in order, or for SQLite None-free
        ``VALUES`` (see :meth:`values_clause`)."""
        columns = list(self.columns)
        sets = [f"{c} = excluded.{c}" for c in self.values]
        if self.stamp is not None:
            if dialect == "postgres":
                sets.append(f"{self.stamp} = now()")
            else:  # SQLite: the row carries its own stamp, the last column
                columns.append(self.stamp)
                sets.append(f"{self.stamp} = excluded.{self.stamp}")
        old = ", ".join(f"t.{c}" for c in self.values)
        new = ", ".join(f"excluded.{c}" for c in self.values)
        # IS NOT is SQLite's IS DISTINCT FROM (which it has only since 3.39).
        distinct = "IS DISTINCT FROM" if dialect == "postgres" else "IS NOT"
        return (
            f"INSERT INTO {self.name} AS t ({', '.join(columns)}) {source}"
            f" ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {', '.join(sets)}"
            f" WHERE ({old}) {distinct} ({new})"
        )

    def values_clause(self, mark: str) -> str:
        """``VALUES (?, ...)`` for every column (and the stamp)."""
        n = len(self.columns) + (self.stamp is not None)
        return f"VALUES ({', '.join([mark] * n)})"


ORDERS = Table("orders", tuple(_core.SQLITE_ORDER_COLUMNS), ("id",))
TRADES = Table("trades", tuple(_core.SQLITE_TRADE_COLUMNS), ("id",))
#: Trades whose orders the database does not have (yet), and the AOF
#: position of the flush that wrote them.
ORPHAN_TRADES = Table("orphan_trades", (*TRADES.columns, "aof_position"), ("id",))
BALANCES = Table(
    "balances",
    ("user_id", "asset", "available", "frozen", "available_scale", "frozen_scale"),
    ("user_id", "asset"),
    stamp="updated_at",
)
EPOCHS = Table(
    "epochs",
    (
        "epoch_id", "phase", "batch_hash", "result_hash", "trade_count", "started_at",
        "completed_at", "started_at_ns", "completed_at_ns",
    ),
    ("epoch_id",),
)  # fmt: skip
