"""AsyncPersistence: the asyncio face of the facade (docs/asyncio.md).

Driven with ``asyncio.run`` (no pytest plugin). Where a test needs a group
commit of its own making, it holds the committing thread
(``_core.GroupCommit._hold``): what the tasks submit meanwhile gathers into
one group, so the test does not depend on timing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from factories import uid
from faultkit import NO_COMPACTION, log_records

import openmatch_persistence as om
from openmatch_persistence import AsyncPersistence, Persistence

#: Refused by the journal's invariants: a negative balance.
REFUSED = om.BalanceUpdated(uid(900_001), "USDT", Decimal(-1), Decimal(0))
#: Refused by the database schema: 9 decimal places for NUMERIC(28, 8).
UNFIT = om.BalanceUpdated(uid(900_002), "USDT", Decimal("0.000000001"), Decimal(0))


def balance(user: int, n: int) -> om.Operation:
    """User ``user``'s ``n``-th operation: its own key, so that the
    operations of many tasks interleave into a valid state in any order,
    and each is told apart by its amount."""
    return om.BalanceUpdated(uid(user), "USDT", Decimal(n + 1), Decimal(0))


def available(p: AsyncPersistence, user: int) -> Decimal | None:
    b = p.state.balance(uid(user), "USDT")
    return None if b is None else b.available


def test_the_whole_api_and_a_reopen_by_the_sync_face(tmp_path: Path) -> None:
    async def main() -> tuple[str, int]:
        async with await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION) as p:
            first = await p.append(balance(1, 0))
            end = await p.append_many([balance(1, 1), balance(2, 0)])
            assert first < end == p.position
            assert await p.append_many([]) == end
            assert available(p, 1) == 2 and available(p, 2) == 1
            assert p.state.balance_count == 2
            await p.flush()
            assert await p.snapshot() == end
            report = await p.compact()
            assert report.snapshot_position == end
            assert await p.wait_compaction()
            digest = p.digest()
        assert p.closed
        await p.close()  # twice is fine
        with pytest.raises(om.WriterClosedError, match="is closed"):
            await p.append(balance(1, 2))
        return digest, end

    digest, end = asyncio.run(main())
    with Persistence.open(tmp_path) as again:
        assert again.position == end
        assert again.digest() == digest
        assert again.recovery.replayed == 0  # the image written at close covers all


def test_a_due_compaction_runs_off_the_loop_and_recovery_still_matches(tmp_path: Path) -> None:
    policy = om.CompactionPolicy(max_bytes=16 * 1024, max_age=None)

    async def main() -> str:
        async with await AsyncPersistence.open(tmp_path, compaction=policy) as p:

            async def task(t: int) -> None:
                for n in range(40):
                    await p.append(balance(t, n))

            await asyncio.gather(*(task(t) for t in range(10)))
            assert await p.wait_compaction(30)
            assert p._compactions >= 1 and p._last_compaction_error is None
            return p.digest()

    digest = asyncio.run(main())
    starts = [s for s, _, _ in om._core.list_segments(tmp_path / "aof")]
    assert starts[0] > 0, "compaction deleted no segment"
    with Persistence.open(tmp_path) as again:
        assert again.digest() == digest
        assert again.state.balance_count == 10


def test_each_task_s_operations_are_in_the_log_in_submission_order(tmp_path: Path) -> None:
    tasks, each = 40, 30

    async def main() -> tuple[list[list[int]], dict[str, object]]:
        async with await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION) as p:

            async def task(t: int) -> list[int]:
                positions = []
                for n in range(each):
                    if n % 3 == 2:
                        positions.append(await p.append_many([balance(t, n)]))
                    else:
                        positions.append(await p.append(balance(t, n)))
                return positions

            results = await asyncio.gather(*(task(t) for t in range(tasks)))
            return results, p.stats()["writer"]

    results, writer = asyncio.run(main())
    records = log_records(tmp_path / "aof")
    assert len(records) == tasks * each
    at = dict(records)
    for t, positions in enumerate(results):
        assert positions == sorted(positions)
        assert [om.encode(at[x]) for x in positions] == [
            om.encode(balance(t, n)) for n in range(each)
        ]
    # The tasks' appends shared fsyncs (40 tasks, never more than one
    # record each in a group: at least two in some group).
    assert isinstance(writer["max_records_per_fsync"], int)
    assert writer["max_records_per_fsync"] > 1


def test_a_refused_operation_fails_only_its_own_call(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION) as p:
            fsyncs = p.stats()["writer"]["fsyncs"]
            p._group._hold(True)
            calls = [
                asyncio.ensure_future(p.append(balance(1, 0))),
                asyncio.ensure_future(p.append(REFUSED)),
                asyncio.ensure_future(p.append_many([balance(2, 0), UNFIT, balance(2, 1)])),
                asyncio.ensure_future(p.append(balance(3, 0))),
                asyncio.ensure_future(p.append_many([balance(4, 0), balance(4, 1), REFUSED])),
                asyncio.ensure_future(p.append(balance(1, 1))),
            ]
            await asyncio.sleep(0)  # every task has submitted: one group
            p._group._hold(False)
            results = await asyncio.gather(*calls, return_exceptions=True)
            ok = [r for r in results if isinstance(r, int)]
            assert ok == sorted(ok) and len(ok) == 3
            assert isinstance(results[0], int) and isinstance(results[3], int)
            assert isinstance(results[5], int)
            refused = results[1]
            assert isinstance(refused, om.OperationRefusedError)
            assert refused.index == 0 and refused.kind == "negative_balance"
            assert str(refused).startswith("operation 0 of the batch is refused")
            unfit = results[2]
            assert isinstance(unfit, om.InvalidValueError) and unfit.index == 1
            assert str(unfit).startswith("operation 1 of the batch")
            whole = results[4]
            assert isinstance(whole, om.OperationRefusedError) and whole.index == 2
            # The survivors went out together, in submission order.
            assert p.stats()["writer"]["fsyncs"] == fsyncs + 1
            assert available(p, 1) == 2 and available(p, 3) == 1
            assert available(p, 2) is None and available(p, 4) is None

    asyncio.run(main())
    ops = [om.encode(op) for _, op in log_records(tmp_path / "aof")]
    assert ops == [om.encode(balance(1, 0)), om.encode(balance(3, 0)), om.encode(balance(1, 1))]


def test_one_group_commit_wakes_the_loop_once_for_all_its_tasks(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION) as p:
            loop = asyncio.get_running_loop()
            fd = p._commits._fd
            wakes = 0

            def counted() -> None:
                nonlocal wakes
                wakes += 1
                p._commits._drained()

            loop.remove_reader(fd)
            loop.add_reader(fd, counted)
            fsyncs = p.stats()["writer"]["fsyncs"]
            p._group._hold(True)
            calls = [asyncio.ensure_future(p.append(balance(t, 0))) for t in range(200)]
            await asyncio.sleep(0)
            p._group._hold(False)
            positions = await asyncio.gather(*calls)
            assert positions == sorted(positions)
            assert wakes == 1, "one batch, one wake-up of the loop"
            assert p.stats()["writer"]["fsyncs"] == fsyncs + 1
            loop.remove_reader(fd)
            loop.add_reader(fd, p._commits._drained)

    asyncio.run(main())


def test_an_object_that_is_no_operation_fails_at_the_call(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncPersistence.open(tmp_path) as p:
            with pytest.raises(om.InvalidTypeError):
                await p.append("not an operation")  # type: ignore[arg-type]
            assert await p.append(balance(1, 0)) == p.position

    asyncio.run(main())


def test_cancelling_the_awaiting_task_does_not_withdraw_a_submitted_append(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION) as p:
            p._group._hold(True)
            submitted = asyncio.ensure_future(p.append(balance(1, 0)))
            never_started = asyncio.ensure_future(p.append(balance(2, 0)))
            never_started.cancel()  # before its first step: nothing submitted
            await asyncio.sleep(0)
            submitted.cancel()
            with pytest.raises(asyncio.CancelledError):
                await submitted
            with pytest.raises(asyncio.CancelledError):
                await never_started
            p._group._hold(False)
            # The cancelled task's operation goes out first (it was
            # submitted first), so it is acknowledged by the time a later
            # append returns.
            later = await p.append(balance(1, 1))
            assert p.position == later
            assert available(p, 1) == 2
            assert available(p, 2) is None

    asyncio.run(main())
    ops = [om.encode(op) for _, op in log_records(tmp_path / "aof")]
    assert ops == [om.encode(balance(1, 0)), om.encode(balance(1, 1))]


def test_close_completes_every_pending_append_and_refuses_later_ones(tmp_path: Path) -> None:
    async def main() -> None:
        p = await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION)
        p._group._hold(True)
        pending = [asyncio.ensure_future(p.append(balance(t, 0))) for t in range(100)]
        poisoned = asyncio.ensure_future(p.append(REFUSED))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(p.close())
        await asyncio.sleep(0)
        late = asyncio.ensure_future(p.append(balance(500, 0)))
        await closing
        positions = await asyncio.gather(*pending)
        assert positions == sorted(positions) and len(set(positions)) == 100
        with pytest.raises(om.OperationRefusedError):
            await poisoned
        with pytest.raises(om.WriterClosedError, match="close\\(\\) was called before"):
            await late
        # Closing again, from another task, waits for the same close.
        await asyncio.gather(p.close(), p.close())

    asyncio.run(main())
    with Persistence.open(tmp_path) as again:
        assert again.state.balance_count == 100
        assert again.state.balance(uid(500), "USDT") is None


def test_a_failed_writer_fails_every_call_of_the_group(tmp_path: Path) -> None:
    async def main() -> None:
        p = await AsyncPersistence.open(tmp_path, compaction=NO_COMPACTION)
        before = await p.append(balance(1, 0))
        p._group._hold(True)
        calls = [asyncio.ensure_future(p.append(balance(t, 1))) for t in range(5)]
        await asyncio.sleep(0)
        p._journal._inject_failures(fsyncs=1)
        p._group._hold(False)
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, om.WriterFailedError) for r in results), results
        assert p.position == before  # nothing of the group is shown
        with pytest.raises(om.WriterFailedError):
            await p.append(balance(9, 0))
        # As the sync face's close: the final flush may not take changes
        # the AOF cannot make durable, and says so; the rest is closed.
        with pytest.raises(om.WriterFailedError):
            await p.close()
        assert p.closed

    asyncio.run(main())
    with Persistence.open(tmp_path) as again:  # the lock was released
        assert again.position >= 0


def test_the_sync_face_cannot_open_the_directory_meanwhile(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncPersistence.open(tmp_path):
            with pytest.raises(om.WriterLockedError):
                await asyncio.to_thread(Persistence.open, tmp_path)

    asyncio.run(main())


def test_an_open_cancelled_midway_leaves_the_directory_free(tmp_path: Path) -> None:
    async def main() -> None:
        # An existing data directory: two opens of a fresh one would race to
        # create its identity, which is not what this test is about.
        await (await AsyncPersistence.open(tmp_path)).close()
        opening = asyncio.ensure_future(AsyncPersistence.open(tmp_path))
        await asyncio.sleep(0)  # the worker thread is opening
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        # Released in the worker thread once its open completed.
        for _ in range(200):
            try:
                async with await AsyncPersistence.open(tmp_path):
                    return
            except om.WriterLockedError:
                await asyncio.sleep(0.05)
        pytest.fail("the cancelled open kept the directory locked")

    asyncio.run(main())


# --- kill -9 under asyncio load --------------------------------------------------

VICTIM = textwrap.dedent(
    """
    import asyncio, os, sys
    from decimal import Decimal
    import uuid
    import openmatch_persistence as om
    from openmatch_persistence.compaction import CompactionPolicy

    data_dir, base, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def balance(user, n):
        return om.BalanceUpdated(uuid.UUID(int=(1 << 120) + user), "USDT",
                                 Decimal(n + 1), Decimal(0))

    async def main():
        p = await om.AsyncPersistence.open(
            data_dir, flush_interval=0.02, compaction=CompactionPolicy(None, None))
        os.write(1, b"open\\n")

        async def task(t):
            n = 0
            while True:
                position = await p.append(balance(base + t, n))
                # One write per acknowledgement: never torn by the kill.
                os.write(1, b"%d %d %d\\n" % (t, n, position))
                n += 1

        await asyncio.gather(*(task(t) for t in range(tasks)))

    asyncio.run(main())
    """
)


def test_kill_9_under_asyncio_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(15)
    tasks = 64
    for round_ in range(4):
        base = round_ * 1000
        child = subprocess.Popen(
            [sys.executable, "-c", VICTIM, str(tmp_path), str(base), str(tasks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"open\n", child.stderr and child.stderr.read()
        # Kill at a random moment after the first acknowledgement (waiting
        # for it: a slow machine may take longer than the random delay to
        # get its first group commit through).
        watchdog = threading.Timer(60, child.kill)  # a hang fails, never blocks
        watchdog.start()
        data = child.stdout.readline()
        watchdog.cancel()
        assert data.endswith(b"\n"), child.stderr and child.stderr.read()
        deadline = time.monotonic() + rng.uniform(0.1, 0.5)
        os.set_blocking(child.stdout.fileno(), False)
        while time.monotonic() < deadline:
            data += child.stdout.read() or b""
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        os.set_blocking(child.stdout.fileno(), True)
        data += child.stdout.read()
        acks = [tuple(map(int, line.split())) for line in data.split(b"\n")[:-1]]
        assert acks, f"round {round_}: no acknowledgement"
        last = {t: -1 for t in range(tasks)}
        for t, n, _ in acks:
            assert n == last[t] + 1
            last[t] = n

        with Persistence.open(tmp_path, compaction=NO_COMPACTION) as p:
            records = log_records(p.aof_dir)
            at = dict(records)
            for t, n, position in acks:
                assert position in at, f"round {round_}: acknowledged {t}/{n} was lost"
                assert om.encode(at[position]) == om.encode(balance(base + t, n))
            # Each task's operations in the log: a prefix of its stream, at
            # most one past its last acknowledgement (the append in flight).
            for t in range(tasks):
                mine = [b.available for b in [p.state.balance(uid(base + t), "USDT")] if b]
                seen = int(mine[0]) if mine else 0
                assert last[t] + 1 <= seen <= last[t] + 2, (round_, t, last[t], seen)
            log = [om.encode(op) for _, op in records]
            for t in range(tasks):
                stream = [om.encode(balance(base + t, n)) for n in range(last[t] + 2)]
                wanted = set(stream)
                own = [x for x in log if x in wanted]
                assert own == stream[: len(own)]


# --- types ---------------------------------------------------------------------

USER_CODE = textwrap.dedent(
    """
    from __future__ import annotations

    import asyncio
    import uuid
    from decimal import Decimal

    from openmatch_persistence import (
        AcknowledgedState,
        AsyncPersistence,
        BalanceUpdated,
        CompactionPolicy,
        OperationRefusedError,
        RecoveryReport,
    )
    from openmatch_persistence.compaction import CompactionReport


    async def main(user: uuid.UUID) -> int:
        p: AsyncPersistence = await AsyncPersistence.open(
            "data", fsync="always", flush_interval=0.1, compaction=CompactionPolicy()
        )
        async with p:
            position: int = await p.append(BalanceUpdated(user, "USDT", Decimal(1), Decimal(0)))
            end: int = await p.append_many([BalanceUpdated(user, "USDT", Decimal(2), Decimal(0))])
            try:
                await p.append(BalanceUpdated(user, "USDT", Decimal(-1), Decimal(0)))
            except OperationRefusedError as e:
                index: int | None = e.index
            state: AcknowledgedState = p.state
            balance = state.balance(user, "USDT")
            amount: Decimal | None = None if balance is None else balance.available
            snap: int = await p.snapshot()
            report: CompactionReport = await p.compact()
            done: bool = await p.wait_compaction(1.0)
            await p.flush()
            recovery: RecoveryReport = p.recovery
            current: int = p.position
        await p.close()
        return max(position, end, snap, current)


    print(asyncio.run(main(uuid.uuid4())))
    """
)


def test_user_code_of_the_whole_api_type_checks_strictly(tmp_path: Path) -> None:
    source = tmp_path / "user_code.py"
    source.write_text(USER_CODE)
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
