"""The fsync benchmark's machinery runs end to end (speed is not asserted:
that is the benchmark's own job, as ratios in one run)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from openmatch_persistence.bench import fsync
from openmatch_persistence.bench.chart import Bar, Series, bar_chart
from openmatch_persistence.cli import main


def test_svg_chart_has_title_legend_and_quick_mark(tmp_path: Path) -> None:
    out = tmp_path / "chart.svg"
    series = [Series("baseline", "#555"), Series("writer <always>", "#16c")]
    bars = [Bar("raw", 1000.0, "baseline"), Bar("always & co", 20000.0, "writer <always>")]
    bar_chart(out, "title 1.5/2", bars, series, subtitle=["machine: m"], warning="QUICK RUN")
    root = ElementTree.parse(out).getroot()  # well-formed XML, escapes included
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts[:3] == ["title 1.5/2", "machine: m", "QUICK RUN"]
    assert "writer <always>" in texts and "always & co" in texts  # the legend and a label
    assert "20,000" in texts and "1k" in texts and "10k" in texts


def test_suite_runs_and_reports_targets(tmp_path: Path) -> None:
    report = fsync.run(tmp_path, duration=0.02, redis=False, rounds=1)
    keys = [r.key for r in report.rows]
    assert keys[:3] == ["raw_rust", "raw_python", "always_1"]
    assert all(r.rate > 0 for r in report.rows if not r.key.startswith("redis"))
    assert report.targets[0].label.startswith("always, 1 thread")
    table = fsync.format_table(report)
    assert "| target |" in table and "skipped (--no-redis)" in table
    assert list(tmp_path.iterdir()) == [], "scratch files are removed"


def test_cli_writes_table_and_chart(tmp_path: Path) -> None:
    chart = tmp_path / "out.svg"
    work = tmp_path / "work"
    work.mkdir()
    args = ["--dir", str(work), "--duration", "0.01", "--rounds", "1", "--no-redis"]
    code = main(["bench", "fsync", *args, "--chart", str(chart)])
    assert code == 0
    text = chart.read_text(encoding="utf-8")
    # One round: marked as a quick run; the title names the machine.
    assert "QUICK RUN" in text and f"machine: {fsync.machine_description()}" in text
    assert "Redis skipped" in text


def test_a_case_that_uses_up_its_pool_ends_its_measurement_there() -> None:
    """A loaded machine can oversleep a slice: the case stops where its
    fresh operations end, counting what it did, instead of failing."""
    calls = 0

    def work() -> int:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise fsync.PoolExhausted("test")
        return 8

    total, seconds = fsync.run_threads(1, 60.0, work)
    assert total == 40 and seconds < 60.0
