"""Database faults: the local PostgreSQL stopped or restarted during flushes
and during a snapshot, a process killed while its snapshot transaction is
open and the server is down, a crash between a snapshot and the deletion of
the segments it covers, and a database that is lost or does not match the
AOF. Every time the recovered state equals the full replay of the log, or
recovery refuses with a message saying why.

These tests stop the shared server: each downtime is kept to a pg_ctl stop
and start, and a ``finally`` always starts it again. The flusher alone
through a server restart is in tests/test_flusher_pg.py."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from faultkit import (
    HAVE_CLUSTER,
    NO_COMPACTION,
    ensure_running,
    fresh_schema,
    log_records,
    pg_ctl,
    replay_digest,
    victim_stream,
)

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.store.postgres import PostgresStore
from openmatch_persistence.workload import take

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
needs_cluster = pytest.mark.skipif(not HAVE_CLUSTER, reason="no local cluster to stop")


@pytest.fixture
def pg(database_url: str) -> Iterator[str]:
    with fresh_schema(database_url, "test_faults_db") as url:
        yield url


def postmaster_start(database_url: str) -> datetime.datetime:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    start: datetime.datetime = row[0]
    return start


def assert_recovers_to_full_replay(data_dir: Path, url: str) -> tuple[str, int | None]:
    """Reopens: the state (snapshot + AOF) equals the replay of the whole
    log, and so does a replay that ignores the snapshot. Returns the digest
    and the snapshot position used."""
    with Persistence.open(data_dir, database_url=url, compaction=NO_COMPACTION) as p:
        ops = [op for _, op in log_records(p.aof_dir)]
        digest = replay_digest(ops)
        assert p.digest() == digest
        snapshot = p.recovery.snapshot
    with Persistence.open(data_dir, database_url=url, ignore_snapshot=True) as p:
        assert p.digest() == digest
    return digest, snapshot


@needs_cluster
def test_restart_during_flushes_under_load(tmp_path: Path, pg: str, database_url: str) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    with Persistence.open(
        tmp_path, database_url=pg, flush_interval=0.01, compaction=NO_COMPACTION
    ) as p:

        def engine(thread: int) -> None:
            try:
                for op in victim_stream(0, thread):
                    if stop.is_set():
                        return
                    p.append(op)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=engine, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            started = postmaster_start(database_url)
            restarted = pg_ctl("restart")
            assert restarted.returncode == 0, restarted.stderr
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
            ensure_running(database_url)
        assert not errors, "appends do not depend on the database"
        # A flush either failed and was retried, or waited for a connection
        # until the server was back (the pool's timeout is 5 s).
        assert postmaster_start(database_url) > started, "the server restarted"
        assert p.stats()["flusher"]["flushes"] > 0
        position = p.position
    # close() flushed everything once the server was back.
    _, snapshot = assert_recovers_to_full_replay(tmp_path, pg)
    assert snapshot == position


def hang_in_snapshot(store: PostgresStore, in_tx: threading.Event, go: threading.Event) -> None:
    """Makes the store's next flush stop inside its transaction, after its
    first COPY, until ``go``."""

    def copy_text(cur: psycopg.Cursor[object], table: str, data: bytes) -> None:
        PostgresStore._copy_text(cur, table, data)
        if not in_tx.is_set():
            in_tx.set()
            go.wait(60)

    store._copy_text = copy_text  # type: ignore[method-assign]


@needs_cluster
def test_stop_during_a_snapshot_then_the_server_comes_back(
    tmp_path: Path, pg: str, database_url: str
) -> None:
    ops = take(2500, seed=31)
    with Persistence.open(
        tmp_path, database_url=pg, flush_interval=3600, compaction=NO_COMPACTION
    ) as p:
        p.append_many(ops[:1000])
        first = p.snapshot()
        p.append_many(ops[1000:2000])
        in_tx, go = threading.Event(), threading.Event()
        assert isinstance(p._store, PostgresStore)
        hang_in_snapshot(p._store, in_tx, go)
        outcome: list[object] = []

        def take_snapshot() -> None:
            try:
                outcome.append(p.snapshot())
            except om.OpenMatchPersistenceError as e:
                outcome.append(e)

        snapshotter = threading.Thread(target=take_snapshot)
        snapshotter.start()
        try:
            assert in_tx.wait(30)
            stopped = pg_ctl("stop")
            assert stopped.returncode == 0, stopped.stderr
            go.set()
            snapshotter.join()
            # The AOF is the source of truth: appends go on without the database...
            for op in ops[2000:2500]:
                p.append(op)
            # ...and a compaction whose snapshot fails deletes nothing.
            with pytest.raises(om.StoreError):
                p.compact()
            assert _core.aof_start(p.aof_dir) == 0
        finally:
            go.set()
            ensure_running(database_url)
        del p._store._copy_text  # the hook of hang_in_snapshot
        assert len(outcome) == 1 and isinstance(outcome[0], om.StoreError), outcome
        with psycopg.connect(pg) as conn:
            row = conn.execute("SELECT aof_position FROM persistence_checkpoint").fetchone()
        assert row is not None and row[0] == first, "the broken transaction left nothing"
        assert p.snapshot() == p.position, "the next snapshot works once the server is back"
        position = p.position
    digest, snapshot = assert_recovers_to_full_replay(tmp_path, pg)
    assert snapshot == position
    assert digest == replay_digest(ops)


CRASH_IN_SNAPSHOT = textwrap.dedent(
    """
    import sys, threading, time
    from openmatch_persistence.persistence import Persistence
    from openmatch_persistence.store.postgres import PostgresStore
    from faultkit import NO_COMPACTION
    from openmatch_persistence.workload import take
    data_dir, url = sys.argv[1], sys.argv[2]
    ops = take(2000, seed=32)
    p = Persistence.open(data_dir, database_url=url, flush_interval=3600,
                         compaction=NO_COMPACTION)
    p.append_many(ops[:1000])
    print("snapshot", p.snapshot(), flush=True)
    p.append_many(ops[1000:])
    def copy_text(cur, table, data):
        PostgresStore._copy_text(cur, table, data)
        print("in-transaction", flush=True)
        time.sleep(3600)
    p._store._copy_text = copy_text
    p.snapshot()
    """
)


@needs_cluster
def test_crash_during_a_snapshot_while_the_server_is_down(
    tmp_path: Path, pg: str, database_url: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_IN_SNAPSHOT, str(tmp_path), pg],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )
    assert child.stdout is not None
    try:
        first = int(child.stdout.readline().split()[1])
        assert child.stdout.readline().strip() == "in-transaction"
        stopped = pg_ctl("stop")
        assert stopped.returncode == 0, stopped.stderr
        child.kill()
        child.wait()
    finally:
        child.kill()
        child.stdout.close()
        ensure_running(database_url)
    digest, snapshot = assert_recovers_to_full_replay(tmp_path, pg)
    assert snapshot == first, "recovery starts from the last committed snapshot"
    assert digest == replay_digest(take(2000, seed=32))


CRASH_IN_COMPACTION = textwrap.dedent(
    """
    import os, sys
    import openmatch_persistence.persistence as persistence
    from faultkit import NO_COMPACTION
    from openmatch_persistence.workload import take
    data_dir, url, step, first, last = sys.argv[1:3] + [sys.argv[3]] + list(map(int, sys.argv[4:]))
    p = persistence.Persistence.open(data_dir, database_url=url, flush_interval=3600,
                                     compaction=NO_COMPACTION)
    p.append_many(take(last, seed=33)[first:])
    die = lambda *a, **k: os.kill(os.getpid(), 9)
    if step == "snapshot":  # after the snapshot commits, before any deletion
        persistence.delete_covered_segments = die
    if step == "delete":  # after the first segment is deleted (and its directory fsynced)
        def delete_one(_journal, covered):
            starts = [s for s, _, _ in persistence._core.list_segments(p.aof_dir)]
            p._journal.delete_covered(min(covered, starts[1])); die()
        persistence.delete_covered_segments = delete_one
    p.compact()
    """
)


@pytest.mark.parametrize("step", ["snapshot", "delete"])
def test_crash_between_snapshot_and_segment_deletion(tmp_path: Path, pg: str, step: str) -> None:
    for first, last in [(0, 1000), (1000, 2000), (2000, 3000)]:
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                CRASH_IN_COMPACTION,
                str(tmp_path),
                pg,
                step,
                *map(str, (first, last)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parent,
        )
        assert run.returncode == -9, run.stderr
    with Persistence.open(tmp_path, database_url=pg, compaction=NO_COMPACTION) as p:
        assert p.recovery.snapshot is not None
        assert p.digest() == replay_digest(take(3000, seed=33))
        starts = [s for s, _, _ in _core.list_segments(p.aof_dir)]
    if step == "delete":
        assert starts[0] > 0, "some segments were deleted before the crash"


def test_a_lost_database_is_rebuilt_from_the_aof_or_refused(
    tmp_path: Path, pg: str, database_url: str
) -> None:
    ops = take(3000, seed=34)
    with Persistence.open(tmp_path, database_url=pg, compaction=NO_COMPACTION) as p:
        p.append_many(ops[:2000])
        p.snapshot()
    # The database is lost (a new, empty one): the whole AOF is still there.
    with fresh_schema(database_url, "test_faults_db") as empty:
        with Persistence.open(tmp_path, database_url=empty, compaction=NO_COMPACTION) as p:
            assert p.recovery.snapshot is None and p.recovery.replayed == 2000
            assert p.digest() == replay_digest(ops[:2000])
            p.append_many(ops[2000:])
            p.compact()  # now the AOF's start exists only in this database
        with Persistence.open(tmp_path, database_url=empty) as p:
            assert p.digest() == replay_digest(ops)
    # That database is lost too: recovery refuses instead of starting short.
    with fresh_schema(database_url, "test_faults_db") as empty:
        with pytest.raises(om.RecoveryError, match="compaction removed the AOF before position"):
            Persistence.open(tmp_path, database_url=empty)


def test_a_database_ahead_of_the_aof_is_refused(tmp_path: Path, pg: str) -> None:
    ops = take(500, seed=35)
    with Persistence.open(tmp_path, database_url=pg, compaction=NO_COMPACTION) as p:
        p.append_many(ops)
        position = p.snapshot()
    # The AOF lost its tail (no fsync before a power loss, say) but the
    # database has it: the two no longer describe one history.
    segment = _core.list_segments(tmp_path / "aof")[-1][1]
    with open(segment, "r+b") as f:
        f.truncate(position - len(om.encode(ops[-1])))
    with pytest.raises(om.RecoveryError, match=f"covers AOF position {position}, past"):
        Persistence.open(tmp_path, database_url=pg)


def test_compaction_relies_only_on_commits_made_durable_under_synchronous_commit_off(
    tmp_path: Path, pg: str
) -> None:
    """A server (here: the session) tuned with synchronous_commit = off
    acknowledges commits before their WAL is on disk. Compaction deletes
    segments once the snapshot's transactions commit, so those must commit
    with synchronous_commit = on. A trigger records the setting in force in
    the transaction that writes the snapshot's image."""
    off = f"{pg}%20-csynchronous_commit%3Doff"
    with psycopg.connect(off, autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with Persistence.open(tmp_path, database_url=off, compaction=NO_COMPACTION) as p:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute("CREATE TABLE seen_commit (setting text)")
            conn.execute(
                "CREATE FUNCTION record_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN INSERT INTO seen_commit"
                " VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$"
            )
            conn.execute(
                "CREATE TRIGGER record_commit AFTER INSERT OR UPDATE ON persistence_state_image"
                " FOR EACH ROW EXECUTE FUNCTION record_commit()"
            )
        p.append_many(take(300))
        report = p.compact()
        assert report.deleted_segments >= 1
    with psycopg.connect(pg, autocommit=True) as conn:
        seen = [r[0] for r in conn.execute("SELECT setting FROM seen_commit").fetchall()]
    # The compaction's snapshot and the clean close each wrote an image.
    assert seen and set(seen) == {"on"}, seen
