"""Prometheus metrics of a Persistence, read from its own statistics."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from factories import order
from prometheus_client import CollectorRegistry, generate_latest

from openmatch_persistence import EpochAdvanced, EpochPhase, OrderReceived, Persistence
from openmatch_persistence.cli import main
from openmatch_persistence.metrics import PREFIX, PersistenceCollector, serve

WANTED = [
    "appends_total",
    "appended_bytes_total",
    "fsyncs_total",
    "fsync_duration_seconds_count",
    'fsync_duration_seconds_bucket{le="+Inf"}',
    'fsync_duration_seconds_bucket{le="0.001"}',
    "fsync_duration_seconds_sum",
    "records_per_fsync",
    "flush_lag_seconds",
    "flush_lag_bytes",
    "flush_failures_total",
    "compactions_total",
    "recovery_duration_seconds",
    "writer_failed",
]


def _samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_the_collector_reads_the_persistence_statistics(tmp_path: Path) -> None:
    with Persistence.open(tmp_path / "d") as p:
        p.append(EpochAdvanced(1, EpochPhase.COLLECT))
        p.append_many([OrderReceived(order(n, "1")) for n in range(1, 4)])
        registry = CollectorRegistry()
        registry.register(PersistenceCollector(p))
        samples = _samples(generate_latest(registry).decode())
        stats = p.stats()
    for name in WANTED:
        assert PREFIX + name in samples, name
    assert all(name.startswith(PREFIX) for name in samples)
    assert samples[PREFIX + "appends_total"] == stats["writer"]["appends"] == 4
    assert samples[PREFIX + "appended_bytes_total"] == stats["writer"]["bytes"]
    assert samples[PREFIX + "writer_failed"] == 0
    # The histogram counts every fsync: cumulative buckets up to +Inf.
    fsyncs = stats["writer"]["fsyncs"]
    assert fsyncs >= 2 and samples[PREFIX + 'fsync_duration_seconds_bucket{le="+Inf"}'] == fsyncs
    counts = [
        v for k, v in samples.items() if k.startswith(PREFIX + "fsync_duration_seconds_bucket")
    ]
    assert counts == sorted(counts) and samples[PREFIX + "fsync_duration_seconds_count"] == fsyncs


def test_served_on_localhost(tmp_path: Path) -> None:
    with Persistence.open(tmp_path / "d") as p:
        server = serve(p, 0)
        try:
            assert server.url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(server.url, timeout=30) as response:
                text = response.read().decode()
        finally:
            server.close()
    assert re.search(rf"^{PREFIX}appends_total 0\.0$", text, re.M)


def test_simulate_serves_metrics_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--data-dir", str(tmp_path / "d"), "--ops", "50", "--metrics-port", "0"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"metrics on http://127\.0\.0\.1:\d+/metrics", err)
