"""Failed writes and fsyncs, through the facade: injected (the writer's
``_inject_failures`` hook: ENOSPC on the next pwrite, EIO on the next
fdatasync) and real (a 2 MiB file system that fills up).

Every time: the failed append and every later one raise WriterFailedError,
nothing failed is acknowledged or applied, and after a reopen every
acknowledged operation is on disk at its position and the recovered state
is the replay of what is on disk. The writer's own failure semantics
(never retrying an fsync, failing every waiter) are in tests/test_writer.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import NO_COMPACTION, frame_ends, log_records, replay_digest, victim_stream

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.persistence import SQLITE_FILENAME, Persistence
from openmatch_persistence.store import SqliteStore
from openmatch_persistence.workload import take

THREADS = 4


def assert_recovers(data_dir: Path, acked: dict[int, om.Operation]) -> list[om.Operation]:
    """Reopens ``data_dir``: every acknowledged operation is at its position
    and the state is the replay of the log (from the snapshot and without).
    Returns the operations in the log."""
    with Persistence.open(data_dir, compaction=NO_COMPACTION) as p:
        records = log_records(p.aof_dir)
        at = {position: om.encode(op) for position, op in records}
        lost = [pos for pos, op in acked.items() if at.get(pos) != om.encode(op)]
        assert not lost, f"acknowledged operations lost at {lost[:5]}"
        ops = [op for _, op in records]
        digest = replay_digest(ops)
        assert p.digest() == digest
        assert p.position == (records[-1][0] if records else 0)
    with Persistence.open(data_dir, compaction=NO_COMPACTION, ignore_snapshot=True) as p:
        assert p.digest() == digest
    return ops


@pytest.mark.parametrize("fault", ["write", "fsync"])
def test_an_injected_failure_is_never_acknowledged(tmp_path: Path, fault: str) -> None:
    ops = take(400, seed=12)
    acked: dict[int, om.Operation] = {}
    p = Persistence.open(tmp_path, compaction=NO_COMPACTION)
    for op in ops[:200]:
        acked[p.append(op)] = op
    if fault == "write":
        p._journal._inject_failures(writes=1)
    else:
        p._journal._inject_failures(fsyncs=1)
    syscall = "write" if fault == "write" else "fdatasync"
    with pytest.raises(om.WriterFailedError, match=syscall):
        p.append(ops[200])
    # Not acknowledged, the writer stays failed, and the state (which the
    # journal applied the append to) is never shown again: it may be ahead
    # of what is durable.
    for attempt in (
        lambda: p.append(ops[201]),
        lambda: p.append_many(ops[201:210]),
        p.compact,
        lambda: p.position,
        p.digest,
        lambda: p.state.order_count,
    ):
        with pytest.raises(om.WriterFailedError):
            attempt()
    # Nor handed to the database: the final flush fails, after closing all.
    with pytest.raises(om.WriterFailedError):
        p.close()
    logged = assert_recovers(tmp_path, acked)
    # A failed pwrite wrote nothing; a failed fsync came after its pwrite,
    # so the unacknowledged record may be there: either is a prefix.
    assert logged in (ops[:200], ops[:201])
    if fault == "write":
        assert logged == ops[:200]
    # And the reopened facade appends again.
    with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
        acked[p.append(ops[len(logged)])] = ops[len(logged)]
    assert_recovers(tmp_path, acked)


def run_threads(p: Persistence, round_: int, acks: list[tuple[int, int, int]]) -> list[object]:
    """THREADS threads append their streams until the writer fails; returns
    what ended each thread."""
    lock = threading.Lock()
    ends: list[object] = [None] * THREADS

    def run(thread: int) -> None:
        try:
            for index, op in enumerate(victim_stream(round_, thread)):
                position = p.append(op)
                with lock:
                    acks.append((thread, index, position))
        except om.WriterFailedError as e:
            ends[thread] = e

    workers = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    return ends


@pytest.mark.parametrize("fault", ["write", "fsync"])
def test_a_failure_under_concurrent_appends_fails_every_thread_and_loses_nothing(
    tmp_path: Path, fault: str
) -> None:
    acks: list[tuple[int, int, int]] = []
    p = Persistence.open(tmp_path, compaction=NO_COMPACTION)
    if True:

        def inject() -> None:
            while len(acks) < 300:
                time.sleep(0.001)
            if fault == "write":
                p._journal._inject_failures(writes=1)
            else:
                p._journal._inject_failures(fsyncs=1)

        injector = threading.Thread(target=inject)
        injector.start()
        ends = run_threads(p, 0, acks)
        injector.join()
        assert all(isinstance(e, om.WriterFailedError) for e in ends), ends
        durable = p._journal.durable_position
        assert p._journal.failed
        # No acknowledgement past what was durable when the writer failed.
        assert max(pos for _, _, pos in acks) <= durable
        with pytest.raises(om.WriterFailedError):
            p.close()
    streams = {t: victim_stream(0, t) for t in range(THREADS)}
    sent = {t: [next(streams[t]) for _ in range(len(acks) + 2)] for t in range(THREADS)}
    acked = {pos: sent[t][i] for t, i, pos in acks}
    logged = assert_recovers(tmp_path, acked)
    # Each thread's operations in the log are a prefix of its stream.
    encoded = {t: [om.encode(op) for op in ops] for t, ops in sent.items()}
    seen = [0] * THREADS
    for op in logged:
        e = om.encode(op)
        owners = [t for t in range(THREADS) if encoded[t][seen[t]] == e]
        assert owners, f"{op.kind} is not the next operation of any thread: {seen}"
        seen[owners[0]] += 1


def test_a_failed_background_fsync_under_everysec_stops_appends(tmp_path: Path) -> None:
    ops = take(3000, seed=13)
    acked: dict[int, om.Operation] = {}
    p = Persistence.open(tmp_path, fsync="everysec", compaction=NO_COMPACTION)
    p._journal._inject_failures(fsyncs=1)
    deadline = time.monotonic() + 10  # the background fsync runs within a second
    with pytest.raises(om.WriterFailedError, match="fdatasync"):
        for op in ops:
            assert time.monotonic() < deadline, "the failed fsync went unnoticed"
            acked[p.append(op)] = op
            time.sleep(0.001)
    assert p._journal.failed and acked
    # The state holds acknowledged operations that never became durable:
    # the final flush refuses to put them into the database (write-ahead).
    with pytest.raises(om.WriterFailedError):
        p.close()
    # Acknowledged appends of that second are in the documented loss window
    # after a power loss; a process that lives on loses none of them.
    assert_recovers(tmp_path, acked)


# --- a full disk ---------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_full_disk_fails_appends_clearly_and_loses_nothing(small_fs: Path) -> None:
    data_dir = small_fs / "data"
    ops = take(20_000, seed=14)
    acked = dict(zip(frame_ends(ops[:100]), ops[:100]))
    p = Persistence.open(data_dir, compaction=NO_COMPACTION)
    if True:
        p.append_many(ops[:100])
        p.snapshot()
        # Leave about 300 KiB: room for some appends, then ENOSPC.
        fs = os.statvfs(small_fs)
        filler = small_fs / "filler"
        filler.write_bytes(bytes(max(0, fs.f_bavail * fs.f_frsize - 300 * 1024)))
        with pytest.raises(om.WriterFailedError) as caught:
            for op in ops[100:]:
                acked[p.append(op)] = op
        assert "No space left on device" in str(caught.value)
        assert str(p.aof_dir) in str(caught.value), "the error names the file"
        assert len(acked) > 200, "appends went on until the disk was full"
        with pytest.raises(om.WriterFailedError):
            p.append(ops[-1])
        position = max(acked)
        # close() raises: the final flush may not hand the state (which may
        # be ahead of what is durable) to the database. The AOF holds every
        # acknowledged operation (docs/storage.md).
        with pytest.raises(om.WriterFailedError):
            p.close()
    # Reopening on the still full disk: a torn tail (the partial write) is
    # backed up before it is cut, which needs room. Without it the open
    # fails clearly and changes nothing...
    aof_files = sorted((f.name, f.stat().st_size) for f in p.aof_dir.iterdir())
    try:
        p = Persistence.open(data_dir, compaction=NO_COMPACTION)
    except om.AofError as e:
        assert "No space left on device" in str(e) and ".bak" in str(e)
        assert sorted((f.name, f.stat().st_size) for f in p.aof_dir.iterdir()) == aof_files
        filler.unlink()
        p = Persistence.open(data_dir, compaction=NO_COMPACTION)
    try:
        # ...and with room, recovery keeps everything acknowledged.
        records = log_records(p.aof_dir)
        logged = [op for _, op in records]
        assert logged == ops[: len(logged)]
        assert records[-1][0] >= position
        assert p.digest() == replay_digest(logged)
    finally:
        with contextlib.suppress(om.StoreError):
            p.close()
    # ...and once there is room again, appends go on.
    filler.unlink(missing_ok=True)
    assert assert_recovers(data_dir, acked) == logged
    with Persistence.open(data_dir, compaction=NO_COMPACTION) as p:
        for op in ops[len(logged) : len(logged) + 100]:
            acked[p.append(op)] = op
    assert assert_recovers(data_dir, acked) == ops[: len(logged) + 100]


# --- a power loss under a lazy fsync policy ------------------------------------------


def power_loss(p: Persistence) -> None:
    """Ends ``p`` as a power loss would: the AOF keeps what was fsynced and
    nothing else (the database is a separate, durable system)."""
    p._flusher.stop(final_flush=False)  # first: it may still make more durable
    durable = p._journal.durable_position
    p._journal.close()  # releases the lock (and fsyncs; undone below)
    p._store.close()
    for start, path, length in _core.list_segments(p.aof_dir):
        if start + length > durable:
            os.truncate(path, max(0, durable - start))


@pytest.mark.parametrize("fsync", ["everysec", "no"])
def test_the_database_never_gets_ahead_of_the_durable_aof(
    tmp_path: Path, fsync: _core.FsyncPolicy
) -> None:
    # The write-ahead rule: a change may reach the database only once the
    # AOF records behind it are durable, or a power loss leaves a database
    # that is ahead of the AOF, which recovery must refuse.
    ops = take(1500, seed=15)
    p = Persistence.open(tmp_path, fsync=fsync, flush_interval=3600, compaction=NO_COMPACTION)
    p.append_many(ops[:1000])
    checkpoint = p.snapshot()
    assert checkpoint <= p._journal.durable_position
    for op in ops[1000:]:
        p.append(op)  # acknowledged, maybe not durable: the policy's loss window
    power_loss(p)
    logged = assert_recovers(tmp_path, {})
    assert logged == ops[: len(logged)] and len(logged) >= 1000


@pytest.mark.parametrize("fsync", ["everysec", "no"])
def test_the_background_flusher_never_puts_the_database_ahead_of_the_durable_aof(
    tmp_path: Path, fsync: _core.FsyncPolicy
) -> None:
    # The flusher runs every 10 ms while the appends go on; the everysec
    # thread's fsyncs are held (a slow disk), so under both policies the
    # only fsyncs are the ones the flusher itself waits for. A flusher that
    # took changes without waiting for them to be durable would write a
    # checkpoint past what a power loss leaves of the AOF.
    ops = take(1500, seed=16)
    p = Persistence.open(tmp_path, fsync=fsync, flush_interval=0.01, compaction=NO_COMPACTION)
    p._journal._hold_io("background_fsync", True)
    for op in ops[:1000]:
        p.append(op)
    caught_up = p.position
    deadline = time.monotonic() + 60
    while p._flusher.stats().flushed_position != caught_up:
        assert time.monotonic() < deadline, "the flusher never caught up"
        time.sleep(0.01)
    for op in ops[1000:]:
        p.append(op)  # acknowledged, maybe not durable nor flushed
    power_loss(p)
    with SqliteStore(tmp_path / SQLITE_FILENAME) as store:
        checkpoint = store.checkpoint()
    assert checkpoint is not None and checkpoint.position >= caught_up
    aof_end = max(start + length for start, _, length in _core.list_segments(tmp_path / "aof"))
    assert checkpoint.position <= aof_end, "the database is ahead of the durable AOF"
    logged = assert_recovers(tmp_path, {})
    assert logged == ops[: len(logged)] and len(logged) >= 1000
