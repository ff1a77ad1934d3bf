"""The frame bound (``max_payload``) of a data directory's journal, through
every face that opens one: a log written by an engine with a bound above
the default holds frames longer than 16 MiB; it opens with the bound
raised, and is refused as oversized (a limit to raise, not damage) without.
"""

from __future__ import annotations

import asyncio
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from factories import oid, uid
from faultkit import balance_op, run_cli

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.async_persistence import AsyncPersistence
from openmatch_persistence.errors import InvalidValueError, OversizedFrameError
from openmatch_persistence.persistence import Persistence

#: Past the default bound, as only an engine with a higher one writes.
LONG = 17 << 20
RAISED = 2 * _core.DEFAULT_MAX_PAYLOAD_LEN


def _long_frame(size: int) -> bytes:
    """The frame of a balance whose asset is ``size`` bytes long, built by
    hand as an engine with a higher bound writes it (this package's
    journal refuses such an asset as past the database's schema)."""
    short = om.encode(om.BalanceUpdated(uid(1), "Q", Decimal(1), Decimal(0)))[8:]
    asset = (1).to_bytes(8, "little") + b"Q"  # bincode: u64 length, bytes
    assert short.count(asset) == 1
    payload = short.replace(asset, size.to_bytes(8, "little") + b"Q" * size)
    return len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload


@pytest.fixture
def long_frame_dir(tmp_path: Path) -> tuple[Path, Path, int]:
    """A data directory whose log ends in a frame past the default bound:
    the directory, its segment, and the frame's payload length."""
    data_dir = tmp_path / "data"
    Persistence.open(data_dir).close()
    (segment,) = (data_dir / "aof").glob("*.aof")
    frame = _long_frame(LONG)
    with segment.open("ab") as f:
        f.write(frame)
    return data_dir, segment, len(frame) - 8


def _assert_refused_as_oversized(e: OversizedFrameError, segment: Path, length: int) -> None:
    assert (e.path, e.length, e.limit) == (str(segment), length, _core.DEFAULT_MAX_PAYLOAD_LEN)
    assert "oversized" in str(e) and "max_payload" in str(e) and "corrupt" not in str(e)


def test_a_data_dir_with_a_frame_past_the_default_bound_opens_with_it_raised(
    long_frame_dir: tuple[Path, Path, int],
) -> None:
    data_dir, segment, length = long_frame_dir
    before = segment.read_bytes()
    with pytest.raises(OversizedFrameError) as info:
        Persistence.open(data_dir)
    _assert_refused_as_oversized(info.value, segment, length)
    assert segment.read_bytes() == before  # nothing cut
    with Persistence.open(data_dir, max_payload=RAISED) as p:
        assert p.recovery.replayed == 1
        balance = p.state.balance(uid(1), "Q" * LONG)
        assert balance is not None and balance.available == Decimal(1)
    assert segment.read_bytes() == before


def test_the_async_face_takes_the_same_bound(long_frame_dir: tuple[Path, Path, int]) -> None:
    data_dir, segment, length = long_frame_dir

    async def main() -> int:
        with pytest.raises(OversizedFrameError) as info:
            await AsyncPersistence.open(data_dir)
        _assert_refused_as_oversized(info.value, segment, length)
        async with await AsyncPersistence.open(data_dir, max_payload=RAISED) as p:
            return p.recovery.replayed

    assert asyncio.run(main()) == 1


def test_the_cli_refuses_in_one_line_and_opens_with_max_payload(
    long_frame_dir: tuple[Path, Path, int],
) -> None:
    data_dir, segment, _ = long_frame_dir
    before = segment.read_bytes()
    d = str(data_dir)
    opening = [
        ["recover", d],
        ["snapshot", d],
        ["simulate", "--ops", "0", "--data-dir", d],
        ["compact", d],  # last: it deletes the segment with the long frame
    ]
    for command in opening:
        refused = run_cli(*command)
        assert refused.returncode == 3, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert f"oversized (limit {_core.DEFAULT_MAX_PAYLOAD_LEN})" in refused.stderr
        assert "run the command again with --max-payload BYTES" in refused.stderr
    assert segment.read_bytes() == before
    done = run_cli("recover", d, "--max-payload", str(RAISED), "--json")
    assert done.returncode == 0, done.stderr
    assert '"replayed": 1' in done.stdout
    for command in opening[1:]:
        assert run_cli(*command, "--max-payload", str(RAISED)).returncode == 0, command


