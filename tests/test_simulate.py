"""The main job: `simulate`, its `--crash-after`, and `status`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "openmatch_persistence"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check, timeout=300)


def test_simulate_runs_the_pipeline_and_checks_recovery(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = run(
        "simulate", "--ops", "3000", "--data-dir", str(data), "--seed", "1",
        "--compact-bytes", "100000",
    ).stdout  # fmt: skip
    assert "simulated 3000 operations" in out
    assert re.search(r"fsyncs\s+\d+ \(\d+\.\d operations each\)", out)
    assert re.search(r"append latency p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert re.search(r"compactions\s+[1-9]", out), out
    assert "recovery check OK" in out
    # A second run continues the same data directory (epochs go on).
    assert "recovery check OK" in run("simulate", "--ops", "500", "--data-dir", str(data)).stdout
    status = json.loads(run("status", str(data), "--json").stdout)
    assert status["snapshot"]["position"] == status["aof_end"]
    assert status["flush_lag_bytes"] == 0
    assert status["segments"] and status["aof_bytes"] > 0


def test_crash_after_n_then_recover_brings_every_acknowledged_operation_back(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    crash = run(
        "simulate", "--ops", "5000", "--crash-after", "777", "--batch", "10",
        "--data-dir", str(data), "--seed", "2",
        check=False,
    )  # fmt: skip
    assert crash.returncode == -9, crash.stderr
    acked = re.search(r"acknowledged 777 operations up to position (\d+)", crash.stdout)
    assert acked, crash.stdout
    report = json.loads(run("recover", str(data), "--json").stdout)
    assert report["replay_to"] == int(acked.group(1))
    # The AOF holds exactly the acknowledged operations, and replaying all of
    # them gives the state that snapshot + replay gave.
    full = json.loads(run("recover", str(data), "--json", "--ignore-snapshot").stdout)
    assert full["replayed"] == 777
    assert full["digest"] == report["digest"]
