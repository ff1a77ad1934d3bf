"""The durable writer from Python: group commit across threads, positions,
asyncio, the directory lock, file modes, recovery and the failure model."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from openmatch_persistence import (
    AofError,
    AofWriter,
    BufferSealed,
    ChecksumMismatchError,
    CorruptFrameError,
    EpochAdvanced,
    EpochPhase,
    InvalidTypeError,
    InvalidValueError,
    Operation,
    OversizedFrameError,
    WriterClosedError,
    WriterFailedError,
    WriterLockedError,
    _core,
    decode_all,
    encode,
)
from openmatch_persistence.bench.workload import order_ops


def epoch(i: int) -> EpochAdvanced:
    return EpochAdvanced(i, EpochPhase.SEAL)


def read_log(directory: Path) -> list[tuple[int, Operation]]:
    """Every record of the directory's segments with its end position."""
    records: list[tuple[int, Operation]] = []
    expected_start = 0
    for segment in sorted(directory.glob("*.aof")):
        start = int(segment.name.removesuffix(".aof"))
        assert start == expected_start, "segments are contiguous"
        data = segment.read_bytes()
        position = start
        for op in decode_all(data):
            position += len(encode(op))
            records.append((position, op))
        expected_start = start + len(data)
    return records


def test_appends_from_many_threads_land_exactly_once(tmp_path: Path) -> None:
    per_thread, threads = 50, 8
    results: dict[int, list[int]] = {}
    with AofWriter(tmp_path, "always") as writer:

        def work(t: int) -> None:
            results[t] = [writer.append(epoch(t * 1000 + i)) for i in range(per_thread)]

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert writer.durable_position == writer.position
        stats = writer.stats()
        assert stats.appends == per_thread * threads
        assert stats.records_fsynced == per_thread * threads
        assert stats.fsyncs >= 1 and stats.records_per_fsync >= 1.0
        assert 0 < stats.fsync_p50 <= stats.fsync_p99 <= stats.fsync_max

    for positions in results.values():
        assert positions == sorted(positions) and len(set(positions)) == per_thread
    everyone = [p for ps in results.values() for p in ps]
    assert len(set(everyone)) == per_thread * threads
    records = read_log(tmp_path)
    assert sorted(everyone) == [p for p, _ in records]
    ids = sorted(op.epoch_id for _, op in records if isinstance(op, EpochAdvanced))
    assert ids == sorted(t * 1000 + i for t in range(threads) for i in range(per_thread))


def test_positions_are_record_ends_and_map_to_segments(tmp_path: Path) -> None:
    ops = order_ops(3)
    sizes = [len(encode(op)) for op in ops]
    with AofWriter(tmp_path, "no") as writer:
        assert writer.position == 0 and writer.fsync == "no"
        p1 = writer.append(ops[0])
        assert p1 == sizes[0] == writer.written_position
        assert writer.durable_position == 0
        assert writer.wait_durable(p1) == p1 == writer.durable_position
        with pytest.raises(InvalidValueError):
            writer.wait_durable(p1 + 1)
        start = writer.rotate()
        assert start == p1 == writer.segment_start
        p3 = writer.append_many(ops[1:])
        assert p3 == sum(sizes)
        assert writer.append_many([]) == p3
        path, offset = writer.locate(p3)
        assert Path(path).name == f"{p1:020}.aof" and offset == p3 - p1
        assert Path(writer.locate(p1)[0]).name == f"{0:020}.aof"
    assert [op for _, op in read_log(tmp_path)] == ops


def test_append_many_bounds_are_every_records_start_and_end(tmp_path: Path) -> None:
    # Large enough that the binding encodes on several threads.
    ops: list[Operation] = [epoch(1), *order_ops(5000), epoch(2)]
    sizes = [len(encode(op)) for op in ops]
    with AofWriter(tmp_path, "no") as writer:
        first = writer.append(epoch(0))
        bounds = writer.append_many_bounds(ops)
        assert len(bounds) == len(ops) + 1
        assert bounds[0] == first and bounds[-1] == writer.position
        assert [b - a for a, b in zip(bounds, bounds[1:])] == sizes
        assert writer.append_many_bounds([]) == [writer.position]
        with pytest.raises(InvalidTypeError):
            writer.append_many_bounds([epoch(3), "not an operation"])  # type: ignore[list-item]
        assert writer.position == bounds[-1]  # all or nothing
    log = read_log(tmp_path)
    assert [pos for pos, _ in log[1:]] == bounds[1:]


def test_everysec_and_wait_durable(tmp_path: Path) -> None:
    with AofWriter(tmp_path, "everysec", gather_window=0.001) as writer:
        p = writer.append(epoch(1))
        assert writer.wait_durable(p) == p
        assert writer.durable_position >= p