def test_recover_until_reads_with_the_bound_given(
    long_frame_dir: tuple[Path, Path, int],
) -> None:
    data_dir, segment, _ = long_frame_dir
    end = segment.stat().st_size  # the one segment starts at 0
    before = segment.read_bytes()
    refused = run_cli("recover", str(data_dir), "--until", str(end))
    assert refused.returncode == 3, refused.stderr
    assert "oversized" in refused.stderr and "Traceback" not in refused.stderr
    assert segment.read_bytes() == before
    cut = run_cli("recover", str(data_dir), "--until", str(end), "--max-payload", str(RAISED))
    assert cut.returncode == 0, cut.stderr
    assert segment.stat().st_size == end - len(_long_frame(LONG))
    # The long frame went to a backup: the log opens with the default bound.
    with Persistence.open(data_dir) as p:
        assert p.state.balance_count == 0


def test_an_append_past_the_bound_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    small = om.EpochAdvanced(1, om.EpochPhase.COLLECT)
    limit = len(om.encode(small)) - 8
    with Persistence.open(tmp_path, max_payload=limit) as p:
        with pytest.raises(InvalidValueError, match=f"maximum frame payload of {limit}"):
            p.append(balance_op(0, 1))
        with pytest.raises(InvalidValueError):
            p.append_many([small, balance_op(0, 1)])
        assert p.position == 0
        end = p.append(small)
    assert sum(s.stat().st_size for s in (tmp_path / "aof").glob("*.aof")) == end
    # What it wrote under its bound, it reopens with.
    with Persistence.open(tmp_path, max_payload=limit) as p:
        assert p.position == end


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_a_bound_out_of_range_is_a_typed_error(tmp_path: Path, bad: int) -> None:
    with pytest.raises(InvalidValueError, match="max_payload must be between 1 and"):
        _core.Journal.open(tmp_path / "journal", max_payload=bad)
    with pytest.raises(InvalidValueError, match="max_payload must be between 1 and"):
        _core.AofWriter(tmp_path / "writer", max_payload=bad)
    assert not (tmp_path / "journal").exists() and not (tmp_path / "writer").exists()


def test_aof_verify_checks_the_invariants_past_a_long_frame(
    long_frame_dir: tuple[Path, Path, int],
) -> None:
    # The invariants are replayed with the scan's bound: before, the replay
    # stopped at the long frame and called the rest "ok" unread.
    data_dir, segment, _ = long_frame_dir
    with segment.open("ab") as f:
        f.write(om.encode(om.OrderCancelled(oid(99))))  # never received
    done = run_cli("aof", "verify", "--max-payload", str(RAISED), str(data_dir))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "invariants: violated" in done.stdout and "unknown_order" in done.stderr


def test_a_writer_with_a_raised_bound_appends_what_the_default_refuses(tmp_path: Path) -> None:
    """What a writer accepts is its own bound, on every append path: the
    encoding of one operation, of a batch, and of an asynchronous append
    keep it (they kept the default's before, refusing what the writer's
    reopening reads)."""
    long = om.BalanceUpdated(uid(1), "Q" * LONG, Decimal(1), Decimal(0))
    with pytest.raises(InvalidValueError):
        om.encode(long)
    aof = tmp_path / "aof"
    with _core.AofWriter(aof, max_payload=RAISED) as writer:
        first = writer.append(long)
        writer.append_many([long, om.EpochAdvanced(1, om.EpochPhase.COLLECT)])

        async def one_more() -> int:
            return await writer.append_async(long)

        end = asyncio.run(one_more())
    assert first == len(_long_frame(LONG))
    assert _core.verify(aof, max_payload=RAISED).frames == 4
    assert _core.verify(aof).is_oversized
    with _core.AofWriter(aof, max_payload=RAISED) as writer:
        assert writer.position == end
