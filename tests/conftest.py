"""Shared fixtures. ``DATABASE_URL`` names the PostgreSQL that the
``postgres`` tests use (default: the local test database)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from faultkit import fresh_schema

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, database_url: str) -> Iterator[str | None]:
    """None for the embedded SQLite store, else a PostgreSQL URL whose
    search_path is a fresh schema, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_schema(database_url, "test_persistence") as url:
        yield url


#: Runs one SQL statement on a data directory's database (the ``database``
#: fixture's: None for its SQLite file).
StoreSql = Callable[[Path, "str | None", str], None]


def _store_sql(data_dir: Path, database: str | None, sql: str) -> None:
    if database is None:
        with sqlite3.connect(data_dir / "state.sqlite3") as conn:
            conn.execute(sql)
    else:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql)


@pytest.fixture
def store_sql() -> StoreSql:
    return _store_sql
