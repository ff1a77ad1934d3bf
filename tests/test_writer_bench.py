"""The fsync benchmark's machinery runs end to end (speed is not asserted:
that is the benchmark's own job, as ratios in one run)."""

from __future__ import annotations

import zlib
from pathlib import Path

from openmatch_persistence.bench import fsync
from openmatch_persistence.bench.chart import bar_chart
from openmatch_persistence.cli import main


def test_png_chart_is_a_valid_png(tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    bar_chart(out, "title 1.5/2", [("raw", 1000.0, (0, 0, 0)), ("none", 0.0, (9, 9, 9))])
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    # Every chunk's CRC is right and the image data inflates.
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 4 : pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big")
        assert zlib.crc32(body) == crc, kind
        if kind == b"IDAT":
            idat += body[4:]
        pos += 12 + length
    assert zlib.decompress(idat)


def test_suite_runs_and_reports_targets(tmp_path: Path) -> None:
    report = fsync.run(tmp_path, duration=0.02, redis=False, rounds=1)
    keys = [r.key for r in report.rows]
    assert keys[:3] == ["raw_rust", "raw_python", "always_1"]
    assert all(r.rate > 0 for r in report.rows if not r.key.startswith("redis"))
    assert report.targets[0].label.startswith("always, 1 thread")
    table = fsync.format_table(report)
    assert "| target |" in table and "skipped (--no-redis)" in table
    assert list(tmp_path.iterdir()) == [], "scratch files are removed"


def test_cli_writes_table_and_chart(tmp_path: Path, capsys: object) -> None:
    png = tmp_path / "out.png"
    work = tmp_path / "work"
    work.mkdir()
    args = ["--dir", str(work), "--duration", "0.01", "--rounds", "1", "--no-redis"]
    code = main(["bench", "fsync", *args, "--png", str(png)])
    assert code == 0 and png.read_bytes().startswith(b"\x89PNG")
