"""The hot state does not grow with history (docs/state.md): over a long
workload the open orders, the held epochs, the id window and the state
image stay flat once the id window has filled. The Rust tests check the
rules; this checks the facade end to end, with the flusher and snapshots
running, and that the database still gets every row."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest

from openmatch_persistence import Persistence, _core
from openmatch_persistence.workload import Workload

#: 100 ms per step on average: the 10-minute id window fills after about
#: 12,000 orders and trades, well inside a CI-sized run.
TICK_NS = 200_000_000


def _sizes(p: Persistence) -> tuple[int, int, int, int]:
    state = p.state
    image = len(state.to_image())
    return state.order_count, state.epoch_count, state.retired_id_count, image


def _run(
    tmp_path: Path, total: int, marks: int
) -> tuple[list[tuple[int, int, int, int]], Counter[str]]:
    """The sizes at each mark, and how many operations of each kind."""
    ops = iter(Workload(seed=7, max_tick_ns=TICK_NS))
    sizes = []
    kinds: Counter[str] = Counter()
    with Persistence.open(tmp_path / "d", fsync="no", compaction=None) as p:
        step = total // marks
        for _ in range(marks):
            batch = list(islice(ops, step))
            kinds.update(op.kind for op in batch)
            p.append_many(batch)
            sizes.append(_sizes(p))
        p.flush()
        p.snapshot()
    return sizes, kinds


def _assert_flat(sizes: list[tuple[int, int, int, int]]) -> None:
    # Warm-up: the first marks fill the id window; after it, each measure
    # stays within 25 % of the first warm one.
    warm = sizes[len(sizes) // 2 :]
    for column in range(4):
        first = warm[0][column]
        for later in warm[1:]:
            assert later[column] <= first * 1.25 + 32, (column, sizes)


def test_memory_and_image_stay_flat_over_history(tmp_path: Path) -> None:
    sizes, kinds = _run(tmp_path, 120_000, 6)
    _assert_flat(sizes)
    open_orders = sizes[-1][0]
    assert open_orders < 200, "the open book is one batch"
    # Every row still reached the database: the history is there.
    with sqlite3.connect(tmp_path / "d" / "state.sqlite3") as db:
        (trades,) = db.execute("SELECT count(*) FROM trades").fetchone()
        (terminal,) = db.execute(
            "SELECT count(*) FROM orders WHERE status IN ('FILLED', 'CANCELLED')"
        ).fetchone()
    assert trades == kinds["TradeExecuted"] > 10_000
    assert terminal + open_orders == kinds["OrderReceived"]
    # A reopen recovers the hot state from the image and the log.
    with Persistence.open(tmp_path / "d", fsync="no", compaction=None) as p:
        assert _sizes(p)[:3] == sizes[-1][:3]


@pytest.mark.soak
def test_memory_and_image_stay_flat_over_a_long_history(tmp_path: Path) -> None:
    _assert_flat(_run(tmp_path, 3_000_000, 12)[0])


def test_recovery_from_rows_loads_the_hot_state_through_the_indexes(
    tmp_path: Path, database: str | None, store_sql: Callable[[Path, str | None, str], None]
) -> None:
    # Long enough for closed epochs and an id window that forgot ids.
    ops = list(islice(Workload(seed=11, max_tick_ns=TICK_NS), 30_000))
    with Persistence.open(tmp_path, database_url=database, compaction=None) as p:
        p.append_many(ops)
        expected = p.digest()
        state = p.state
        assert state.closed_epochs_through is not None
        first = next(op.order for op in ops if isinstance(op, _core.OrderReceived))
        assert state.order(first.id) is None and state.retired(first.id) is None  # forgotten
        p.flush()
        store = p._store
        hot = store.load_hot_state()
        assert hot is not None
        # Only the hot part is read: open orders, the ids inside the window.
        assert len(hot.orders) == state.order_count
        assert len(hot.retired_order_ids) + len(hot.retired_trade_ids) == state.retired_id_count
        assert len(hot.epochs) == state.epoch_count
    store_sql(tmp_path, database, "DELETE FROM persistence_state_image")
    with Persistence.open(tmp_path, database_url=database) as p:
        assert p.recovery.snapshot_source == "rows"
        assert p.digest() == expected