def test_asyncio_appends_pipeline_in_call_order(tmp_path: Path) -> None:
    async def main(writer: AofWriter) -> list[int]:
        return await asyncio.gather(*(writer.append_async(epoch(i)) for i in range(200)))

    with AofWriter(tmp_path, "always") as writer:
        positions = asyncio.run(main(writer))
        assert positions == sorted(set(positions))
        assert writer.durable_position == positions[-1]
    ids = [op.epoch_id for _, op in read_log(tmp_path) if isinstance(op, EpochAdvanced)]
    assert ids == list(range(200))


def test_asyncio_append_on_closed_writer_raises(tmp_path: Path) -> None:
    writer = AofWriter(tmp_path)
    writer.close()

    async def main() -> int:
        return await writer.append_async(epoch(1))

    with pytest.raises(WriterClosedError):
        asyncio.run(main())


def test_closed_writer_refuses_appends_and_close_is_idempotent(tmp_path: Path) -> None:
    writer = AofWriter(tmp_path)
    writer.append(epoch(1))
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(WriterClosedError, match=re.escape(str(tmp_path))):
        writer.append(epoch(2))


def test_bad_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match="everysec"):
        AofWriter(tmp_path, "sometimes")  # type: ignore[arg-type]


def test_one_writer_per_directory_even_across_processes(tmp_path: Path) -> None:
    child = (
        "import sys\n"
        "from openmatch_persistence import AofWriter, WriterLockedError\n"
        "try:\n"
        "    AofWriter(sys.argv[1])\n"
        "except WriterLockedError as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    with AofWriter(tmp_path):
        with pytest.raises(WriterLockedError, match=r"writer\.lock"):
            AofWriter(tmp_path)
        done = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True
        )
        assert done.returncode == 3, done.stderr
        assert "locked by another writer" in done.stdout
    # Released on close: the child now gets it.
    released = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True)
    assert released.returncode == 0


def test_files_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "aof"
    with AofWriter(directory) as writer:
        writer.append(epoch(1))
        writer.rotate()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == [f"{0:020}.aof", f"{24:020}.aof", "writer.lock"]
    for p in directory.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_a_directory_fsync_of_a_missing_directory_is_an_aof_error_with_its_errno(
    tmp_path: Path,
) -> None:
    _core.fsync_directory(tmp_path)
    missing = tmp_path / "missing"
    with pytest.raises(AofError, match=r"fsync directory .*missing") as raised:
        _core.fsync_directory(missing)
    assert raised.value.errno == errno.ENOENT


def test_injected_fsync_failure_is_never_acknowledged(tmp_path: Path) -> None:
    writer = AofWriter(tmp_path, "always")
    p1 = writer.append(epoch(1))
    writer._inject_failures(fsyncs=1)
    with pytest.raises(WriterFailedError, match="fdatasync"):
        writer.append(epoch(2))
    assert writer.failed and "Input/output error" in (writer.failure or "")
    assert writer.durable_position == p1
    fsyncs = writer.stats().fsyncs
    with pytest.raises(WriterFailedError):
        writer.append(epoch(3))
    with pytest.raises(WriterFailedError):
        writer.rotate()
    writer.close()
    assert writer.stats().fsyncs == fsyncs, "a failed fsync is never retried"
    # Reopening re-reads the disk and appends again.
    with AofWriter(tmp_path, "always") as again:
        assert again.position >= p1
        again.append(epoch(4))
    ids = [op.epoch_id for _, op in read_log(tmp_path) if isinstance(op, EpochAdvanced)]
    assert ids[0] == 1 and ids[-1] == 4 and 3 not in ids


def test_failure_reaches_every_waiting_thread(tmp_path: Path) -> None:
    outcomes: list[object] = []
    with AofWriter(tmp_path, "always") as writer:
        writer._inject_failures(writes=1)
        barrier = threading.Barrier(6)

        def work(i: int) -> None:
            barrier.wait()
            try:
                outcomes.append(writer.append(epoch(i)))
            except WriterFailedError as e:
                outcomes.append(e)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert writer.failed
        durable = writer.durable_position
        # Whatever was acknowledged is durable; the rest failed.
        for outcome in outcomes:
            assert isinstance(outcome, WriterFailedError) or (
                isinstance(outcome, int) and outcome <= durable
            )
        assert any(isinstance(o, WriterFailedError) for o in outcomes)


def test_torn_tail_is_cut_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with AofWriter(tmp_path) as writer:
        end = writer.append_many([epoch(1), epoch(2)])
    segment = tmp_path / f"{0:020}.aof"
    torn = encode(epoch(3))[:13]
    with segment.open("ab") as f:
        f.write(torn)
    with caplog.at_level(logging.WARNING, logger="openmatch_persistence.writer"):
        writer = AofWriter(tmp_path)
    assert writer.truncated_bytes == 13 and writer.position == end
    assert "13 bytes" in caplog.text and segment.name in caplog.text
    writer.close()
    assert segment.stat().st_size == end
    # What was cut is in the backup, byte for byte, readable by the owner only.
    backup = Path(writer.torn_tail_backup or "")
    assert backup.parent == tmp_path and backup.name.startswith(segment.name)
    assert backup.read_bytes() == torn and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert str(backup) in caplog.text
    with AofWriter(tmp_path) as again:
        assert again.torn_tail_backup is None


