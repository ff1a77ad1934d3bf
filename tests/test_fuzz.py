"""Bounded fuzzing of the scanner and the frame decoder from Python.

Arbitrary bytes and mutations of the seed corpus (``tests/fuzz-corpus/``):
no panic, no hang, no untyped error, and never an operation that was not
written. Bounded (a few hundred examples, small inputs) to stay a few
seconds in CI; raise ``--hypothesis-seed``/``max_examples`` locally to dig.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scanner import sample_ops

import openmatch_persistence as om

CORPUS = Path(__file__).resolve().parent / "fuzz-corpus"
OUTCOMES = {"clean", "torn_tail", "oversized", "corrupt"}
CAUSES = {
    "torn",
    "zeroed_tail",
    "checksum_mismatch",
    "oversized_length",
    "zero_length",
    "undecodable_payload",
    "trailing_bytes",
    "torn_mid_log",
    "length_past_end",
    "segment_gap",
    "segment_overlap",
}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)


def corpus() -> list[tuple[str, str, str, int]]:
    rows = []
    for line in (CORPUS / "expected.txt").read_text().splitlines():
        name, outcome, cause, frames = line.split()
        rows.append((name, outcome, cause, int(frames)))
    return rows


@pytest.mark.parametrize(("name", "outcome", "cause", "frames"), corpus())
def test_seed_corpus_outcomes(name: str, outcome: str, cause: str, frames: int) -> None:
    report = om.verify(CORPUS / name)
    assert (report.outcome, report.cause or "-", report.frames) == (outcome, cause, frames)
    data = (CORPUS / name).read_bytes()
    keys = ("outcome", "cause", "position", "offset", "tail_bytes", "frames", "bytes", "counts")
    in_memory = om.verify_bytes(data).to_dict()
    assert {k: in_memory[k] for k in keys} == {k: report.to_dict()[k] for k in keys}


def check_report(report: om.ScanReport, size: int) -> None:
    assert report.outcome in OUTCOMES
    assert report.position <= size
    if report.is_clean:
        assert report.cause is None and report.position == size
    else:
        assert report.cause in CAUSES
    if report.is_torn_tail:
        assert report.position + report.tail_bytes == size
    # Oversized is its own outcome, decided by the cause alone.
    assert report.is_oversized == (report.cause == "oversized_length")
    assert report.is_oversized == (report.outcome == "oversized")
    if report.is_oversized:
        assert not report.is_corrupt and report.tail_bytes == 0


def check_scan(data: bytes, chunk_size: int) -> om.ScanReport:
    scanner = om.scan_bytes(data, max_payload=4096, chunk_size=chunk_size, batch_size=3)
    positions = [pos for pos, _ in scanner]
    report = scanner.result
    assert report is not None
    check_report(report, len(data))
    assert len(positions) == report.frames
    assert positions == sorted(positions)
    fast = om.verify_bytes(data, max_payload=4096, decode=False)
    check_report(fast, len(data))
    # Checksums first: the frames-only scan never gets further than the full one
    # except past a checksummed-but-undecodable payload.
    assert fast.frames >= report.frames
    return report


@FUZZ
@given(data=st.binary(max_size=4096), chunk_size=st.integers(1, 300))
def test_arbitrary_bytes(data: bytes, chunk_size: int) -> None:
    check_scan(data, chunk_size)


@FUZZ
@given(data=st.binary(max_size=512))
def test_decoder_on_arbitrary_bytes_raises_only_frame_errors(data: bytes) -> None:
    for fn in (om.decode, om.decode_all):
        try:
            fn(data, max_payload=4096)
        except om.FrameError as e:
            assert e.offset <= len(data)


def mutations() -> st.SearchStrategy[tuple[str, bytes]]:
    names = [row[0] for row in corpus()]

    @st.composite
    def mutate(draw: st.DrawFn) -> tuple[str, bytes]:
        name = draw(st.sampled_from(names))
        data = bytearray((CORPUS / name).read_bytes())
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "truncate", "insert", "zero", "splice"]))
            at = draw(st.integers(0, len(data)))
            if kind == "flip" and at < len(data):
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "truncate":
                del data[at:]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "zero":
                end = min(len(data), at + draw(st.integers(1, 64)))
                data[at:end] = bytes(end - at)
            else:
                data[at : at + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
        return name, bytes(data)

    return mutate()


@FUZZ
@given(case=mutations(), chunk_size=st.integers(1, 300))
def test_mutated_corpus(case: tuple[str, bytes], chunk_size: int) -> None:
    check_scan(case[1], chunk_size)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=3))
def test_bit_flips_never_yield_an_unwritten_op(flips: list[tuple[int, int]]) -> None:
    written = sample_ops()
    data = bytearray(om.encode_many(written))
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    got = [op for _, op in om.scan_bytes(bytes(data))]
    assert got == written[: len(got)]
    assert len(got) < len(written) or bytes(data) == om.encode_many(written)


def test_a_huge_length_allocates_nothing() -> None:
    # 4 GiB claimed; the scan must refuse it on the bound, not try to read it.
    data = bytes.fromhex("fffffffe00000000") + bytes(64)
    report = om.verify_bytes(data)
    assert report.is_oversized and report.cause == "oversized_length"
    assert not report.is_corrupt and report.outcome == "oversized"
    report = om.verify_bytes(data, max_payload=2**32 - 1)
    assert report.is_torn_tail and report.cause == "torn"
