"""The replay scanner from Python: positions, outcomes, directories, errors,
and the repair that cuts only what it backed up."""

from __future__ import annotations

import datetime
import os
import stat
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence import repair as rp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
import pure_python_codec as pure

TS = datetime.datetime(2026, 2, 27, 21, 35, 25, 123456, tzinfo=datetime.timezone.utc)


def seg_name(start: int) -> str:
    return f"{start:020d}.aof"


def sample_ops() -> list[om.Operation]:
    order = om.Order(
        id=uuid.UUID(int=1),
        user_id=uuid.UUID(int=2),
        market=om.MarketPair("BTC", "USDT"),
        side=om.OrderSide.BUY,
        order_type=om.OrderType.LIMIT,
        status=om.OrderStatus.ACTIVE,
        price=Decimal("50000.5"),
        quantity=Decimal("1.25"),
        remaining_qty=Decimal("1.25"),
        sr_id=uuid.UUID(int=3),
        epoch_id=7,
        origin_node=bytes(32),
        sequence=1,
        created_at=TS,
        updated_at=1_772_228_125_123_456_789,
    )
    trade = om.Trade(
        id=uuid.UUID(int=4),
        epoch_id=7,
        market=om.MarketPair("BTC", "USDT"),
        taker_order_id=uuid.UUID(int=1),
        taker_user_id=uuid.UUID(int=2),
        maker_order_id=uuid.UUID(int=1),
        maker_user_id=uuid.UUID(int=2),
        price=Decimal("50000"),
        quantity=Decimal("0.5"),
        quote_amount=Decimal("25000"),
        taker_side=om.OrderSide.SELL,
        matcher_node=bytes(range(32)),
        executed_at=TS,
    )
    # A stream that keeps the state's invariants (a self-trade, then the
    # rest of the order cancelled), so that `aof verify` calls it clean.
    return [
        om.EpochAdvanced(7, om.EpochPhase.COLLECT),
        om.OrderReceived(order),
        om.BufferSealed(7, bytes([3]) * 32),
        om.TradeExecuted(trade),
        om.OrderCancelled(uuid.UUID(int=1)),
        om.BalanceUpdated(uuid.UUID(int=2), "USDT", Decimal("1500.25"), Decimal("0")),
        om.EpochAdvanced(8, om.EpochPhase.SEAL),
    ]


def frame_ends(ops: list[om.Operation]) -> list[int]:
    ends, total = [], 0
    for op in ops:
        total += len(om.encode(op))
        ends.append(total)
    return ends


@pytest.fixture
def ops() -> list[om.Operation]:
    return sample_ops()


@pytest.fixture
def aof_dir(tmp_path: Path, ops: list[om.Operation]) -> Path:
    """Two segments: ops[:3] at position 0, ops[3:] right after."""
    a = om.encode_many(ops[:3])
    b = om.encode_many(ops[3:])
    d = tmp_path / "aof"
    d.mkdir()
    (d / seg_name(0)).write_bytes(a)
    (d / seg_name(len(a))).write_bytes(b)
    return d


def test_scan_yields_positions_to_resume_from(aof_dir: Path, ops: list[om.Operation]) -> None:
    scanner = om.scan(aof_dir)
    assert scanner.result is None
    got = list(scanner)
    assert [op for _, op in got] == ops
    assert [pos for pos, _ in got] == frame_ends(ops)
    report = scanner.result
    assert report is not None and report.is_clean and report.outcome == "clean"
    assert report.frames == len(ops)
    assert report.position == frame_ends(ops)[-1] == scanner.position
    assert report.segments == 2
    assert report.counts["EpochAdvanced"] == 2 and report.counts["OrderReceived"] == 1
    assert report.first_epoch == 7 and report.last_epoch == 8
    report.check(allow_torn_tail=False)
    for i, (pos, _) in enumerate(got):
        assert [op for _, op in om.scan(aof_dir, start=pos)] == ops[i + 1 :]


def test_read_batch_is_the_bulk_form(aof_dir: Path, ops: list[om.Operation]) -> None:
    scanner = om.scan(aof_dir, batch_size=2)
    batches = []
    while batch := scanner.read_batch():
        batches.append(batch)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert [op for b in batches for _, op in b] == ops
    assert scanner.done and scanner.result is not None


