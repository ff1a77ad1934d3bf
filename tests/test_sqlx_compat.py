"""sqlx's own `migrate run` and ours agree on the same directory and
database, both ways. Needs the `sqlx` binary (`cargo install sqlx-cli
--no-default-features --features postgres,rustls`); skipped where it is not
installed, which includes CI (building sqlx-cli takes minutes). Last run by
hand with sqlx-cli 0.9.0: see docs/storage.md."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import openmatch_persistence

MIGRATIONS = Path(openmatch_persistence.__file__).parent / "migrations"
SQLX = shutil.which("sqlx")

pytestmark = pytest.mark.skipif(SQLX is None, reason="the sqlx binary (sqlx-cli) is not installed")


@pytest.fixture
def schema_url(database_url: str) -> Iterator[tuple[str, str]]:
    schema = f"sqlx_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in database_url else "?"
    try:
        yield schema, f"{database_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def sqlx(*args: str) -> subprocess.CompletedProcess[str]:
    assert SQLX is not None
    return subprocess.run([SQLX, *args], capture_output=True, text=True, check=True)


def ours(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmatch_persistence", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        check=True,
    )


def bookkeeping(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY 1"
        ).fetchall()
    return [tuple(r) for r in rows]


def test_ours_then_sqlx(schema_url: tuple[str, str]) -> None:
    _, url = schema_url
    ours(url)
    before = bookkeeping(url)
    sqlx("migrate", "run", "--source", str(MIGRATIONS), "--database-url", url)
    assert bookkeeping(url) == before  # sqlx found nothing to do and no checksum to refuse


def test_sqlx_then_ours(schema_url: tuple[str, str], database_url: str) -> None:
    _, url = schema_url
    sqlx("migrate", "run", "--source", str(MIGRATIONS), "--database-url", url)
    before = bookkeeping(url)
    assert "up to date" in ours(url).stderr
    assert bookkeeping(url) == before
