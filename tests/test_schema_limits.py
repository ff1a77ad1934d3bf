"""The limits every append is checked against before it is written
(``openmatch_aof::store_fit``, ``_core.STORE_LIMITS``) and the table
descriptions both stores write through (``store/tables.py``) are the
migrated schema's: read from freshly migrated databases, not restated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from openmatch_persistence import _core
from openmatch_persistence.store import open_store, tables
from openmatch_persistence.store.sqlite import SqliteStore


@pytest.fixture
def columns(database_url: str) -> Iterator[dict[tuple[str, str], dict[str, Any]]]:
    """(table, column) -> its information_schema row, after the migrations."""
    schema = f"limits_{uuid.uuid4().hex[:12]}"
    store = open_store(database_url, schema=schema, max_connections=1)
    try:
        store.migrate()
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT table_name, column_name, data_type, character_maximum_length,"
                " numeric_precision, numeric_scale FROM information_schema.columns"
                " WHERE table_schema = %s",
                (schema,),
            ).fetchall()
        yield {
            (r[0], r[1]): {"type": r[2], "length": r[3], "precision": r[4], "scale": r[5]}
            for r in rows
        }
    finally:
        store.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


ENGINE_TABLES = ("orders", "trades", "orphan_trades", "balances", "epochs")


def test_every_decimal_column_is_the_numeric_the_appends_are_checked_for(
    columns: dict[tuple[str, str], dict[str, Any]],
) -> None:
    limits = _core.STORE_LIMITS
    numeric = {k: v for k, v in columns.items() if v["type"] == "numeric"}
    assert {t for t, _ in numeric} >= {"orders", "trades", "balances"}
    for (table, column), c in numeric.items():
        assert c["scale"] == limits["numeric_scale"], (table, column, c)
        assert c["precision"] - c["scale"] == limits["numeric_integer_digits"], (table, column)


def test_text_columns_hold_what_the_appends_are_checked_for(
    columns: dict[tuple[str, str], dict[str, Any]],
) -> None:
    limits = _core.STORE_LIMITS
    for table in ("orders", "trades", "orphan_trades"):
        assert columns[(table, "market")]["length"] == limits["market_len"]
        # base and quote are each part of the symbol, so no longer than it.
        for part in ("market_base", "market_quote"):
            length = columns[(table, part)]["length"]
            assert length is None or length >= limits["market_len"] - 2, (table, part)
    assert columns[("balances", "asset")]["length"] == limits["asset_len"]


def test_ids_and_timestamps_checked_as_bigint_are_bigint(
    columns: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for key in [
        ("orders", "batch_id"),
        ("orders", "sequence"),
        ("orders", "created_at_ns"),
        ("orders", "updated_at_ns"),
        ("trades", "batch_id"),
        ("trades", "executed_at_ns"),
        ("epochs", "epoch_id"),
    ]:
        assert columns[key]["type"] == "bigint", key
    # Every engine table was found (a schema typo would pass vacuously).
    assert {t for t, _ in columns} >= set(ENGINE_TABLES)


TABLES = (tables.ORDERS, tables.TRADES, tables.ORPHAN_TRADES, tables.BALANCES, tables.EPOCHS)


def test_the_table_descriptions_are_the_migrated_tables(
    columns: dict[tuple[str, str], dict[str, Any]],
) -> None:
    sqlite = SqliteStore(":memory:")
    sqlite.migrate()
    for table in TABLES:
        described = {*table.columns, *([table.stamp] if table.stamp else [])}
        in_postgres = {c for t, c in columns if t == table.name}
        in_sqlite = {r["name"] for r in sqlite.execute(f"PRAGMA table_info({table.name})")}
        assert described <= in_postgres, (table.name, described - in_postgres)
        assert described <= in_sqlite, (table.name, described - in_sqlite)
        key = [r["name"] for r in sqlite.execute(f"PRAGMA table_info({table.name})") if r["pk"]]
        assert tuple(key) == table.key, table.name
    sqlite.close()
