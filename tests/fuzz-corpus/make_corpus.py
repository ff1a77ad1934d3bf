"""Regenerates the seed corpus of the scanner fuzz tests (``python make_corpus.py``).

Each file is a small AOF segment; ``expected.txt`` says what a scan of it
must report: ``name outcome cause frames`` (cause ``-`` when clean). The
Rust tests (``rust/openmatch-aof/tests/scanner.rs``) and the Python fuzz
tests (``tests/test_fuzz.py``) both replay it, and hypothesis mutates it.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_scanner import frame_ends, sample_ops  # noqa: E402

import openmatch_persistence as om  # noqa: E402


def main() -> None:
    ops = sample_ops()
    good = om.encode_many(ops)
    ends = frame_ends(ops)

    def flipped(at: int) -> bytes:
        b = bytearray(good)
        b[at] ^= 0x10
        return bytes(b)

    def with_length(frame: int, length: int) -> bytes:
        at = 0 if frame == 0 else ends[frame - 1]
        b = bytearray(good)
        b[at : at + 4] = length.to_bytes(4, "little")
        return bytes(b)

    def bad_payload() -> bytes:
        # Tag 9 is no variant: a good checksum over an undecodable payload.
        import zlib

        payload = (9).to_bytes(4, "little") + bytes(12)
        header = len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little")
        return good + header + payload

    cases = {
        "empty.aof": (b"", "clean", "-", 0),
        "valid.aof": (good, "clean", "-", 7),
        "torn-header.aof": (good + good[:5], "torn_tail", "torn", 7),
        "torn-payload.aof": (good[:-3], "torn_tail", "torn", 6),
        "zeroed-tail.aof": (good + bytes(300), "torn_tail", "zeroed_tail", 7),
        "zero-then-data.aof": (
            good[: ends[2]] + bytes(8) + good[ends[2] :],
            "corrupt",
            "zero_length",
            3,
        ),
        "checksum.aof": (flipped(ends[1] + 20), "corrupt", "checksum_mismatch", 2),
        "oversized.aof": (with_length(4, 0xFFFFFFF0), "oversized", "oversized_length", 4),
        "length-past-end.aof": (with_length(2, len(good)), "corrupt", "length_past_end", 2),
        "undecodable.aof": (bad_payload(), "corrupt", "undecodable_payload", 7),
    }
    lines = []
    for name, (data, outcome, cause, frames) in cases.items():
        (HERE / name).write_bytes(data)
        lines.append(f"{name} {outcome} {cause} {frames}")
    (HERE / "expected.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