def test_verify_reports_without_objects(aof_dir: Path, ops: list[om.Operation]) -> None:
    full = om.verify(aof_dir)
    fast = om.verify(aof_dir, decode=False)
    assert full.is_clean and fast.is_clean
    assert full.counts == fast.counts
    assert full.bytes == fast.bytes == frame_ends(ops)[-1]
    assert fast.first_epoch is None
    seen: list[int] = []
    om.verify(aof_dir, progress=seen.append)
    assert seen and seen[-1] == full.bytes
    d = full.to_dict()
    assert d["outcome"] == "clean" and d["frames"] == len(ops)


def test_torn_tail_is_a_warning_and_check_can_refuse_it(
    tmp_path: Path, ops: list[om.Operation]
) -> None:
    data = om.encode_many(ops)
    f = tmp_path / "one.aof"
    f.write_bytes(data[:-5])
    report = om.verify(f)
    assert report.is_torn_tail and report.cause == "torn"
    assert report.position == frame_ends(ops)[-2]
    assert report.segment == str(f) and report.offset == report.position
    assert report.tail_bytes == len(data) - 5 - report.position
    report.check()  # allowed by default
    with pytest.raises(om.TornFrameError) as e:
        report.check(allow_torn_tail=False)
    assert e.value.offset == report.offset and e.value.path == str(f)


def test_corruption_names_segment_offset_and_cause(aof_dir: Path, ops: list[om.Operation]) -> None:
    second = sorted(aof_dir.iterdir())[1]
    data = bytearray(second.read_bytes())
    data[len(om.encode(ops[3])) + 10] ^= 0x40  # inside the second frame's payload
    second.write_bytes(bytes(data))
    report = om.verify(aof_dir)
    assert report.is_corrupt and report.cause == "checksum_mismatch"
    assert report.segment == str(second)
    assert report.offset == len(om.encode(ops[3]))
    assert report.frames == 4
    assert str(second) in report.message and "checksum" in report.message
    with pytest.raises(om.ChecksumMismatchError) as e:
        report.check()
    assert isinstance(e.value, om.CorruptFrameError)
    assert e.value.path == str(second) and e.value.offset == report.offset
    scanner = om.scan(aof_dir)
    assert len(list(scanner)) == 4
    assert scanner.result is not None and scanner.result.is_corrupt


def test_gap_between_segments_is_an_error(aof_dir: Path) -> None:
    second = sorted(aof_dir.iterdir())[1]
    start = int(second.name[:20])
    second.rename(aof_dir / seg_name(start + 1))
    report = om.verify(aof_dir)
    assert report.is_corrupt and report.cause == "segment_gap"
    assert report.position == start
    with pytest.raises(om.CorruptFrameError):
        report.check()


def test_zeroed_tail_is_a_torn_tail(tmp_path: Path, ops: list[om.Operation]) -> None:
    f = tmp_path / seg_name(0)
    f.write_bytes(om.encode_many(ops) + bytes(8192))
    report = om.verify(f)
    assert report.is_torn_tail and report.cause == "zeroed_tail"
    assert report.tail_bytes == 8192


