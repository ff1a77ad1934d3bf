"""Damaged bytes: an AOF of 1,000 realistic operations cut at every byte,
and every bit of a sample of its frames flipped. Recovery must yield exactly
the complete frames before the damage and never anything else.

The scanner's own tests (rust/openmatch-aof/tests/scanner.rs,
tests/test_scanner.py) do the same exhaustively on a small hand-made file;
this suite does it on a workload-sized log of every operation kind and goes
through the facade's real file recovery on a sample."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from faultkit import (
    NO_COMPACTION,
    frame_ends,
    prefix_digests,
    whole_frames,
    write_segment,
)

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.persistence import Persistence
from openmatch_persistence.workload import take

N_OPS = 1000


@pytest.fixture(scope="module")
def log() -> tuple[list[om.Operation], bytes, list[int]]:
    ops = take(N_OPS, seed=7)
    data = om.encode_many(ops)
    ends = frame_ends(ops)
    assert ends[-1] == len(data)
    assert {op.kind for op in ops} == set(_core.OPERATION_KINDS), "every kind is in the log"
    return ops, data, ends


# --- truncation ---------------------------------------------------------------------


def test_truncation_at_every_byte_keeps_exactly_the_complete_frames(
    log: tuple[list[om.Operation], bytes, list[int]],
) -> None:
    _, data, ends = log
    wrong = []
    for cut in range(len(data) + 1):
        report = _core.verify_bytes(data[:cut], decode=False)
        whole = whole_frames(ends, cut)
        good = ends[whole - 1] if whole else 0
        expected = ("clean", 0) if good == cut else ("torn_tail", cut - good)
        got = (report.outcome, report.tail_bytes if report.is_torn_tail else 0)
        if report.frames != whole or report.position != good or got != expected:
            wrong.append((cut, report.message))
    assert not wrong, f"{len(wrong)} cuts misread, first: {wrong[:3]}"


def sample_cuts(ends: list[int], rng: random.Random) -> list[int]:
    """Every byte of the first, a middle and the last two frames, plus random cuts."""
    starts = [0, *ends[:-1]]
    cuts: set[int] = set()
    for i in (0, len(ends) // 2, len(ends) - 2, len(ends) - 1):
        cuts.update(range(starts[i], ends[i] + 1))
    cuts.update(rng.randrange(ends[-1] + 1) for _ in range(300))
    return sorted(cuts)


def test_truncation_yields_the_very_operations_written(
    log: tuple[list[om.Operation], bytes, list[int]],
) -> None:
    ops, data, ends = log
    encoded = [om.encode(op) for op in ops]
    for cut in sample_cuts(ends, random.Random(1)):
        scanner = _core.scan_bytes(data[:cut])
        got = list(scanner)
        whole = whole_frames(ends, cut)
        assert [p for p, _ in got] == ends[:whole], f"cut at {cut}"
        assert [om.encode(op) for _, op in got] == encoded[:whole], f"cut at {cut}"
        assert scanner.result is not None and not scanner.result.is_corrupt


def test_facade_recovers_a_truncated_file_to_the_last_complete_frame(
    tmp_path: Path, log: tuple[list[om.Operation], bytes, list[int]]
) -> None:
    ops, data, ends = log
    rng = random.Random(2)
    split = ends[N_OPS // 2 - 1]  # a second segment starts here
    starts = [0, *ends[:-1]]
    cuts = [0, 3, 8, ends[0], split, split + 5, ends[-2] + 7, len(data) - 1, len(data)]
    cuts += [starts[i] + rng.randrange(1, ends[i] - starts[i]) for i in rng.sample(range(N_OPS), 8)]
    digests = prefix_digests(ops, {whole_frames(ends, c) for c in cuts})
    for n, cut in enumerate(cuts):
        directory = tmp_path / f"cut{n}"
        aof = directory / "aof"
        if cut > split:
            write_segment(aof, 0, data[:split])
            write_segment(aof, split, data[split:cut])
        else:
            write_segment(aof, 0, data[:cut])
        whole = whole_frames(ends, cut)
        good = ends[whole - 1] if whole else 0
        with Persistence.open(directory, compaction=NO_COMPACTION) as p:
            assert p.position == good, f"cut at {cut}"
            assert p.recovery.replayed == whole
            assert p.recovery.torn_tail_cut == cut - good
            assert p.digest() == digests[whole]
            # The next append lands right after the last complete frame.
            assert p.append(om.EpochAdvanced(10**9, om.EpochPhase.COLLECT)) > good
        assert _core.verify(aof).is_clean


# --- bit flips ------------------------------------------------------------------------


def sample_frames(ops: list[om.Operation], rng: random.Random) -> list[int]:
    """The first two and the last two frames, and two of every kind."""
    chosen = {0, 1, len(ops) - 2, len(ops) - 1}
    for kind in _core.OPERATION_KINDS:
        of_kind = [i for i, op in enumerate(ops) if op.kind == kind]
        chosen.update(rng.sample(of_kind, min(2, len(of_kind))))
    return sorted(chosen)


def test_every_bit_flip_in_sampled_frames_is_detected_at_that_frame(
    log: tuple[list[om.Operation], bytes, list[int]],
) -> None:
    ops, data, ends = log
    starts = [0, *ends[:-1]]
    last = len(ops) - 1
    flips = torn_like = 0
    wrong = []
    for k in sample_frames(ops, random.Random(3)):
        for byte in range(starts[k], ends[k]):
            for bit in range(8):
                bad = bytearray(data)
                bad[byte] ^= 1 << bit
                # Frames near the end are also decoded: a flip that the
                # checksum missed would have to decode into an operation.
                report = _core.verify_bytes(bad, decode=k >= last - 1)
                flips += 1
                # recovery-rule.md: a longer length in the last frame is
                # indistinguishable from an interrupted append of it.
                if (
                    k == last
                    and byte < starts[k] + 4
                    and report.is_torn_tail
                    and int.from_bytes(bad[starts[k] : starts[k] + 4], "little")
                    > ends[k] - starts[k] - 8
                ):
                    torn_like += 1
                    if report.frames != last or report.tail_bytes != ends[k] - starts[k]:
                        wrong.append((k, byte, bit, report.message))
                    continue
                # A length flipped past the 16 MiB limit is oversized: not
                # called corruption, stopped at the same place all the same.
                in_length = byte < starts[k] + 4
                if not (
                    (report.is_corrupt or (report.is_oversized and in_length))
                    and report.frames == k
                    and report.position == starts[k]
                    and report.offset == starts[k]
                    and f"offset {starts[k]}" in report.message
                ):
                    wrong.append((k, byte, bit, report.message))
    assert not wrong, f"{len(wrong)} of {flips} flips misread, first: {wrong[:3]}"
    # Only the length's high bits can lengthen past the end: some, not all, of 32.
    assert 0 < torn_like < 32


def test_a_flipped_bit_stops_the_facade_naming_segment_and_offset(
    tmp_path: Path, log: tuple[list[om.Operation], bytes, list[int]]
) -> None:
    ops, data, ends = log
    starts = [0, *ends[:-1]]
    split = ends[N_OPS // 2 - 1]
    rng = random.Random(4)
    for n, k in enumerate(sample_frames(ops, rng)[:-1]):  # the last one: see above
        for where in ("length", "checksum", "payload"):
            byte = starts[k] + {"length": 0, "checksum": 5, "payload": 9}[where]
            byte += rng.randrange(2) if where == "length" else 0
            bad = bytearray(data)
            bad[byte] ^= 1 << rng.randrange(8)
            directory = tmp_path / f"flip{n}{where}"
            aof = directory / "aof"
            first = write_segment(aof, 0, bytes(bad[:split]))
            second = write_segment(aof, split, bytes(bad[split:]))
            before = [s.read_bytes() for s in (first, second)]
            if k >= N_OPS // 2:
                # The last segment: the writer refuses to open it.
                with pytest.raises(om.CorruptFrameError) as caught:
                    Persistence.open(directory)
                assert caught.value.path == str(second)
                assert caught.value.offset == starts[k] - split
            else:
                # An earlier segment: the replay refuses to go past it.
                with pytest.raises(om.RecoveryError) as caught2:
                    Persistence.open(directory)
                assert first.name in str(caught2.value)
                assert f"offset {starts[k]}" in str(caught2.value)
            assert [s.read_bytes() for s in (first, second)] == before, "nothing was cut"


def test_a_length_past_the_limit_stops_recovery_as_oversized_and_cuts_nothing(
    tmp_path: Path, log: tuple[list[om.Operation], bytes, list[int]]
) -> None:
    _, data, ends = log
    split = ends[N_OPS // 2 - 1]
    for k, where in ((N_OPS - 2, "last"), (3, "earlier")):
        bad = bytearray(data)
        bad[ends[k] : ends[k] + 4] = (0xFFFFFFF0).to_bytes(4, "little")
        directory = tmp_path / where
        aof = directory / "aof"
        first = write_segment(aof, 0, bytes(bad[:split]))
        second = write_segment(aof, split, bytes(bad[split:]))
        before = [s.read_bytes() for s in (first, second)]
        limit = f"oversized (limit {om.DEFAULT_MAX_PAYLOAD_LEN})"
        # In the last segment the writer refuses to open it, in an earlier
        # one the replay: the same way, as oversized, not as corruption.
        with pytest.raises(om.OversizedFrameError) as caught:
            Persistence.open(directory)
        assert not isinstance(caught.value, om.CorruptFrameError)
        segment, offset = (second, ends[k] - split) if where == "last" else (first, ends[k])
        assert (caught.value.path, caught.value.offset) == (str(segment), offset)
        assert caught.value.length == 0xFFFFFFF0
        message = str(caught.value)
        assert "max_payload" in message
        assert limit in message and "corrupt" not in message
        assert [s.read_bytes() for s in (first, second)] == before, "nothing was cut"
