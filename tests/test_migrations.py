"""Migrations: sqlx's bookkeeping, checksums, refusal of changed files."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from openmatch_persistence.errors import MigrationError
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.store.migrate import (
    POSTGRES_MIGRATIONS,
    SQLITE_MIGRATIONS,
    discover,
    migrate_postgres,
    migrate_sqlite,
    sqlx_lock_id,
)

ENGINE_TABLES = {"orders", "trades", "balances", "epochs"}

pytest_plugins = ["test_store_support"]  # the store fixtures


def test_the_first_migration_is_the_engine_schema() -> None:
    first = discover(POSTGRES_MIGRATIONS)[0]
    assert first.path.name == "20260101000000_engine_schema.sql"
    assert first.description == "engine schema"
    assert first.sql.startswith("CREATE TABLE orders (\n    id UUID PRIMARY KEY,")
    assert "REFERENCES orders(id)" in first.sql


def test_both_dialects_have_the_same_versions_and_tables() -> None:
    pg = discover(POSTGRES_MIGRATIONS)
    lite = discover(SQLITE_MIGRATIONS)
    assert [m.version for m in pg] == [m.version for m in lite]
    assert [m.description for m in pg] == [m.description for m in lite]


@pytest.fixture
def pg_conn(database_url: str, pg_schema: str) -> Any:
    with psycopg.connect(
        database_url, autocommit=True, options=f"-c search_path={pg_schema}"
    ) as conn:
        yield conn


def _tables(conn: Any) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }


@pytest.mark.postgres
def test_postgres_fresh_apply_then_rerun_is_a_no_op(pg_conn: Any) -> None:
    versions = [m.version for m in discover(POSTGRES_MIGRATIONS)]
    assert migrate_postgres(pg_conn) == versions
    assert ENGINE_TABLES | {"_sqlx_migrations", "persistence_checkpoint"} <= _tables(pg_conn)
    rows = pg_conn.execute(
        "SELECT version, description, success, checksum, execution_time"
        " FROM _sqlx_migrations ORDER BY version"
    ).fetchall()
    for (version, description, success, checksum, elapsed), m in zip(
        rows, discover(POSTGRES_MIGRATIONS)
    ):
        assert (version, description, success) == (m.version, m.description, True)
        assert bytes(checksum) == hashlib.sha384(m.path.read_bytes()).digest()
        assert elapsed > 0  # nanoseconds, filled after the commit as sqlx does
    assert migrate_postgres(pg_conn) == []
    assert pg_conn.execute("SELECT count(*) FROM _sqlx_migrations").fetchone()[0] == len(rows)


def _copy_migrations(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.glob("*.sql"):
        shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.postgres
def test_postgres_refuses_a_changed_applied_migration(pg_conn: Any, tmp_path: Path) -> None:
    d = _copy_migrations(POSTGRES_MIGRATIONS, tmp_path / "m")
    migrate_postgres(pg_conn, d)
    changed = d / "20260101000100_durable_state.sql"
    changed.write_text(changed.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError) as e:
        migrate_postgres(pg_conn, d)
    assert "20260101000100" in str(e.value) and changed.name in str(e.value)


@pytest.mark.postgres
def test_postgres_failed_migration_leaves_nothing(pg_conn: Any, tmp_path: Path) -> None:
    d = _copy_migrations(POSTGRES_MIGRATIONS, tmp_path / "m")
    (d / "20260201000000_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT no_such_column FROM orders;\n"
    )
    with pytest.raises(MigrationError, match="20260201000000"):
        migrate_postgres(pg_conn, d)
    assert "half_done" not in _tables(pg_conn)
    versions = [r[0] for r in pg_conn.execute("SELECT version FROM _sqlx_migrations")]
    shipped = len(discover(POSTGRES_MIGRATIONS))
    assert 20260201000000 not in versions and len(versions) == shipped
    # A file that disappeared after being applied is refused too (as sqlx does).
    (d / "20260201000000_broken.sql").unlink()
    (d / "20260101000100_durable_state.sql").unlink()
    with pytest.raises(MigrationError, match=r"20260101000100 was applied .* missing"):
        migrate_postgres(pg_conn, d)


def test_sqlite_fresh_apply_rerun_and_changed_file(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    d = _copy_migrations(SQLITE_MIGRATIONS, tmp_path / "m")
    assert migrate_sqlite(conn, d) == [m.version for m in discover(d)]
    rows = conn.execute("SELECT version, description, checksum FROM _sqlx_migrations").fetchall()
    assert [(v, desc, bytes(c)) for v, desc, c in rows] == [
        (m.version, m.description, hashlib.sha384(m.path.read_bytes()).digest())
        for m in discover(d)
    ]
    assert migrate_sqlite(conn, d) == []
    first = d / "20260101000000_engine_schema.sql"
    first.write_bytes(first.read_bytes().replace(b"orders", b"orderz", 1))
    with pytest.raises(MigrationError, match=r"20260101000000 .*engine_schema\.sql"):
        migrate_sqlite(conn, d)


def test_sqlite_failed_migration_is_rolled_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    d = _copy_migrations(SQLITE_MIGRATIONS, tmp_path / "m")
    (d / "20260201000000_broken.sql").write_text("CREATE TABLE half_done (x);\nSELECT nope();\n")
    with pytest.raises(MigrationError, match="20260201000000"):
        migrate_sqlite(conn, d)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in names and "orders" in names
    assert not conn.in_transaction


def test_file_names_follow_sqlx(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "5_add_two_things.sql").write_text("SELECT 1;")
    (tmp_path / "notes_x.txt").write_text("ignored")
    [m] = discover(tmp_path)
    assert (m.version, m.description) == (5, "add two things")
    assert m.checksum == hashlib.sha384(b"SELECT 1;").digest()
    (tmp_path / "05_again.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="version 5"):
        discover(tmp_path)


def test_sqlx_lock_id_matches_sqlx() -> None:
    # 0x3d32ad9e * crc32("test") (CRC-32/ISO-HDLC = zlib's), as sqlx-postgres computes it
    assert sqlx_lock_id("test") == 0x3D32AD9E * 0xD87F7E0C


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openmatch_persistence", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_migrate_embedded_sqlite(tmp_path: Path) -> None:
    # The embedded database belongs to a data directory, which migrate does
    # not create (a mistyped --data-dir must not become a new one).
    r = _cli("migrate", cwd=tmp_path)
    assert r.returncode == 2 and "no such data directory" in r.stderr
    assert not (tmp_path / "openmatch-data").exists()
    Persistence.open(tmp_path / "openmatch-data").close()  # makes it, migrated
    assert "up to date" in _cli("migrate", cwd=tmp_path).stderr
    r = _cli("migrate", "--data-dir", str(tmp_path / "openmatch-data"), cwd=tmp_path)
    assert r.returncode == 0 and "up to date" in r.stderr


@pytest.mark.postgres
def test_cli_migrate_postgres_masks_the_password(database_url: str, pg_schema: str) -> None:
    url = database_url.replace("://postgres@", "://postgres:hunter2@")
    url += ("&" if "?" in url else "?") + f"options=-csearch_path%3D{pg_schema}"
    r = _cli("migrate", "--database-url", url, cwd=Path.cwd())
    assert r.returncode == 0, r.stderr
    shipped = len(discover(POSTGRES_MIGRATIONS))
    assert f"applied {shipped} migrations" in r.stderr and "hunter2" not in r.stderr + r.stdout
    bad = url.replace("127.0.0.1:5432", "127.0.0.1:1")
    r = _cli("migrate", "--database-url", bad, cwd=Path.cwd())
    assert r.returncode == 2 and "hunter2" not in r.stderr + r.stdout
    assert "openmatch-persistence: error:" in r.stderr
