"""The flusher: everything taken reaches the store, failed transactions lose
nothing, memory stays bounded by the state, lag is visible."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from factories import oid, order
from test_store_support import (
    FakeState,
    assert_store_holds,
    make_balance,
    make_epoch,
    make_order,
    make_trade,
)

import openmatch_persistence as om
from openmatch_persistence import EpochPhase, OrderStatus, _core
from openmatch_persistence.errors import StoreError, WriterFailedError
from openmatch_persistence.flusher import AsyncFlusher, Flusher, FlusherStats
from openmatch_persistence.store import ChangeBatch, ChangeSource, WriteResult

pytest_plugins = ["test_store_support"]  # the store fixtures


def produce(state: FakeState, rounds: int, keys: int = 5) -> None:
    """Orders that change status many times, trades between them, balances
    and epochs: many operations over few keys."""
    orders = [make_order() for _ in range(keys)]
    balances = [make_balance(user_id=o.user_id) for o in orders]
    for o in orders:
        state.put_order(o)
    for i in range(rounds):
        k = i % keys
        o = orders[k]
        o = make_order(id=o.id, user_id=o.user_id, sr_id=o.sr_id, sequence=i,
                       status=OrderStatus.PARTIALLY_FILLED,
                       remaining_qty=Decimal(i % 7) / 4)  # fmt: skip
        orders[k] = o
        state.put_order(o)
        b = balances[k]
        state.put_balance(make_balance(user_id=b.user_id, asset=b.asset,
                                       available=Decimal(i) / 100))  # fmt: skip
        if i % 10 == 0:
            state.put_trade(make_trade(o, orders[(k + 1) % keys], epoch_id=i // 10))
            state.put_epoch(make_epoch(epoch_id=i // 10, phase=EpochPhase.MATCH))


def test_the_fake_state_is_a_change_source() -> None:
    assert isinstance(FakeState(), ChangeSource)


def test_a_running_flusher_writes_everything(any_store: Any) -> None:
    state = FakeState()
    flusher = Flusher(any_store, state, interval=0.01)
    with flusher:
        produce(state, 300)
    assert_store_holds(any_store, state)
    stats = flusher.stats()
    assert stats.pending_rows == 0 and stats.flushed_position == state.position
    assert stats.seconds_behind == 0.0


class FlakyStore:
    """Fails the first ``failures`` writes, as a database outage would."""

    def __init__(self, store: Any, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.batches: list[ChangeBatch] = []

    def write_changes(self, batch: ChangeBatch) -> WriteResult:
        self.batches.append(batch)
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database unreachable (simulated)")
        result: WriteResult = self.store.write_changes(batch)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_flushes_lose_nothing_and_memory_stays_bounded(
    sqlite_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = FakeState()
    flaky = FlakyStore(sqlite_store, failures=50)
    clock = FakeClock()
    flusher = Flusher(flaky, state, backoff_min=0.0, clock=clock)
    keys = 5
    produce(state, 10, keys)
    with caplog.at_level(logging.WARNING, "openmatch_persistence.flusher"):
        for _ in range(50):
            produce_more(state, keys)
            clock.now += 0.1
            with pytest.raises(StoreError):
                flusher.flush()
            stats = flusher.stats()
            # The latest row per key only: never more rows than the state has.
            assert stats.pending_rows <= len(state.orders) + len(state.trades) + len(
                state.balances
            ) + len(state.epochs)
    assert stats.consecutive_failures == 50 and stats.failures == 50
    assert stats.aof_bytes_behind == state.position and stats.seconds_behind == pytest.approx(4.9)
    assert "failed" in caplog.text and "behind" in caplog.text
    result = flusher.flush()
    assert result is not None and not result.stale
    assert_store_holds(sqlite_store, state)
    assert flusher.stats().consecutive_failures == 0
    assert flusher.stats().seconds_behind == 0.0


def produce_more(state: FakeState, keys: int) -> None:
    # Update the same keys again: the outage is long, the state is not.
    for o in list(state.orders.values())[:keys]:
        state.put_order(make_order(id=o.id, user_id=o.user_id, sr_id=o.sr_id,
                                   sequence=o.sequence + 1))  # fmt: skip


def test_newer_rows_win_over_a_failed_batch(sqlite_store: Any) -> None:
    state = FakeState()
    flaky = FlakyStore(sqlite_store, failures=1)
    flusher = Flusher(flaky, state, backoff_min=0.0)
    o = make_order(status=OrderStatus.ACTIVE)
    state.put_order(o)
    flusher.collect()
    # The write fails after taking the batch; meanwhile the order is filled.
    state.put_order(make_order(id=o.id, user_id=o.user_id, sr_id=o.sr_id,
                               status=OrderStatus.FILLED))  # fmt: skip
    with pytest.raises(StoreError):
        flusher.write_pending()
    flusher.flush()
    assert_store_holds(sqlite_store, state)
    assert sqlite_store.load_state().orders[0].status == OrderStatus.FILLED


def test_async_flusher(any_store: Any) -> None:
    state = FakeState()

    async def main() -> None:
        async with AsyncFlusher(any_store, state, interval=0.01) as flusher:
            for _ in range(20):
                produce(state, 5)
                await asyncio.sleep(0.005)
            assert flusher.stats().failures == 0
        assert_store_holds(any_store, state)

    asyncio.run(main())


def test_the_async_flusher_runs_one_task_and_flushes_what_is_left_when_stopped(
    sqlite_store: Any,
) -> None:
    state = FakeState()

    def tasks() -> set[str]:
        return {t.get_name() for t in asyncio.all_tasks()}

    async def main() -> None:
        flusher = AsyncFlusher(sqlite_store, state, interval=60.0)
        assert flusher.flusher.interval == 60.0
        await flusher.start()
        with pytest.raises(RuntimeError, match=r"^the flusher is already running$"):
            await flusher.start()
        assert "openmatch-flusher" in tasks()
        for _ in range(1000):  # its first cycle runs at once (an empty log's position)
            if flusher.stats().flushes:
                break
            await asyncio.sleep(0.01)
        assert flusher.stats().flushes == 1
        state.put_order(make_order())
        await flusher.stop()  # the next cycle is a minute away: the final flush writes it
        assert_store_holds(sqlite_store, state)
        assert "openmatch-flusher" not in tasks()
        await flusher.start()  # a stopped flusher starts again
        await flusher.stop(final_flush=False)

    asyncio.run(main())


def test_both_faces_keep_flushing_until_stopped_and_run_once(sqlite_store: Any) -> None:
    state = FakeState()

    def caught_up(flusher: Flusher | AsyncFlusher) -> bool:
        return flusher.stats().flushed_position == state.position

    async def main() -> None:
        async with AsyncFlusher(sqlite_store, state, interval=0.01) as flusher:
            for _ in range(3):  # each by a cycle of its own, not by stop's flush
                state.put_order(make_order())
                for _ in range(1000):
                    if caught_up(flusher):
                        break
                    await asyncio.sleep(0.01)
                assert caught_up(flusher)

    asyncio.run(main())
    with Flusher(sqlite_store, state, interval=0.01) as threaded:
        with pytest.raises(RuntimeError, match=r"^the flusher is already running$"):
            threaded.start()
        # Named for a thread dump; a daemon, so a program that never closes
        # its Persistence can still exit.
        [thread] = [t for t in threading.enumerate() if t.name == "openmatch-flusher"]
        assert thread.daemon
        state.put_order(make_order())
        for _ in range(1000):
            if caught_up(threaded):
                break
            threading.Event().wait(0.01)
        assert caught_up(threaded)
    assert not thread.is_alive()  # stop joined it
    threaded.start()  # and a stopped flusher starts again
    threaded.stop()


def test_stop_gives_up_waiting_for_a_stuck_cycle_after_its_timeout(sqlite_store: Any) -> None:
    # close() must return (the AOF has everything) even when a flush hangs.
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        def write_changes(self, batch: ChangeBatch) -> WriteResult:
            entered.set()
            release.wait()
            result: WriteResult = sqlite_store.write_changes(batch)
            return result

    state = FakeState()
    state.put_order(make_order())
    flusher = Flusher(Stuck(), state, interval=0.01)  # type: ignore[arg-type]
    flusher.start()
    assert entered.wait(60)
    flusher.stop(final_flush=False, timeout=0.05)  # returns, the cycle still stuck
    assert not release.is_set()
    release.set()


def test_stop_reports_a_final_flush_that_failed(sqlite_store: Any) -> None:
    state = FakeState()
    flusher = Flusher(FlakyStore(sqlite_store, failures=1000), state, interval=0.01)
    flusher.start()
    state.put_order(make_order())
    with pytest.raises(StoreError, match="simulated"):
        flusher.stop()
    assert flusher.stats().pending_rows == 1


def test_the_thread_survives_failures_and_catches_up(sqlite_store: Any) -> None:
    state = FakeState()
    flaky = FlakyStore(sqlite_store, failures=3)
    done = threading.Event()
    flusher = Flusher(flaky, state, interval=0.01, backoff_min=0.01, backoff_max=0.02)
    with flusher:
        produce(state, 50)
        while flusher.stats().failures < 3:
            done.wait(0.01)
    assert_store_holds(sqlite_store, state)


def _taken(position: int, clock_ns: int, closed: int, rows: bool = False) -> _core.StateChanges:
    """One take of a change source: rows, and the state's clock and closed
    epochs at its position (a change set gets those from a state's take
    only: here an empty state's, made at them)."""
    taken = _core.StateChanges([make_order()] if rows else [])
    state = _core.State.from_snapshot(
        [], [], [], [], position, clock_ns=clock_ns, closed_epochs_through=closed
    )
    state.take_changes_into(taken)
    return taken


class _Takes:
    """A change source that hands over the given takes, one per call."""

    def __init__(self, *takes: _core.StateChanges) -> None:
        self._takes = iter(takes)

    def take_changes_into(self, target: _core.StateChanges) -> int:
        taken = next(self._takes)
        target.absorb(taken)
        return len(taken)


def test_a_failed_batch_goes_back_with_its_clock_and_closed_epochs(sqlite_store: Any) -> None:
    # The checkpoint's clock and closed epochs say where recovery's id
    # window and hot epochs start: a retried batch must carry those of its
    # position, not lose them to the failure.
    flaky = FlakyStore(sqlite_store, failures=1)
    flusher = Flusher(flaky, _Takes(_taken(300, 7_000, 4), _taken(300, 7_000, 4)))
    flusher.collect()
    with pytest.raises(StoreError):
        flusher.write_pending()
    assert flusher.stats().taken_position == 300
    flusher.write_pending()  # the batch put back, alone
    retried = flaky.batches[-1]
    assert (retried.position, retried.clock_ns, retried.closed_epochs_through) == (300, 7_000, 4)
    checkpoint = sqlite_store.checkpoint()
    assert (checkpoint.clock_ns, checkpoint.closed_epochs_through) == (7_000, 4)


def test_a_batch_put_back_never_moves_the_position_or_the_oldest_change_forward() -> None:
    # restore() keeps, of the failed batch and the takes since, the newest
    # position (with its clock) and the oldest change's time.
    from openmatch_persistence.flusher import _Pending

    def pending(position: int, clock: int, now: float, rows: bool = True) -> _Pending:
        p = _Pending()
        p.take_from(_taken(position, clock, clock // 1000, rows), now)
        return p

    newer = pending(500, 9_000, now=20.0)
    newer.restore(pending(300, 7_000, now=10.0))
    assert (newer.position, newer.clock_ns, newer.closed_epochs_through) == (500, 9_000, 9)
    assert newer.since == 10.0 and len(newer) == 2

    # Nothing taken since the failure: the batch comes back whole.
    empty = _Pending()
    empty.restore(pending(300, 7_000, now=10.0))
    assert (empty.taken, empty.position, empty.clock_ns, empty.since) == (True, 300, 7_000, 10.0)

    # A failed batch with no rows (only a position) has no oldest change.
    later = pending(500, 9_000, now=20.0)
    later.restore(pending(300, 7_000, now=10.0, rows=False))
    assert (later.position, later.since) == (500, 20.0)
    # A first flush of an empty log (position 0) that failed is retried.
    start = _Pending()
    start.restore(pending(0, 0, now=1.0, rows=False))
    assert (start.taken, start.position) == (True, 0)
    nothing = _Pending()
    nothing.restore(_Pending())
    assert (nothing.taken, nothing.position, nothing.since) == (False, 0, None)


def test_stats_count_every_stage_of_a_flush(sqlite_store: Any) -> None:
    state = FakeState()
    clock = FakeClock()
    flaky = FlakyStore(sqlite_store, failures=0)
    flusher = Flusher(flaky, state, backoff_min=0.5, backoff_max=1.5, clock=clock)
    fresh = flusher.stats()
    assert fresh == FlusherStats(
        flushed_position=None, taken_position=None, pending_rows=0, aof_bytes_behind=0,
        seconds_behind=0.0, flushes=0, rows_written=0, failures=0, consecutive_failures=0,
        last_error=None, orphan_trades=0,
    )  # fmt: skip

    state.put_order(make_order())
    state.put_order(make_order())
    flusher.collect()
    clock.now += 2.5
    assert flusher.stats() == replace(
        fresh, taken_position=200, pending_rows=2, aof_bytes_behind=200, seconds_behind=2.5
    )
    # While a batch is written it is still behind (and counted).
    seen: list[FlusherStats] = []
    write = sqlite_store.write_changes

    def watched(batch: ChangeBatch) -> WriteResult:
        seen.append(flusher.stats())
        result: WriteResult = write(batch)
        return result

    flaky.store = type("Watched", (), {"write_changes": staticmethod(watched)})()
    flusher.write_pending()
    assert seen == [
        replace(fresh, taken_position=200, pending_rows=2, aof_bytes_behind=200, seconds_behind=2.5)
    ]
    done = replace(fresh, flushed_position=200, taken_position=200, flushes=1, rows_written=2)
    assert flusher.stats() == done

    # A trade naming orders the database does not have; then an outage.
    taker, maker = make_order(), make_order()
    state.put_trade(make_trade(taker, maker))
    flusher.flush()
    assert flusher.stats() == replace(done, flushed_position=300, taken_position=300, flushes=2,
                                      rows_written=3, orphan_trades=1)  # fmt: skip
    flaky.failures = 3
    state.put_order(taker)
    for attempt, backoff in ((1, 0.5), (2, 1.0), (3, 1.5)):  # doubled, up to the maximum
        with pytest.raises(StoreError):
            flusher.flush()
        failed = flusher.stats()
        assert (failed.failures, failed.consecutive_failures) == (attempt, attempt)
        assert (failed.taken_position, failed.aof_bytes_behind, failed.pending_rows) == (
            400,
            100,
            1,
        )
        assert failed.last_error == "database unreachable (simulated)"
        assert not flusher.due()
        clock.now += backoff - 0.25
        assert not flusher.due()
        clock.now += 0.25
        assert flusher.due()
    flusher.flush()
    recovered = flusher.stats()
    assert (recovered.consecutive_failures, recovered.failures, recovered.flushed_position) == (
        0, 3, 400,
    )  # fmt: skip
    assert recovered.last_error == "database unreachable (simulated)"  # the last one seen
    assert recovered.orphan_trades == 1  # counted once, kept after flushes without any


def test_lag_is_the_age_of_the_oldest_change_while_the_database_takes_writes(
    sqlite_store: Any,
) -> None:
    # Appends hold back on lag_over: a database that fails is not "behind"
    # (the AOF keeps everything), one that is slow is.
    state = FakeState()
    clock = FakeClock()
    flaky = FlakyStore(sqlite_store, failures=0)
    flusher = Flusher(flaky, state, backoff_min=0.0, clock=clock)
    assert not flusher.lag_over(0.0)  # nothing taken
    state.put_order(make_order())
    flusher.collect()
    clock.now += 5.0
    state.put_order(make_order())
    flusher.collect()  # newer changes do not make the oldest younger
    assert flusher.lag_over(4.9) and not flusher.lag_over(5.0)
    flaky.failures = 1
    with pytest.raises(StoreError):
        flusher.write_pending()
    assert not flusher.lag_over(0.0)  # failing, not behind
    assert flusher.stats().seconds_behind == 5.0
    flusher.write_pending()
    assert not flusher.lag_over(0.0) and flusher.stats().seconds_behind == 0.0


def test_the_log_says_what_a_flush_did_with_its_numbers(
    sqlite_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The operator's record: failures with their attempt, backoff and lag,
    # the recovery, orphaned trades by id, batches dropped as stale.
    state = FakeState()
    clock = FakeClock()
    flaky = FlakyStore(sqlite_store, failures=0)
    flusher = Flusher(flaky, state, backoff_min=0.5, clock=clock)
    taker, maker = make_order(), make_order()
    trade = make_trade(taker, maker)
    with caplog.at_level(logging.INFO, "openmatch_persistence.flusher"):
        state.put_trade(trade)
        flusher.flush()
        flaky.failures = 1
        state.put_order(taker)
        flusher.collect()
        clock.now += 2.0
        with pytest.raises(StoreError):
            flusher.write_pending()
        flusher.flush()
        sqlite_store.write_changes(ChangeBatch(position=10**6))  # a newer checkpoint
        state.put_order(maker)
        stale = flusher.flush()
    assert stale is not None and stale.stale
    assert [r.getMessage() for r in caplog.records] == [
        "consistency: 1 trades at AOF position 100 name orders the database does not have; "
        f"kept in orphan_trades: {trade.id}",
        "flush to AOF position 200 failed (attempt 1, next in 0.5 s): database unreachable "
        "(simulated); the database is 1 rows / 100 AOF bytes / 2.0 s behind",
        "flush recovered after 1 failed attempts: the database is at AOF position 200",
        "dropped changes at AOF position 300: the database's checkpoint is newer",
    ]


def test_a_store_that_fails_with_another_error_raises_a_store_error(sqlite_store: Any) -> None:
    class Broken:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def write_changes(self, batch: ChangeBatch) -> WriteResult:
            raise self.error

    state = FakeState()
    state.put_order(make_order())
    cause = RuntimeError("driver bug")
    flusher = Flusher(Broken(cause), state)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"^flush to AOF position 100 failed: driver bug$") as e:
        flusher.flush()
    assert e.value.__cause__ is cause
    # An interrupt is no database error: it goes through as it is.
    state.put_order(make_order())
    flusher = Flusher(Broken(KeyboardInterrupt()), state)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        flusher.flush()
    assert flusher.stats().failures == 1 and flusher.stats().pending_rows == 1


def test_a_cycle_waits_at_most_an_interval_and_stops_only_for_a_failed_writer(
    sqlite_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = FakeState()
    clock = FakeClock()
    flaky = FlakyStore(sqlite_store, failures=1)
    flusher = Flusher(flaky, state, interval=0.5, backoff_min=1.0, clock=clock)
    state.put_order(make_order())
    wait = flusher.cycle()  # the database fails: retried after the backoff
    assert wait is not None and 0.0 <= wait <= 0.5
    assert len(flaky.batches) == 1 and flusher.stats().failures == 1
    state.put_order(make_order())
    flusher.cycle()  # backing off: collects, does not write
    assert len(flaky.batches) == 1 and flusher.stats().pending_rows == 2
    clock.now += 1.0
    flusher.cycle()
    assert flusher.stats().flushed_position == state.position

    class Failing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def take_changes_into(self, target: _core.StateChanges) -> int:
            raise self.error

    with caplog.at_level(logging.ERROR, "openmatch_persistence.flusher"):
        bug = Flusher(sqlite_store, Failing(RuntimeError("a bug")), interval=0.5)
        wait = bug.cycle()  # logged, and tried again
        assert wait is not None and 0.0 <= wait <= 0.5
        failed = Flusher(sqlite_store, Failing(WriterFailedError("fsync failed")))
        assert failed.cycle() is None  # no change may reach the database any more
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.getMessage(), r.exc_info is not None) for r in errors] == [
        ("flusher cycle failed; retrying", True),
        ("flusher stopped: fsync failed", False),
    ]


def test_a_flusher_needs_a_positive_interval_and_is_due_until_it_fails(sqlite_store: Any) -> None:
    for interval in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"^interval must be positive$"):
            Flusher(sqlite_store, FakeState(), interval=interval)
    # Due from the start, whatever the clock reads, and again after a
    # failure's backoff and a success.
    clock = FakeClock()
    clock.now = 0.0
    state = FakeState()
    flaky = FlakyStore(sqlite_store, failures=1)
    flusher = Flusher(flaky, state, backoff_min=0.25, clock=clock)
    assert flusher.due()
    state.put_order(make_order())
    with pytest.raises(StoreError):
        flusher.flush()
    assert not flusher.due()
    clock.now = 0.25
    flusher.flush()
    assert flusher.due()


def test_nothing_new_writes_nothing(sqlite_store: Any) -> None:
    state = FakeState()
    flusher = Flusher(sqlite_store, state)
    assert flusher.write_pending() is None  # nothing taken yet
    assert sqlite_store.checkpoint() is None
    state.put_order(make_order())
    assert flusher.flush() is not None
    assert flusher.flush() is None  # the same position, no rows: no transaction
    assert flusher.stats().flushes == 1


class _Signalled(BaseException):
    """What a signal handler raises in the main thread (the CLI's
    ``Stopped``, Python's ``KeyboardInterrupt``)."""


def test_a_signal_in_the_collecting_thread_never_loses_a_take(sqlite_store: Any) -> None:
    """A follower collects and flushes in the main thread, where signal
    handlers raise, and so does a ``flush()`` that Ctrl-C interrupts. Here a
    timer signal lands at random points of 600 flushes of a real state;
    after a last, uninterrupted flush the database holds every order the
    state received, at the state's position. With the take and the pending
    set's add as two Python steps, a signal between them lost the take, and
    the next flush recorded a checkpoint past orders the database never got
    (a follow kill test caught it: the database's rows stopped at the first
    round, its checkpoint at the last)."""
    state = _core.State()
    flusher = Flusher(sqlite_store, state)
    armed = [False]
    landed = [0]

    def handler(signum: int, frame: Any) -> None:
        if armed[0]:
            armed[0] = False  # once per flush: the test's own steps run clean
            landed[0] += 1
            raise _Signalled

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        for n in range(1, 601):
            state.apply(om.OrderReceived(order(n, "1")), n)
            try:
                armed[0] = True
                flusher.flush()
            except _Signalled:
                pass
            armed[0] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    flusher.flush()
    assert landed[0] > 50  # the signals did land inside flushes
    loaded = sqlite_store.load_state()
    assert loaded.checkpoint is not None and loaded.checkpoint.position == state.position
    assert sorted(o.id for o in loaded.orders) == [oid(n) for n in range(1, 601)]