def test_corrupt_frame_refuses_to_open_and_cuts_nothing(tmp_path: Path) -> None:
    with AofWriter(tmp_path) as writer:
        first = writer.append(epoch(1))
        writer.append(epoch(2))
    segment = tmp_path / f"{0:020}.aof"
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x10
    segment.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as info:
        AofWriter(tmp_path)
    assert info.value.offset == first and info.value.path == str(segment)
    assert segment.read_bytes() == data


def test_a_frame_past_the_limit_refuses_to_open_as_oversized_and_cuts_nothing(
    tmp_path: Path,
) -> None:
    with AofWriter(tmp_path) as writer:
        writer.append(epoch(1))
        end = writer.append(epoch(2))
    segment = tmp_path / f"{0:020}.aof"
    data = segment.read_bytes()
    payload = len(encode(epoch(2))) - 8
    limit = payload - 1
    with pytest.raises(OversizedFrameError) as info:
        AofWriter(tmp_path, max_payload=limit)
    e = info.value
    assert not isinstance(e, CorruptFrameError)
    assert (e.offset, e.path, e.length, e.limit) == (0, str(segment), payload, limit)
    assert f"oversized (limit {limit})" in str(e) and "max_payload" in str(e)
    assert "corrupt" not in str(e)
    assert segment.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == []
    # Raised, the same log opens whole.
    with AofWriter(tmp_path, max_payload=payload) as again:
        assert again.position == end
    assert segment.read_bytes() == data


def test_a_writer_refuses_a_frame_past_its_own_limit_and_reopens(tmp_path: Path) -> None:
    """What a writer accepts, its reopening reads: with ``max_payload``
    below an operation's payload, the append is refused and writes nothing,
    and the log reopens with the same limit (before, the frame was written
    and the next open refused the log as oversized)."""
    small = epoch(1)
    limit = len(encode(small)) - 8
    sealed = BufferSealed(1, bytes(32))
    with AofWriter(tmp_path, max_payload=limit) as writer:
        with pytest.raises(InvalidValueError, match=f"maximum frame payload of {limit}"):
            writer.append(sealed)
        with pytest.raises(InvalidValueError):
            writer.append_many([small, sealed])
        assert writer.position == 0
        end = writer.append(small)
    with AofWriter(tmp_path, max_payload=limit) as again:
        assert again.position == end


CHILD_APPENDER = """
import sys
from openmatch_persistence import AofWriter, EpochAdvanced, EpochPhase
writer = AofWriter(sys.argv[1], sys.argv[2])
i = 0
while True:
    position = writer.append(EpochAdvanced(i, EpochPhase.SEAL))
    sys.stdout.write(f"{position}\\n")
    sys.stdout.flush()
    i += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize(("fsync", "default_rounds"), [("always", 10), ("everysec", 4), ("no", 4)])
def test_kill_9_loses_no_acknowledged_append(
    tmp_path: Path, fsync: str, default_rounds: int
) -> None:
    # A killed process loses nothing acknowledged under any policy (the
    # kernel has every write); only `always` also survives power loss,
    # which a test cannot cause.
    rounds = int(os.environ.get("OPENMATCH_KILL_ROUNDS", default_rounds))
    acknowledged: list[int] = []
    for r in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_APPENDER, str(tmp_path), fsync],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(5 + 7 * r % 40):
            line = child.stdout.readline()
            assert line, "the child died on its own"
            acknowledged.append(int(line))
        child.kill()  # SIGKILL: no close, no flush, no atexit
        child.wait()
        child.stdout.close()
        # Recovery is opening the writer: it cuts a torn tail, if any.
        AofWriter(tmp_path).close()
        ends = {p for p, _ in read_log(tmp_path)}
        missing = [p for p in acknowledged if p not in ends]
        assert not missing, f"round {r}: acknowledged positions lost: {missing[:5]}"
    assert acknowledged == sorted(set(acknowledged))


def test_delete_covered_segments_deletes_through_the_writer(tmp_path: Path) -> None:
    from openmatch_persistence.compaction import delete_covered_segments

    with AofWriter(tmp_path) as writer:
        writer.append(epoch(1))
        second = writer.rotate()
        writer.append(epoch(2))
        third = writer.rotate()
        assert delete_covered_segments(writer, second - 1) == (0, 0)
        assert delete_covered_segments(writer, third) == (2, third)
        # Never the segment appended to.
        assert writer.delete_covered(2**63) == (0, 0)
        assert sorted(p.name for p in tmp_path.glob("*.aof")) == [f"{third:020}.aof"]
    with pytest.raises(WriterClosedError):
        writer.delete_covered(2**63)
