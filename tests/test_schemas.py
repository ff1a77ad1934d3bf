"""Several data directories in one PostgreSQL database, each in its own
schema (``schema=``, ``--schema``, ``OPENMATCH_DATABASE_SCHEMA``)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from faultkit import NO_COMPACTION, replay_digest, run_cli, schema_names, victim_stream

import openmatch_persistence as om
import openmatch_persistence.persistence as persistence_module
from openmatch_persistence import _core
from openmatch_persistence.cli import build_parser, main
from openmatch_persistence.compaction import delete_covered_segments
from openmatch_persistence.errors import IdentityMismatchError, InvalidValueError
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.store import check_schema, open_store
from openmatch_persistence.store.migrate import POSTGRES_MIGRATIONS, discover
from openmatch_persistence.store.postgres import PostgresStore

MIGRATIONS = len(discover(POSTGRES_MIGRATIONS))
HOSTILE = "x; DROP TABLE orders"


def _scalar(database_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _schemas_named_like(database_url: str, name: str) -> int:
    """Schemas whose name is ``name`` or any piece of it: other tests make
    schemas of their own at the same time, so a count of all of them is no
    evidence."""
    pieces = [p for p in re.split(r"[^A-Za-z0-9_]+", name) if p]
    query = "SELECT count(*) FROM pg_namespace WHERE nspname = %s OR nspname ILIKE ANY(%s)"
    return int(_scalar(database_url, query, name, [f"%{p}%" for p in pieces if len(p) > 1]))


@pytest.fixture
def two_schemas(database_url: str) -> Iterator[list[str]]:
    with schema_names(database_url, 2) as names:
        yield names


def test_schema_names_are_plain_identifiers(database_url: str) -> None:
    assert check_schema(None) is None
    assert check_schema("Tenant_1") == "tenant_1"  # folded, as PostgreSQL does
    assert check_schema("_" + "a" * 62) == "_" + "a" * 62
    for bad in ["", "1a", "a-b", "a b", "a" * 64, 'a"b', "é", HOSTILE, "a.b"]:
        with pytest.raises(InvalidValueError, match="not a plain SQL identifier"):
            check_schema(bad)
        with pytest.raises(InvalidValueError):
            PostgresStore(database_url, schema=bad)


def test_sqlite_takes_no_schema(tmp_path: Path) -> None:
    for url in [None, f"sqlite:{tmp_path / 'x.sqlite3'}"]:
        with pytest.raises(InvalidValueError, match="SQLite has no schemas"):
            open_store(url, sqlite_path=str(tmp_path / "y.sqlite3"), schema="tenant")
    with pytest.raises(InvalidValueError, match="SQLite has no schemas"):
        Persistence.open(tmp_path / "d", schema="tenant")
    assert not (tmp_path / "d").exists()  # refused before anything is made
    with Persistence.open(tmp_path / "d", schema="public") as p:  # the default is fine
        assert p.database.startswith("sqlite:")
    assert main(["migrate", "--data-dir", str(tmp_path / "m"), "--schema", "tenant"]) == 2


def test_the_urls_options_are_kept(database_url: str, two_schemas: list[str]) -> None:
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}options=-cstatement_timeout%3D12345"
    store = PostgresStore(url, schema=two_schemas[0])
    try:
        with store.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",)
            assert conn.execute("SHOW search_path").fetchone() == (two_schemas[0],)
    finally:
        store.close()


def _load(p: Persistence, round_: int, ops_per_thread: int, errors: list[BaseException]) -> None:
    """Two appender threads and one that flushes, snapshots and compacts
    meanwhile, until the appenders are done."""
    chunks = [list(itertools.islice(victim_stream(round_, t), ops_per_thread)) for t in range(2)]
    done = threading.Event()

    def append(chunk: list[om.Operation]) -> None:
        try:
            for op in chunk:
                p.append(op)
        except BaseException as e:
            errors.append(e)

    def maintain() -> None:
        try:
            while not done.is_set():
                p.flush()
                p.snapshot()
                p.compact()
                time.sleep(0.05)
        except BaseException as e:
            errors.append(e)

    appenders = [threading.Thread(target=append, args=(c,)) for c in chunks]
    maintainer = threading.Thread(target=maintain)
    for t in [*appenders, maintainer]:
        t.start()
    for t in appenders:
        t.join()
    done.set()
    maintainer.join()
    p.compact()


def test_two_data_dirs_in_two_schemas_side_by_side(
    tmp_path: Path, database_url: str, two_schemas: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compaction deletes segments; keep every one (a hard link) to replay
    # each data directory's whole AOF at the end.
    keep = {d: tmp_path / f"keep-{d}" for d in "ab"}
    real_delete = delete_covered_segments

    def link_segments() -> None:
        for d, kept in keep.items():
            kept.mkdir(exist_ok=True)
            for seg in (tmp_path / d / "aof").iterdir():
                # Both data directories' compactions run this at once: a
                # segment the other kept already, or has since deleted (after
                # keeping it), is no loss.
                if seg.is_file():
                    with contextlib.suppress(FileExistsError, FileNotFoundError):
                        os.link(seg, kept / seg.name)

    def keeping_delete(writer: Any, covered: int) -> tuple[int, int]:
        link_segments()
        return real_delete(writer, covered)

    monkeypatch.setattr(persistence_module, "delete_covered_segments", keeping_delete)
    opened = {
        d: Persistence.open(
            tmp_path / d, database_url=database_url, schema=s, compaction=NO_COMPACTION
        )
        for d, s in zip("ab", two_schemas, strict=True)
    }
    errors: list[BaseException] = []
    live = {}
    try:
        loads = [
            threading.Thread(target=_load, args=(p, round_, 1500, errors))
            for round_, p in enumerate(opened.values(), 1)
        ]
        for t in loads:
            t.start()
        for t in loads:
            t.join()
        assert errors == []
        for d, p in opened.items():
            live[d] = p.digest()
            assert p.stats()["compactions"] > 1
    finally:
        for p in opened.values():
            p.close()
    link_segments()

    ids = {}
    for (d, s), p in zip(zip("ab", two_schemas, strict=True), opened.values(), strict=True):
        assert p.database.endswith(f"(schema {s})")
        written = [op for _, op in _core.scan(keep[d])]
        assert len(written) == 3000
        assert live[d] == replay_digest(written)
        with Persistence.open(tmp_path / d, database_url=database_url, schema=s) as again:
            assert again.digest() == live[d]
            assert again.recovery.replayed == 0  # all of it from its own schema
        with psycopg.connect(database_url, autocommit=True) as conn:
            q = conn.execute
            assert q(f"SELECT count(*) FROM {s}._sqlx_migrations").fetchone() == (MIGRATIONS,)
            received = sum(1 for op in written if op.kind == "OrderReceived")
            assert q(f"SELECT count(*) FROM {s}.orders").fetchone() == (received,)
            ids[d] = {r[0] for r in q(f"SELECT id FROM {s}.orders").fetchall()}
            own = q(f"SELECT data_dir_id FROM {s}.persistence_identity").fetchall()
            assert own == [(p.identity.id,)]
            marks = q(
                f"SELECT c.data_dir_id, i.data_dir_id FROM {s}.persistence_checkpoint c,"
                f" {s}.persistence_state_image i"
            ).fetchall()
            assert marks == [(p.identity.id, p.identity.id)]
    assert ids["a"] and ids["b"] and not ids["a"] & ids["b"]


def test_a_data_dir_in_anothers_schema_is_refused(
    tmp_path: Path, database_url: str, two_schemas: list[str]
) -> None:
    sa, sb = two_schemas
    ops = list(itertools.islice(victim_stream(3, 0), 200))
    with Persistence.open(tmp_path / "a", database_url=database_url, schema=sa) as a:
        a.append_many(ops)
        digest = a.digest()
    with pytest.raises(IdentityMismatchError, match=rf"\(schema {sa}\)"):
        Persistence.open(tmp_path / "b", database_url=database_url, schema=sa, adopt=True)
    with Persistence.open(tmp_path / "b", database_url=database_url, schema=sb) as b:
        assert b.position == 0
        b.append_many(ops[:50])
    with Persistence.open(tmp_path / "a", database_url=database_url, schema=sa) as a:
        assert a.digest() == digest


def test_cli_schema_flag_and_variable(
    tmp_path: Path,
    database_url: str,
    two_schemas: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s1, s2 = two_schemas
    monkeypatch.delenv("OPENMATCH_DATABASE_SCHEMA", raising=False)
    assert main(["migrate", "--database-url", database_url, "--schema", s1]) == 0
    assert f"(schema {s1}): applied {MIGRATIONS} migrations" in capsys.readouterr().err
    monkeypatch.setenv("OPENMATCH_DATABASE_SCHEMA", s2)
    assert main(["migrate", "--database-url", database_url]) == 0
    assert f"(schema {s2}): applied" in capsys.readouterr().err
    for s in two_schemas:
        count = _scalar(database_url, f"SELECT count(*) FROM {s}._sqlx_migrations")
        assert count == MIGRATIONS
    monkeypatch.setenv("OPENMATCH_DATABASE_SCHEMA", "")  # empty: the default
    assert build_parser().parse_args(["migrate"]).schema is None

    data = tmp_path / "d"
    with Persistence.open(data, database_url=database_url, schema=s1) as p:
        p.append_many(list(itertools.islice(victim_stream(4, 0), 300)))
        digest = p.digest()
    args = ["recover", str(data), "--database-url", database_url, "--json"]
    assert main([*args, "--schema", s1]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["digest"] == digest and report["database"].endswith(f"(schema {s1})")
    monkeypatch.setenv("OPENMATCH_DATABASE_SCHEMA", s1)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == digest
    # The flag wins over the variable: s2 was never claimed, so it is taken.
    monkeypatch.setenv("OPENMATCH_DATABASE_SCHEMA", s2)
    assert main(["status", str(data), "--database-url", database_url, "--schema", s1]) == 0
    assert f"(schema {s1}), this data directory's" in capsys.readouterr().out


def test_cli_refuses_a_hostile_schema_name(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _schemas_named_like(database_url, HOSTILE) == 0
    result = run_cli("migrate", "--database-url", database_url, "--schema", HOSTILE)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a plain SQL identifier" in lines[0], result.stderr
    data = tmp_path / "d"
    assert main(["recover", str(data), "--database-url", database_url, "--schema", HOSTILE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a plain SQL identifier" in err[0]
    assert not data.exists()
    assert _schemas_named_like(database_url, HOSTILE) == 0
    assert _scalar(database_url, "SELECT to_regnamespace('x') IS NULL")
