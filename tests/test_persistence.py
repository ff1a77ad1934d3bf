"""The facade: write-ahead appends, recovery from snapshot + AOF, compaction,
with the SQLite store and the PostgreSQL one; crashes are real process kills."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultkit import NO_COMPACTION, replay_digest, victim_stream

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.compaction import CompactionPolicy
from openmatch_persistence.persistence import SQLITE_FILENAME, Persistence
from openmatch_persistence.recovery import recover
from openmatch_persistence.store.base import HotRows, LoadedState
from openmatch_persistence.store.sqlite import SqliteStore
from openmatch_persistence.workload import take


def test_appends_from_many_threads_apply_in_aof_order(tmp_path: Path) -> None:
    # Each thread has its own consistent stream (its users, orders and
    # epochs); the threads interleave in whatever order the writer picks.
    chunks = [list(itertools.islice(victim_stream(0, t), 250)) for t in range(8)]
    ops = [op for chunk in chunks for op in chunk]
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:

        def run(chunk: list[om.Operation]) -> None:
            for op in chunk:
                p.append(op)

        threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Every acknowledged append is in the state, nothing else.
        assert p.position == p._journal.end
        live = p.digest()
        # Orders leave the hot state as they end: the open ones are held,
        # the ended ones are in the id window.
        received = {o.order.id for o in ops if isinstance(o, om.OrderReceived)}
        held = {o.id for o in p.state.orders()}
        assert all(p.state.retired(i) == "order" for i in received - held)
        assert held <= received and len(held) < len(received)
    # The state is the replay of the AOF as written, whatever the interleaving.
    written = [op for _, op in _core.scan(tmp_path / "aof")]
    assert sorted(map(om.encode, written)) == sorted(map(om.encode, ops))
    assert live == replay_digest(written)


def test_recovery_equals_full_replay(tmp_path: Path, database: str | None) -> None:
    ops = take(3000, seed=5)
    with Persistence.open(tmp_path, database_url=database, compaction=NO_COMPACTION) as p:
        p.append_many(ops[:1000])
        assert p.snapshot() == p.position
        for op in ops[1000:]:
            p.append(op)
        digest = p.digest()
    assert digest == replay_digest(ops)
    # Reopen: the database now holds everything (close flushes), so nothing replays.
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.digest() == digest
        assert p.recovery.replayed == 0
        assert p.recovery.snapshot == p.position
    with Persistence.open(tmp_path, database_url=database, ignore_snapshot=True) as p:
        assert p.recovery.snapshot is None
        assert p.recovery.replayed == len(ops)
        assert p.digest() == digest


CHILD = textwrap.dedent(
    """
    import os, sys
    from openmatch_persistence.persistence import Persistence
    from openmatch_persistence.compaction import CompactionPolicy
    from openmatch_persistence.workload import take
    data_dir, url, n, snap_at = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
    ops = take(n, seed=11)
    p = Persistence.open(data_dir, database_url=url, flush_interval=3600,
                         compaction=CompactionPolicy(max_bytes=None, max_age=None))
    for i, op in enumerate(ops):
        position = p.append(op)
        if i + 1 == snap_at:
            p.snapshot()
        print(position, flush=True)
    os.kill(os.getpid(), 9)
    """
)


def run_and_kill(data_dir: Path, database: str | None, n: int, snap_at: int) -> list[int]:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), database or "", str(n), str(snap_at)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -9, run.stderr
    return [int(line) for line in run.stdout.split()]


def test_killed_process_recovers_from_snapshot_plus_aof(
    tmp_path: Path, database: str | None
) -> None:
    acknowledged = run_and_kill(tmp_path, database, 1500, snap_at=600)
    assert len(acknowledged) == 1500
    with Persistence.open(tmp_path, database_url=database) as p:
        report = p.recovery
        assert report.snapshot is not None and report.snapshot >= acknowledged[599]
        assert report.replay_to == acknowledged[-1]
        assert report.replayed >= 1500 - 600 - 1  # the flusher may have moved on
        assert p.digest() == replay_digest(take(1500, seed=11))


def test_torn_tail_is_cut_and_acknowledged_operations_survive(tmp_path: Path) -> None:
    ops = take(300, seed=2)
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        positions = [p.append(op) for op in ops]
    segment = sorted((tmp_path / "aof").glob("*.aof"))[-1]
    with open(segment, "ab") as f:
        f.write(om.encode(ops[0])[:-3])  # an interrupted append
    with Persistence.open(tmp_path, ignore_snapshot=True) as p:
        assert p.recovery.torn_tail_cut == len(om.encode(ops[0])) - 3
        assert p.position == positions[-1]
        assert p.digest() == replay_digest(ops)


def test_close_lets_a_started_background_compaction_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compact = Persistence.compact
    entered = threading.Event()

    def slow_compact(self: Persistence) -> object:
        # The compaction thread is slow to get going: close() comes first.
        entered.set()
        time.sleep(0.3)
        return compact(self)

    monkeypatch.setattr(Persistence, "compact", slow_compact)
    policy = CompactionPolicy(max_bytes=16 * 1024, max_age=None)
    ops = take(400, seed=4)
    p = Persistence.open(tmp_path, compaction=policy)
    for op in ops:
        p.append(op)
        if entered.is_set():
            break
    assert entered.wait(10), "no compaction became due"
    p.close()
    assert p._compactions == 1
    assert p._last_compaction_error is None
    assert p.wait_compaction(0)
    with Persistence.open(tmp_path) as again:
        assert again.recovery.replayed == 0  # the image written at close covers all


def test_compaction_deletes_covered_segments_and_recovery_still_matches(
    tmp_path: Path, database: str | None, store_sql: Callable[[Path, str | None, str], None]
) -> None:
    ops = take(3000, seed=9)
    policy = CompactionPolicy(max_bytes=64 * 1024, max_age=None)
    with Persistence.open(tmp_path, database_url=database, compaction=policy) as p:
        for op in ops:
            p.append(op)
        p.compact()
        digest = p.digest()
        assert p._compactions >= 1
    starts = [s for s, _, _ in _core.list_segments(tmp_path / "aof")]
    assert starts[0] > 0, "the AOF's start was compacted away"
    assert digest == replay_digest(ops)
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.digest() == digest
    removed = f"compaction removed the AOF before position {starts[0]} in {tmp_path / 'aof'}:"
    with pytest.raises(
        om.RecoveryError, match=re.escape(f"--ignore-snapshot was given, but {removed}")
    ):
        Persistence.open(tmp_path, database_url=database, ignore_snapshot=True)
    # An image from before the AOF's start cannot be continued: the rows are.
    store_sql(tmp_path, database, "UPDATE persistence_state_image SET aof_position = 0")
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.recovery.snapshot_source == "rows"
        assert p.digest() == digest


CRASH_IN_COMPACTION = textwrap.dedent(
    """
    import os, sys
    import openmatch_persistence.persistence as persistence
    from openmatch_persistence.compaction import CompactionPolicy
    from openmatch_persistence.workload import take
    data_dir, step, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    p = persistence.Persistence.open(data_dir, flush_interval=3600,
                                     compaction=CompactionPolicy(max_bytes=None, max_age=None))
    p.append_many(take(last, seed=21)[first:])
    die = lambda *a, **k: os.kill(os.getpid(), 9)
    if step == "rotate":
        p._journal.rotate(); die()
    if step == "snapshot":
        persistence.delete_covered_segments = die
    if step == "delete":
        # The writer deletes one segment at a time (unlink, directory
        # fsync); a crash after the first leaves the rest.
        def delete_one(_writer, covered):
            starts = [s for s, _, _ in persistence._core.list_segments(p.aof_dir)]
            p._journal.delete_covered(min(covered, starts[1])); die()
        persistence.delete_covered_segments = delete_one
    p.compact()
    """
)


@pytest.mark.parametrize("step", ["rotate", "snapshot", "delete"])
def test_crash_at_each_compaction_step_loses_nothing(tmp_path: Path, step: str) -> None:
    for first, last in [(0, 1000), (1000, 2000)]:  # two rounds, several segments
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                CRASH_IN_COMPACTION,
                str(tmp_path),
                step,
                str(first),
                str(last),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == -9, run.stderr
    with Persistence.open(tmp_path) as p:
        assert p.digest() == replay_digest(take(2000, seed=21))


def test_recover_cli_json(tmp_path: Path) -> None:
    with Persistence.open(tmp_path) as p:
        p.append_many(take(500, seed=4))
        digest = p.digest()
    run = subprocess.run(
        [sys.executable, "-m", "openmatch_persistence", "recover", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(run.stdout)
    assert report["digest"] == digest
    assert {"orders", "retired_ids", "balances", "epochs", "replayed", "snapshot"} <= report.keys()
    assert report["snapshot"] is not None and report["replayed"] == 0


def test_files_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Persistence.open(data) as p:
        p.append_many(take(50))
    assert data.stat().st_mode & 0o077 == 0
    for path in [*data.rglob("*")]:
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path


def test_a_value_the_schema_cannot_hold_is_refused_before_the_append(tmp_path: Path) -> None:
    from decimal import Decimal

    with Persistence.open(tmp_path) as p:
        before = p.position
        with pytest.raises(om.InvalidValueError, match="available"):
            p.append(om.BalanceUpdated(uuid.UUID(int=1), "USDT", Decimal("0.000000001"), 0))
        assert p.position == before == p._journal.end
    assert os.path.getsize(sorted((tmp_path / "aof").glob("*.aof"))[-1]) == before


def test_snapshot_image_rows_and_damage_all_recover_the_same_state(
    tmp_path: Path,
    database: str | None,
    store_sql: Callable[[Path, str | None, str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ops = take(2500, seed=13)
    with Persistence.open(tmp_path, database_url=database, compaction=NO_COMPACTION) as p:
        p.append_many(ops[:1200])
        image_at = p.snapshot()
        p.append_many(ops[1200:])
    expected = replay_digest(ops)
    # A clean close wrote the image at the end: nothing to replay.
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.recovery.snapshot_source == "image"
        assert p.recovery.replayed == 0
        assert p.digest() == expected
        end = p.position
    assert image_at < end
    # A damaged image is refused and the rows are used instead.
    flip = "UPDATE persistence_state_image SET data = " + (
        # (SQLite's || makes text: cast back, or the image is unreadable, not damaged)
        "CAST(substr(data, 1, 20) || x'00' || substr(data, 22) AS BLOB)"
        if database is None
        else "overlay(data placing '\\x00'::bytea from 21 for 1)"
    )
    store_sql(tmp_path, database, flip)
    with caplog.at_level("WARNING", "openmatch_persistence.recovery"):
        with Persistence.open(tmp_path, database_url=database) as p:
            assert p.recovery.snapshot_source == "rows"
            assert p.digest() == expected
    assert f"state image at position {end} is damaged, using the rows: state image checksum" in (
        caplog.text
    )
    # No image at all: the rows again.
    store_sql(tmp_path, database, "DELETE FROM persistence_state_image")
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.recovery.snapshot_source == "rows"
        assert p.digest() == expected
    # A checkpoint written before the state's clock was kept: the rows of
    # the whole history (load_state), not their hot part.
    store_sql(tmp_path, database, "DELETE FROM persistence_state_image")
    store_sql(tmp_path, database, "UPDATE persistence_checkpoint SET clock_ns = NULL")
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.recovery.snapshot_source == "rows"
        assert (p.recovery.snapshot, p.recovery.replayed) == (end, 0)
        assert p.digest() == expected


def test_an_unreadable_state_image_leaves_the_rows_to_recover_from(
    tmp_path: Path, store_sql: Callable[[Path, str | None, str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    ops = take(300, seed=5)
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        p.append_many(ops)
    store_sql(tmp_path, None, "UPDATE persistence_state_image SET data = 'not a blob'")
    with caplog.at_level("WARNING", "openmatch_persistence.recovery"):
        with Persistence.open(tmp_path) as p:
            assert p.recovery.snapshot_source == "rows" and p.recovery.replayed == 0
            assert p.digest() == replay_digest(ops)
    assert "cannot read the state image, using the rows: " in caplog.text
    assert "the state image is str, not a blob" in caplog.text


def test_reading_the_state_while_other_threads_append_is_safe(tmp_path: Path) -> None:
    streams = [list(itertools.islice(victim_stream(17, t), 750)) for t in range(2)]
    errors: list[BaseException] = []
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                try:
                    p.state.digest()  # releases the GIL inside, under the journal's lock
                    assert p.state.violations() == []
                except BaseException as e:  # pragma: no cover - the failure we look for
                    errors.append(e)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            writers = [
                threading.Thread(target=lambda c=c: [p.append(op) for op in c]) for c in streams
            ]
            for t in writers:
                t.start()
            for t in writers:
                t.join()
        finally:
            stop.set()
            reader.join()
        assert p.state.position == p.position
    assert errors == []


def test_appends_wait_for_a_slow_flusher_but_not_for_a_failing_database(tmp_path: Path) -> None:
    ops = take(3000, seed=21)
    with Persistence.open(tmp_path / "slow", max_flush_lag=0.05, flush_interval=0.01) as p:
        write = p._store.write_changes

        def slow(batch: Any) -> Any:
            time.sleep(0.2)  # a database that takes writes, slowly
            return write(batch)

        p._store.write_changes = slow  # type: ignore[method-assign]
        for op in ops[:1500]:
            p.append(op)
        assert p.stats()["held_back_seconds"] > 0
    with Persistence.open(tmp_path / "down", max_flush_lag=0.05, flush_interval=0.01) as p:
        write = p._store.write_changes

        def down(batch: Any) -> Any:
            time.sleep(0.2)
            raise om.StoreError("the database is down (test)")

        p._store.write_changes = down  # type: ignore[method-assign]
        p.append(ops[0])
        deadline = time.monotonic() + 30
        while not p.stats()["flusher"]["consecutive_failures"] and time.monotonic() < deadline:
            time.sleep(0.01)
        held = p.stats()["held_back_seconds"]
        for op in ops[1:1500]:
            p.append(op)
        # Nothing held back while the database fails: the AOF has it all.
        assert p.stats()["flusher"]["consecutive_failures"] > 0
        assert p.stats()["held_back_seconds"] == held
        p._store.write_changes = write  # type: ignore[method-assign]
        # (close() flushes what the database missed once it is back)
    with Persistence.open(tmp_path / "down") as p:
        assert p.digest() == replay_digest(ops[:1500])


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION")),
    reason="glibc's malloc only",
)
def test_the_mmap_threshold_is_fixed_unless_the_environment_sets_it(tmp_path: Path) -> None:
    """glibc's growing mmap threshold fragments a long-running process's
    heap (docs/recovery-benchmark.md): opening a data directory fixes it
    (the function it calls), and leaves a value
    the environment gives alone."""
    probe = "from openmatch_persistence import _core; print(_core.fix_malloc_mmap_threshold())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    run = [sys.executable, "-c", probe]
    assert subprocess.run(run, env=env, capture_output=True, text=True).stdout == "True\n"
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    assert subprocess.run(run, env=env, capture_output=True, text=True).stdout == "False\n"


def test_compaction_is_due_past_either_threshold_and_never_when_disabled() -> None:
    policy = CompactionPolicy(max_bytes=1000, max_age=60.0)
    assert policy.due(1000, 59.9) is None  # at the byte limit, under the age
    assert policy.due(1001, None) == "the AOF holds 1001 bytes, over 1000"
    assert (
        policy.due(10, 60.0) == "its oldest record is 60 s old, over 60 s"
    )  # the age is inclusive
    assert policy.due(10, None) is None  # an empty AOF has no age
    off = CompactionPolicy(max_bytes=None, max_age=None)
    assert off.due(10**12, 10**9) is None


def test_aof_bytes_and_oldest_counts_every_segment(tmp_path: Path) -> None:
    from openmatch_persistence.compaction import aof_bytes_and_oldest

    aof = tmp_path / "aof"
    aof.mkdir()
    assert aof_bytes_and_oldest(aof) == (0, None)
    writer = _core.AofWriter(aof, fsync="always")
    writer.append_many(take(20, seed=3))
    writer.rotate()
    writer.append_many(take(5, seed=4))
    writer.close()
    segments = _core.list_segments(aof)
    assert len(segments) == 2
    assert aof_bytes_and_oldest(aof) == (sum(n for _, _, n in segments), 0)


def test_deleting_covered_segments_logs_what_went(caplog: pytest.LogCaptureFixture) -> None:
    # The operator's record of a compaction: how many segments and bytes
    # went, and the position that covers them; nothing when nothing went.
    from openmatch_persistence.compaction import delete_covered_segments

    class Writer:
        def __init__(self, result: tuple[int, int]) -> None:
            self.result = result

        def delete_covered(self, covered: int) -> tuple[int, int]:
            return self.result

    with caplog.at_level("INFO", logger="openmatch_persistence.compaction"):
        assert delete_covered_segments(Writer((0, 0)), 900) == (0, 0)
        assert caplog.records == []
        assert delete_covered_segments(Writer((2, 300)), 900) == (2, 300)
    [record] = caplog.records
    assert "deleted 2 segment(s), 300 bytes, covered by position 900" in record.getMessage()


def test_the_recovery_report_says_what_recovery_did() -> None:
    # What `recover` prints and `recover --json` emits.
    from openmatch_persistence.recovery import RecoveryReport

    report = RecoveryReport(
        snapshot=900, snapshot_source="rows", snapshot_epoch=7,
        loaded={"orders": 3, "balances": 2}, replayed=40, replay_from=900, replay_to=1500,
        torn_tail_cut=12, segments=2, orders=4, retired_ids=5, balances=6, epochs=8,
        seconds=0.25,
    )  # fmt: skip
    assert report.describe().splitlines() == [
        "snapshot: position 900 (epoch 7), from the database's rows: 3 orders, 2 balances",
        "replayed: 40 operations, positions 900..1500 over 2 segment(s)",
        "repaired: cut a torn tail of 12 bytes off the last segment",
        "verified: 4 open orders, 5 ids in the window, 6 balances, 8 epochs consistent",
        "took 0.250 s",
    ]
    assert report.to_dict()["loaded"] == {"orders": 3, "balances": 2}
    assert report.to_dict()["torn_tail_cut"] == 12 and len(report.to_dict()) == 14
    empty = dataclasses.replace(report, snapshot=None, torn_tail_cut=0)
    assert empty.describe().splitlines()[0::2] == [
        "snapshot: none loaded (replaying the AOF from its start)",
        "repaired: nothing (no torn tail)",
        "took 0.250 s",
    ]


def test_recovery_reports_its_snapshot_replay_repair_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ops = take(400, seed=6)
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        p.append_many(ops[:300])
        closed_at = p.position
        base = p.state
        at_close = {"orders": base.order_count, "retired_ids": base.retired_id_count,
                    "balances": base.balance_count, "epochs": base.epoch_count}  # fmt: skip
    with SqliteStore(tmp_path / SQLITE_FILENAME) as store:
        image = store.load_image()
    assert image is not None and image.position == closed_at and image.epoch_id is not None
    # Operations after the snapshot, as another writer left them, and a torn tail.
    writer = _core.AofWriter(tmp_path / "aof")
    writer.rotate()
    end = writer.append_many(ops[300:])
    writer.close()
    segment = sorted((tmp_path / "aof").glob("*.aof"))[-1]
    with open(segment, "ab") as f:
        f.write(om.encode(ops[0])[:-3])
    before = time.monotonic()
    with caplog.at_level("INFO", "openmatch_persistence.recovery"):
        p = Persistence.open(tmp_path, compaction=NO_COMPACTION)
    with p:
        assert 0.0 <= p.recovery.seconds <= time.monotonic() - before
        assert [r.getMessage() for r in caplog.records] == [
            f"recovered {tmp_path / 'aof'}: " + p.recovery.describe().replace("\n", "; ")
        ]
        state = p.state
        report = dataclasses.replace(p.recovery, seconds=0.0)
        assert report == om.RecoveryReport(
            snapshot=closed_at, snapshot_source="image", snapshot_epoch=image.epoch_id,
            loaded=at_close, replayed=100, replay_from=closed_at, replay_to=end,
            torn_tail_cut=len(om.encode(ops[0])) - 3, segments=1,
            orders=state.order_count, retired_ids=state.retired_id_count,
            balances=state.balance_count, epochs=state.epoch_count, seconds=0.0,
        )  # fmt: skip
        assert p.position == end
    # From the rows: the checkpoint's position and epoch.
    with SqliteStore(tmp_path / SQLITE_FILENAME) as store:
        store.execute("DELETE FROM persistence_state_image")
        checkpoint = store.checkpoint()
    assert checkpoint is not None and checkpoint.epoch_id != image.epoch_id
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        assert (p.recovery.snapshot_source, p.recovery.snapshot_epoch) == (
            "rows", checkpoint.epoch_id,
        )  # fmt: skip
        assert p.recovery.snapshot == checkpoint.position == end
    with Persistence.open(tmp_path, ignore_snapshot=True) as p:
        assert (p.recovery.snapshot, p.recovery.snapshot_source, p.recovery.loaded) == (
            None, None, {},
        )  # fmt: skip
        assert (p.recovery.replayed, p.recovery.replay_from, p.recovery.segments) == (400, 0, 2)


def test_snapshot_rows_that_break_an_invariant_are_refused_at_recovery(
    tmp_path: Path, store_sql: Callable[[Path, str | None, str], None]
) -> None:
    ops = take(300, seed=5)
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        p.append_many(ops)
    store_sql(tmp_path, None, "DELETE FROM persistence_state_image")
    store_sql(tmp_path, None, "UPDATE orders SET remaining_qty = '1000000' WHERE id = (SELECT id"
              " FROM orders WHERE status IN ('ACTIVE', 'PARTIALLY_FILLED') LIMIT 1)")  # fmt: skip
    with pytest.raises(om.RecoveryError, match=r"^the recovered state is inconsistent: remaining_"):
        Persistence.open(tmp_path)
    # The log itself is whole: without the snapshot it recovers.
    with Persistence.open(tmp_path, ignore_snapshot=True) as p:
        assert p.digest() == replay_digest(ops)


@pytest.mark.parametrize("table", ["persistence_state_image", "persistence_checkpoint"])
def test_a_snapshot_stamped_for_another_data_directory_is_refused(
    tmp_path: Path, store_sql: Callable[[Path, str | None, str], None], table: str
) -> None:
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        p.append_many(take(50, seed=3))
    other = uuid.UUID(int=9)
    if table == "persistence_checkpoint":
        store_sql(tmp_path, None, "DELETE FROM persistence_state_image")
    store_sql(tmp_path, None, f"UPDATE {table} SET data_dir_id = '{other}'")
    what = "state image" if table == "persistence_state_image" else "checkpoint"
    with pytest.raises(om.IdentityMismatchError, match=f"database's {what} was written for "
                       f"data directory id {other}, not this one"):  # fmt: skip
        Persistence.open(tmp_path)


def test_recovery_from_rows_reads_their_hot_part_not_the_whole_history(tmp_path: Path) -> None:
    ops = take(300, seed=4)
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        p.append_many(ops)
    calls: list[str] = []

    class Spy(SqliteStore):
        def load_state(self) -> LoadedState:
            calls.append("load_state")
            return super().load_state()

        def load_hot_state(self) -> HotRows | None:
            calls.append("load_hot_state")
            return super().load_hot_state()

    with Spy(tmp_path / SQLITE_FILENAME) as store:
        store.execute("DELETE FROM persistence_state_image")
        journal, report = recover(tmp_path / "aof", store)
        try:
            assert report.snapshot_source == "rows" and journal.state.digest() == replay_digest(ops)
        finally:
            journal.close()
    assert calls == ["load_hot_state"]