def test_bad_arguments_are_typed_errors(aof_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(om.AofError, match="No such file"):
        om.verify(tmp_path / "missing")
    with pytest.raises(om.InvalidValueError, match="cannot start at position"):
        om.scan(aof_dir, start=10**9)
    with pytest.raises(om.InvalidValueError):
        om.scan(aof_dir, batch_size=0)
    with pytest.raises(om.InvalidValueError):
        om.verify(aof_dir, max_payload=0)
    with pytest.raises(om.InvalidValueError, match="start"):
        om.scan(aof_dir, start=-1)
    with pytest.raises(om.InvalidValueError, match="max_payload"):
        om.verify_bytes(b"", max_payload=2**40)
    with pytest.raises(om.InvalidValueError, match="chunk_size"):
        om.scan_bytes(b"", chunk_size=-5)


def test_pure_python_codec_reads_and_writes_the_same_bytes(ops: list[om.Operation]) -> None:
    data = om.encode_many(ops)
    decoded = pure.decode_frames(data)
    assert [d[0] for d in decoded] == [op.kind for op in ops]
    assert b"".join(pure.encode_frame(d) for d in decoded) == data
    with pytest.raises(pure.PureFrameError) as e:
        pure.decode_frames(data[:-1])
    assert e.value.cause == "torn"


# --- repair ---------------------------------------------------------------------


def test_repair_cuts_a_torn_tail_after_backing_it_up(
    tmp_path: Path, ops: list[om.Operation]
) -> None:
    f = tmp_path / seg_name(0)
    data = om.encode_many(ops)
    f.write_bytes(data[:-5])
    plan = rp.plan_repair(f)
    assert plan.needed and plan.damaged_frames == 1 and plan.intact_frames == 0
    assert f.stat().st_size == len(data) - 5  # planning changes nothing
    result = rp.repair(f)
    cut = frame_ends(ops)[-2]
    assert f.read_bytes() == data[:cut]
    assert result.after.is_clean
    (part,) = result.removed
    assert part.backup is not None
    backup = Path(part.backup)
    assert backup.read_bytes() == data[cut:-5]
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not rp.plan_repair(f).needed


def test_repair_counts_intact_frames_behind_the_damage(
    aof_dir: Path, ops: list[om.Operation]
) -> None:
    first, second = sorted(aof_dir.iterdir())
    data = bytearray(first.read_bytes())
    data[len(om.encode(ops[0])) + 12] ^= 1  # frame 2 of 7
    first.write_bytes(bytes(data))
    plan = rp.plan_repair(aof_dir)
    # The damaged frame, one intact frame after it in its segment, and the
    # four in the segment after.
    assert (plan.damaged_frames, plan.intact_frames) == (1, 5)
    assert plan.bytes_removed == len(data) - len(om.encode(ops[0])) + second.stat().st_size
    text = "\n".join(rp.describe(plan))
    assert "at least 5 intact" in text
    before = {p.name: p.read_bytes() for p in aof_dir.iterdir()}
    result = rp.repair(aof_dir, plan=plan)
    assert not second.exists()
    assert first.read_bytes() == bytes(data[: len(om.encode(ops[0]))])
    assert result.after.is_clean and result.after.frames == 1
    backups = {Path(p.backup or "").name: Path(p.backup or "") for p in result.removed}
    assert len(backups) == 2
    restored = b"".join(p.read_bytes() for _, p in sorted(backups.items(), key=lambda kv: kv[0]))
    assert restored == bytes(data[len(om.encode(ops[0])) :]) + before[second.name]
    for p in backups.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    # Backups are not segments: the directory still scans clean.
    assert om.verify(aof_dir).is_clean


def test_repair_never_deletes_a_segment_no_snapshot_covers(
    aof_dir: Path, ops: list[om.Operation]
) -> None:
    first, second = sorted(aof_dir.iterdir())
    data = bytearray(first.read_bytes())
    data[len(om.encode(ops[0])) + 12] ^= 1
    first.write_bytes(bytes(data))
    second_start = int(second.name[:20])
    # The segment after the damage holds operations past the checkpoint.
    checkpoint = 0
    with pytest.raises(om.AofError, match=f"{second.name}: refusing to repair.*{checkpoint}"):
        rp.plan_repair(aof_dir, checkpoint=checkpoint)
    with pytest.raises(om.AofError, match="refusing to repair"):
        rp.repair(aof_dir, checkpoint=checkpoint)
    assert second.exists() and first.read_bytes() == bytes(data)
    # A snapshot at or past the second segment's start covers the damage:
    # the damaged segment goes whole, and the log goes on in the second.
    for checkpoint in (second_start, second_start + 1):
        plan = rp.plan_repair(aof_dir, checkpoint=checkpoint)
        assert [Path(p.segment) for p in plan.parts] == [first]
        assert plan.parts[0].removes_file and plan.restart_at is None


def test_repair_refuses_while_a_writer_has_the_aof_open(
    tmp_path: Path, ops: list[om.Operation]
) -> None:
    with om.AofWriter(tmp_path) as writer:
        writer.append_many(ops)
        seg = tmp_path / seg_name(0)
        with seg.open("ab") as f:
            f.write(om.encode(ops[0])[:-5])
        before = seg.read_bytes()
        plan = rp.plan_repair(tmp_path)  # planning changes nothing: allowed
        assert plan.needed
        with pytest.raises(om.WriterLockedError, match="a writer has the AOF open"):
            rp.repair(tmp_path, plan=plan)
        with pytest.raises(om.WriterLockedError):
            rp.repair(seg)
        assert seg.read_bytes() == before
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".bak")]
    # Closed, the writer leaves the lock to the repair, which holds it.
    result = rp.repair(tmp_path)
    assert result.after.is_clean and len(result.backups) == 1
    with _core.AofDirLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(om.WriterLockedError):
            om.AofWriter(tmp_path)
    assert not lock.held
    om.AofWriter(tmp_path).close()


