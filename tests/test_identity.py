"""A data directory's identity (docs/storage.md, "Identity"): two data
directories given one database, on SQLite and PostgreSQL, with kill -9
between the steps; adoption and upgrade; strict paths in the CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from faultkit import (
    NO_COMPACTION,
    append_flush_and_kill,
    balance_op,
    fresh_schema,
    node_balances,
)

from openmatch_persistence import _core
from openmatch_persistence.cli import main
from openmatch_persistence.errors import IdentityMismatchError
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.store import open_store

A, B = 1, 2


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[str]:
    """One database URL that two data directories are (wrongly) given."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'shared.sqlite3'}"
        return
    with fresh_schema(database_url, "test_identity") as url:
        yield url


def sql(url: str, statement: str) -> None:
    """Runs one statement on the shared database (to fake an old schema)."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:") :]) as conn:
            conn.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)


def open_(data_dir: Path, url: str | None, **kw: object) -> Persistence:
    return Persistence.open(data_dir, database_url=url, compaction=NO_COMPACTION, **kw)  # type: ignore[arg-type]


def check_own(data_dir: Path, url: str | None, node: int, count: int, other: int) -> None:
    """``data_dir`` reopens with exactly its ``count`` acknowledged balances."""
    with open_(data_dir, url) as p:
        assert node_balances(p.state, node) == set(range(count))
        assert node_balances(p.state, other) == set()


def test_reproduction_1_the_second_data_dir_is_refused_before_it_writes(
    tmp_path: Path, shared: str
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with open_(a, shared) as pa:
        for n in range(20):
            pa.append(balance_op(A, n))
        pa.flush()
        with pytest.raises(IdentityMismatchError) as refused:
            open_(b, shared)
        e = refused.value
        # Both ids and both paths, in the message and as attributes.
        for part in (pa.identity.id, a.absolute(), b.absolute(), e.data_dir_id):
            assert str(part) in str(e)
        assert e.database_id == pa.identity.id and e.database_path == str(a.absolute())
        assert _core.list_segments(b / "aof") == []
        # B, on its own database, acknowledges 10 and compacts.
        with open_(b, None) as pb:
            for n in range(10):
                pb.append(balance_op(B, n))
            pb.compact()
    append_flush_and_kill(a, shared, A, 20, 5)  # and A goes on, killed -9
    check_own(a, shared, A, 25, B)
    check_own(b, None, B, 10, A)
    # --adopt never takes another data directory's database.
    with pytest.raises(IdentityMismatchError):
        open_(b, shared, adopt=True)


def test_reproduction_2_a_killed_data_dir_keeps_its_database(tmp_path: Path, shared: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    append_flush_and_kill(a, shared, A, 0, 20)
    with pytest.raises(IdentityMismatchError, match="belongs to data directory"):
        open_(b, shared)
    append_flush_and_kill(b, None, B, 0, 10)
    check_own(a, shared, A, 20, B)
    check_own(b, None, B, 10, A)


def test_a_healthy_aof_against_another_database_is_not_called_corrupt(
    tmp_path: Path, shared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    append_flush_and_kill(a, shared, A, 0, 20)
    append_flush_and_kill(b, None, B, 0, 10)
    before = (b / "aof").joinpath(_core.segment_file_name(0)).read_bytes()
    assert main(["recover", str(b), "--database-url", shared]) == 2
    err = capsys.readouterr().err
    assert "belongs to data directory" in err and "corrupt" not in err
    assert (b / "aof").joinpath(_core.segment_file_name(0)).read_bytes() == before
    check_own(b, None, B, 10, A)
    check_own(a, shared, A, 20, B)


def test_the_database_checks_the_identity_in_each_write(tmp_path: Path, shared: str) -> None:
    a = tmp_path / "a"
    p = open_(a, shared)
    for n in range(5):
        p.append(balance_op(A, n))
    p.flush()
    # Another data directory's id in the row (as if it had claimed it):
    sql(shared, "UPDATE persistence_identity SET data_dir_id = "
        "'00000000-0000-4000-8000-000000000001'")  # fmt: skip
    p.append(balance_op(A, 5))
    segments = _core.list_segments(p.aof_dir)
    with pytest.raises(IdentityMismatchError):
        p.flush()
    with pytest.raises(IdentityMismatchError):
        p.compact()  # deletes nothing
    assert [s[2] for s in _core.list_segments(p.aof_dir)][: len(segments)] == [
        s[2] for s in segments
    ]
    assert _core.list_segments(p.aof_dir)[0][0] == 0
    identity = p.identity.id
    with pytest.raises(IdentityMismatchError):
        p.close()  # its last flush is refused too; the AOF has it all
    with open_store(shared) as store:
        checkpoint = store.checkpoint()
        assert checkpoint is not None and checkpoint.data_dir_id == identity
        # An unbound store may not write to a claimed database either.
        image = store.load_image()
        with pytest.raises(IdentityMismatchError):
            store.write_image(10**9, None, b"x")
        assert store.load_image() == image
    with pytest.raises(IdentityMismatchError):
        open_(a, shared)
    sql(shared, f"UPDATE persistence_identity SET data_dir_id = '{identity}'")
    check_own(a, shared, A, 6, B)


def claimed_as(url: str) -> str | None:
    with open_store(url) as store:
        owner = store.identity()
    return None if owner is None else owner.claimed_as


def _strip_identity(data_dir: Path, url: str) -> None:
    """Makes ``data_dir`` and its database look as a version before
    identities left them."""
    (data_dir / "identity").unlink()
    sql(url, "DELETE FROM persistence_identity")
    sql(url, "UPDATE persistence_checkpoint SET data_dir_id = NULL")
    sql(url, "UPDATE persistence_state_image SET data_dir_id = NULL")


def test_a_database_with_a_snapshot_and_no_identity_is_adopted_only_when_asked(
    tmp_path: Path, shared: str
) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    append_flush_and_kill(a, shared, A, 0, 20)
    check_own(a, shared, A, 20, B)  # closes: an image too
    sql(shared, "DELETE FROM persistence_identity")
    with pytest.raises(IdentityMismatchError, match="--adopt"):
        open_(c, shared)
    with pytest.raises(IdentityMismatchError, match="--adopt"):
        open_(a, shared)  # its identity is not from an upgrade: ask
    with open_(a, shared, adopt=True) as p:
        assert node_balances(p.state, A) == set(range(20))
    assert claimed_as(shared) == "adopted"
    check_own(a, shared, A, 20, B)


def test_an_upgraded_data_dir_takes_its_old_database_when_its_aof_continues_it(
    tmp_path: Path, shared: str
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    append_flush_and_kill(a, shared, A, 0, 20)
    append_flush_and_kill(b, None, B, 0, 3)
    _strip_identity(a, shared)
    # B is "old" too, but its AOF ends before the shared database's snapshot.
    _strip_identity(b, f"sqlite:{b / 'state.sqlite3'}")
    with pytest.raises(IdentityMismatchError, match="--adopt"):
        open_(b, shared)
    append_flush_and_kill(a, shared, A, 20, 5)  # upgraded, then killed
    assert claimed_as(shared) == "upgraded"
    check_own(a, shared, A, 25, B)
    check_own(b, None, B, 3, A)  # its embedded database: taken on upgrade


@pytest.mark.parametrize("command", ["recover", "snapshot", "compact", "status"])
def test_commands_refuse_a_path_that_is_not_a_data_dir(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo"
    assert main([command, str(missing)]) == 2
    assert not missing.exists()
    assert "no such data directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([command, str(empty)]) == 2
    assert list(empty.iterdir()) == []
    assert "not a data directory" in capsys.readouterr().err


def test_aof_commands_take_a_data_dir_and_refuse_a_path_with_no_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    with open_(data, None) as p:
        p.append(balance_op(A, 0))
    assert main(["aof", "verify", str(data)]) == 0
    assert "clean" in capsys.readouterr().out
    assert main(["aof", "stats", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 1
    assert main(["aof", "dump", str(data)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["verify"], ["stats"], ["dump"], ["repair", "--yes"]):
        for path in (empty, tmp_path / "missing"):
            assert main(["aof", args[0], str(path), *args[1:]]) == 2
            captured = capsys.readouterr()
            assert "clean" not in captured.out and "error" in captured.err


def test_migrate_of_the_embedded_database_needs_an_existing_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENMATCH_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2  # the default ./openmatch-data does not exist
    assert list(tmp_path.iterdir()) == []
    assert "no such data directory" in capsys.readouterr().err
    assert main(["migrate", "--data-dir", str(tmp_path / "typo")]) == 2
    assert list(tmp_path.iterdir()) == []
