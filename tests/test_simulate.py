"""The main job: `simulate`, its `--crash-after`, and `status`."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from itertools import islice
from pathlib import Path

from openmatch_persistence import _core
from openmatch_persistence.workload import Workload, take

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
    assert status["image"]["position"] == status["aof_end"] and status["warnings"] == []


def test_simulate_reports_what_it_measured_at_the_counts_asked(tmp_path: Path) -> None:
    done = run(
        "simulate", "--ops", "3000", "--data-dir", str(tmp_path / "d"), "--seed", "2",
        "--fsync", "no", "--report-at", "1000,2000", "--json",
    )  # fmt: skip
    reports = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [r["operations"] for r in reports] == [1000, 2000]
    for r in reports:
        assert r["image_bytes"] > 0 and r["rss_bytes"] > 0
        parts = r["snapshot_flush_seconds"] + r["snapshot_image_seconds"]
        assert r["snapshot_image_seconds"] > 0 and abs(r["snapshot_seconds"] - parts) < 0.001
    summary = json.loads(done.stdout)
    assert summary["aof_bytes_max"] > 0 and summary["failures"] == []
    assert summary["flush_lag_p99"] >= 0


def test_a_failing_compaction_is_the_last_word_of_the_run(tmp_path: Path) -> None:
    # The database refuses state images (a trigger): every compaction's
    # snapshot fails, and so does the image at close.
    data = tmp_path / "d"
    run("simulate", "--ops", "200", "--data-dir", str(data), "--seed", "3")
    with sqlite3.connect(data / "state.sqlite3") as db:
        for event in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON persistence_state_image "
                "BEGIN SELECT RAISE(ABORT, 'images refused by the test'); END"
            )
    failed = run(
        "simulate", "--ops", "3000", "--data-dir", str(data), "--compact-bytes", "20000",
        check=False,
    )  # fmt: skip
    lines = failed.stdout.strip().splitlines()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert lines[-1].startswith("  WARNING:"), lines[-3:]
    assert any("compaction is failing" in line for line in lines)
    assert "images refused by the test" in lines[-1]


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


def _state_of(ops: list[_core.Operation]) -> _core.State:
    state = _core.State()
    for position, op in enumerate(ops, 1):
        state.apply(op, position)
    return state


def _encoded(ops: list[_core.Operation]) -> list[bytes]:
    return [_core.encode(op) for op in ops]


def test_a_continuing_workload_goes_on_from_the_state_without_breaking_it() -> None:
    old = take(1200, seed=1)
    state = _state_of(old)
    epochs = state.epochs()
    # The last epoch is cut off mid-way, as a crash leaves it.
    assert any(e.phase != _core.EpochPhase.FINALIZE for e in epochs)
    balances = {(b.user_id, b.asset): b for b in state.balances()}
    clock = state.clock_ns
    used = {o.id for o in state.orders()} | {o.sr_id for o in state.orders()}

    new = list(islice(Workload.continuing(state, seed=1), 1500))

    orders = [op.order for op in new if isinstance(op, _core.OrderReceived)]
    trades = [op.trade for op in new if isinstance(op, _core.TradeExecuted)]
    assert orders and trades
    assert used.isdisjoint({o.id for o in orders} | {t.id for t in trades})
    new_epochs = [op.epoch_id for op in new if isinstance(op, _core.EpochAdvanced)]
    assert min(new_epochs) > max(e.epoch_id for e in epochs)
    assert min(o.created_at_ns for o in orders) > clock
    assert min(t.executed_at_ns for t in trades) > clock
    assert {o.user_id for o in orders} <= {user for user, _ in balances}
    # No funding: each balance update moves the state's value (then the
    # previous update's) by the amount of the trade before it.
    current = {key: b.available for key, b in balances.items()}
    trade: _core.Trade | None = None
    moves = 0
    for op in new:
        if isinstance(op, _core.TradeExecuted):
            trade = op.trade
        elif isinstance(op, _core.BalanceUpdated):
            key = (op.user_id, op.asset)
            assert trade is not None and key in balances
            assert abs(op.available - current[key]) in (trade.quantity, trade.quote_amount)
            assert op.frozen == balances[key].frozen
            current[key] = op.available
            moves += 1
    assert moves > 0

    for position, op in enumerate(new, len(old) + 1):
        state.apply(op, position)
    assert state.violations() == []
    state.check()


def test_continuing_is_deterministic_in_the_seed_and_the_state() -> None:
    old = take(900, seed=5)
    one = list(islice(Workload.continuing(_state_of(old), seed=7), 800))
    # Another state with the same content gives the same operations.
    assert _encoded(one) == _encoded(list(islice(Workload.continuing(_state_of(old), seed=7), 800)))
    assert _encoded(one) != _encoded(list(islice(Workload.continuing(_state_of(old), seed=8), 800)))
    # An empty state has nothing to continue: the seed's fresh stream.
    assert _encoded(list(islice(Workload.continuing(_core.State(), seed=5), 900))) == _encoded(old)


def test_simulate_twice_then_crash_on_one_data_dir_keeps_the_state_consistent(
    tmp_path: Path,
) -> None:
    """Issue #12: a second run with the same seed used to repeat the first
    run's order, trade and epoch ids."""
    data = tmp_path / "data"
    first = run("simulate", "--ops", "2000", "--seed", "1", "--data-dir", str(data)).stdout
    assert "continuing" not in first
    second = run("simulate", "--ops", "2000", "--seed", "1", "--data-dir", str(data)).stdout
    resumed = re.search(r"continuing from position (\d+): (\d+) orders, last epoch (\d+)", second)
    assert resumed, second
    assert int(resumed.group(2)) > 0 and int(resumed.group(3)) > 0
    assert "recovery check OK" in second
    # --crash-after counts this run's operations; 0 could never fire.
    refused = run("simulate", "--crash-after", "0", "--data-dir", str(data), check=False)
    assert refused.returncode != 0 and "--crash-after must be >= 1" in refused.stderr
    assert "Traceback" not in refused.stderr
    crash = run(
        "simulate", "--ops", "2000", "--seed", "1", "--crash-after", "1500",
        "--data-dir", str(data),
        check=False,
    )  # fmt: skip
    assert crash.returncode == -9, crash.stderr
    assert "continuing from position" in crash.stdout
    report = json.loads(run("recover", str(data), "--json").stdout)
    assert report["replayed"] == 1500
    # Recovery checks the state it rebuilt from the snapshot; a replay of
    # the whole AOF also meets every operation of the three runs.
    state = _core.State()
    assert _core.replay(state, data / "aof")["outcome"] == "clean"  # raises at a violation
    assert state.violations() == []
    assert state.digest() == report["digest"]
    # The same 50 users throughout: the later runs funded nobody new.
    assert len({b.user_id for b in state.balances()}) == 50