def test_repair_refuses_a_stale_plan(tmp_path: Path, ops: list[om.Operation]) -> None:
    f = tmp_path / seg_name(0)
    data = om.encode_many(ops)
    f.write_bytes(data[:-5])
    plan = rp.plan_repair(f)
    f.write_bytes(data[:-9])
    with pytest.raises(om.AofError, match="changed"):
        rp.repair(f, plan=plan)
    assert f.read_bytes() == data[:-9]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".bak")]


@pytest.mark.slow
def test_bench_scan_smoke() -> None:
    """The benchmark's code runs (1 MiB); its numbers are not checked here."""
    import bench_scan

    m = bench_scan.run(1)
    assert m["frames"] > 0
    assert "raw read" in bench_scan.table(m)


def test_a_repair_refuses_a_plan_the_aof_no_longer_matches(
    aof_dir: Path, ops: list[om.Operation]
) -> None:
    """A repair carries out the plan it makes under the directory's lock,
    and only if it is the plan the caller was shown: damage found earlier
    in the log after planning (here, a second bit flip) refuses the repair
    and cuts nothing. (A part that changes while the cut runs fails the cut
    before anything is removed: `cut.rs`'s own test.)"""
    first, second = sorted(aof_dir.iterdir())
    frame_1 = len(om.encode(ops[0]))
    frame_2 = frame_1 + len(om.encode(ops[1]))
    data = bytearray(first.read_bytes())
    data[frame_2 + 12] ^= 1
    first.write_bytes(bytes(data))
    shown = rp.plan_repair(aof_dir)
    assert shown.needed and shown.parts[0].offset == frame_2
    data[frame_1 + 12] ^= 1
    first.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in (first, second)}
    with pytest.raises(om.AofError, match="changed since the repair was planned"):
        rp.repair(aof_dir, plan=shown)
    assert {p: p.read_bytes() for p in (first, second)} == before
    assert not [p for p in os.listdir(aof_dir) if p.endswith(".bak")]
    # Planned again, it cuts at the earlier damage.
    done = rp.repair(aof_dir, plan=rp.plan_repair(aof_dir))
    assert done.removed[0].offset == frame_1 and done.after.is_clean


MEMORY_PROBE = """
import resource, sys, tempfile, uuid
from pathlib import Path
import openmatch_persistence as om

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# Large frames (4 KiB) keep the op count, and so the time, small.
ops = [om.BalanceUpdated(uuid.UUID(int=i), "X" * 4000, i, 0) for i in range(256)]
block = om.encode_many(ops)
with tempfile.TemporaryDirectory() as d:
    path = Path(d) / "big.aof"
    with open(path, "wb") as f:
        for _ in range((64 << 20) // len(block)):
            f.write(block)
    base = rss_mib()
    report = om.verify(path, chunk_size=1 << 20)
    assert report.is_clean, report
    scanner = om.scan(path, chunk_size=1 << 20, batch_size=1024)
    while scanner.read_batch():
        pass
    grown_scan = rss_mib() - base
# A 4 GiB length with the bound lifted: torn, and nothing of that size allocated.
r = om.verify_bytes(bytes.fromhex("fffffffe00000000") + bytes(64), max_payload=2**32 - 1)
assert r.is_torn_tail, r
print(grown_scan, rss_mib() - base)
"""


@pytest.mark.parametrize("damage", ["clean", "bit flip", "torn tail"])
def test_read_ahead_reports_like_one_thread(
    tmp_path: Path, ops: list[om.Operation], damage: str
) -> None:
    data = bytearray(om.encode_many(ops * 50))
    if damage == "bit flip":
        data[len(data) // 2] ^= 4
    elif damage == "torn tail":
        del data[-5:]
    path = tmp_path / seg_name(0)
    path.write_bytes(bytes(data))
    for chunk in (1, 64, 1000):
        one, ahead = (
            om.verify(path, chunk_size=chunk, read_ahead=read_ahead) for read_ahead in (False, True)
        )
        assert one.to_dict() == ahead.to_dict()
        assert one.outcome == damage.replace("bit flip", "corrupt").replace(" ", "_")
        scans = [
            [pos for pos, _ in om.scan(path, chunk_size=chunk, read_ahead=read_ahead)]
            for read_ahead in (False, True)
        ]
        assert scans[0] == scans[1] and len(scans[0]) == one.frames


@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_file_and_a_huge_length(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    grown_scan, grown_total = map(float, proc.stdout.split())
    # 64 MiB scanned with a 1 MiB chunk: the process grew by a few MiB at most.
    assert grown_scan < 24, grown_scan
    assert grown_total < 24, grown_total
