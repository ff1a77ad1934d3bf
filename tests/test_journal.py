"""The journal behind ``Persistence``: refusals write nothing, batches are
all or nothing, an interrupt cannot split an append from its application,
and a log that breaks the invariants anyway has a way out
(``recover --until``)."""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from factories import oid, order, trade, uid
from faultkit import NO_COMPACTION, replay_digest, run_cli, victim_stream

import openmatch_persistence as om
from openmatch_persistence import _core
from openmatch_persistence.persistence import SQLITE_FILENAME, Persistence, cut_log_until
from openmatch_persistence.recovery import cut_until
from openmatch_persistence.store.sqlite import SqliteStore


def aof_bytes(data_dir: Path) -> int:
    return sum(size for _, _, size in _core.list_segments(data_dir / "aof"))


def test_a_refused_operation_writes_nothing_and_names_the_violation(tmp_path: Path) -> None:
    with Persistence.open(tmp_path) as p:
        p.append_many(
            [om.OrderReceived(order(1, "5")), om.OrderReceived(order(2, "1"))],
        )
        before, digest = aof_bytes(tmp_path), p.digest()
        with pytest.raises(om.OperationRefusedError) as refused:
            p.append(om.TradeExecuted(trade(1, 2, 1, "5")))
        e = refused.value
        assert (e.kind, e.entity, e.entity_id, e.index) == (
            "remaining_out_of_range",
            "order",
            oid(2),
            0,
        )
        assert "a trade of 5 would overfill order" in str(e) and "remaining 1" in str(e)
        assert isinstance(e, om.ConsistencyError) and isinstance(e, ValueError)
        # All or nothing: the first operation alone would be fine.
        with pytest.raises(om.OperationRefusedError) as refused:
            p.append_many(
                [
                    om.BalanceUpdated(uid(1), "USDT", Decimal(5), Decimal(0)),
                    om.BalanceUpdated(uid(1), "USDT", Decimal(-1), Decimal(0)),
                ]
            )
        assert (refused.value.index, refused.value.kind) == (1, "negative_balance")
        for op in [
            om.OrderReceived(order(1, "5")),
            om.OrderCancelled(oid(9)),
            om.EpochAdvanced(1, om.EpochPhase.FINALIZE),
        ]:
            if isinstance(op, om.EpochAdvanced):
                p.append(op)
                before, digest = aof_bytes(tmp_path), p.digest()
                op = om.EpochAdvanced(1, om.EpochPhase.MATCH)
            with pytest.raises(om.OperationRefusedError):
                p.append(op)
        assert (aof_bytes(tmp_path), p.digest()) == (before, digest)
    # And the log replays: what append accepted, replay accepts.
    with Persistence.open(tmp_path, ignore_snapshot=True) as p:
        assert p.digest() == digest


def test_a_batch_is_judged_with_the_operations_before_it(tmp_path: Path) -> None:
    with Persistence.open(tmp_path) as p:
        end = p.append_many(
            [
                om.OrderReceived(order(1, "2")),
                om.OrderReceived(order(2, "2")),
                om.TradeExecuted(trade(1, 1, 2, "2")),
            ]
        )
        assert p.position == end
        # Both orders are filled: they left the hot state.
        assert p.state.order(oid(1)) is None and p.state.retired(oid(1)) == "order"
        # A filled order takes no cancel.
        with pytest.raises(om.OperationRefusedError, match="terminal_order"):
            p.append(om.OrderCancelled(oid(1)))


def test_the_state_of_a_persistence_is_read_only(tmp_path: Path) -> None:
    with Persistence.open(tmp_path) as p:
        with pytest.raises(om.InvalidValueError, match="read-only"):
            p.state.apply(om.OrderReceived(order(1, "1")), 10)
        assert p.state.order_count == 0


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Raises ``exc`` in ``thread`` at its next Python instruction: as a
    signal handler's exception reaches whatever code a thread is running."""
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


def test_interrupts_while_threads_append_never_split_the_state_from_the_log(
    tmp_path: Path,
) -> None:
    """KeyboardInterrupt delivered to appending threads (as exceptions raised
    at any instruction, before, during or after their append) and SIGINT to
    the main thread, which appends too. Afterwards every acknowledged
    operation is in the state, the state is the replay of the log, and the
    next append is visible at once (before the journal, an operation could
    be left durable but never applied, freezing the state for good)."""
    stop = threading.Event()
    interrupted = [0] * 5
    # Made before any interrupt: one landing inside a generator's frame
    # would end the generator (its next `next` raises StopIteration).
    streams = [list(itertools.islice(victim_stream(0, t), 20_000)) for t in range(5)]

    def append_all(p: Persistence, thread: int) -> None:
        ops, i = streams[thread], 0
        while not stop.is_set() and i < len(ops):
            try:
                try:
                    p.append(ops[i])
                except om.OperationRefusedError:
                    pass  # appended before the interrupt landed: a retry is a duplicate
                i += 1
            except KeyboardInterrupt:
                interrupted[thread] += 1

    # An interrupt can also land in a worker's own loop, outside its try
    # (at the `while`, in the handler): the worker then ends. That is the
    # test's thread, not the journal, failing; pytest's hook would format
    # its traceback, where the next interrupt lands in turn. Counted here
    # instead; any other exception that ends a worker fails the test.
    ended: list[type[BaseException]] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: ended.append(args.exc_type)
    with Persistence.open(tmp_path, fsync="always", compaction=NO_COMPACTION) as p:
        workers = [threading.Thread(target=append_all, args=(p, t)) for t in range(1, 5)]
        for w in workers:
            w.start()
        sigints = 0
        deadline = time.monotonic() + 3
        ops, i = streams[0], 0
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            # Two operations are kept for the append after the storm.
            while time.monotonic() < deadline and i < len(ops) - 7:
                for w in workers:
                    if w.is_alive():
                        _raise_in(w, KeyboardInterrupt)
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    for _ in range(5):
                        try:
                            p.append(ops[i])
                        except om.OperationRefusedError:
                            pass
                        i += 1
                except KeyboardInterrupt:
                    sigints += 1
        finally:
            signal.signal(signal.SIGINT, previous)
            stop.set()
            for w in workers:
                while w.is_alive():
                    w.join(0.1)
            threading.excepthook = hook
        assert set(ended) <= {KeyboardInterrupt}, ended
        assert sigints > 0 and sum(interrupted) > 0
        assert p.position == p._journal.end, "an acknowledged operation is not in the state"
        live = p.digest()
        written = [op for _, op in _core.scan(tmp_path / "aof")]
        assert live == replay_digest(written)
        # The next operation of the main stream, or the one after it when an
        # interrupt landed between an append and the step past it.
        try:
            after = p.append(ops[i])
        except om.OperationRefusedError:
            after = p.append(ops[i + 1])
        assert p.state.position == after == p.position
        live = p.digest()
    with Persistence.open(tmp_path) as p:
        assert p.digest() == live


def _poison(data_dir: Path) -> tuple[int, int]:
    """A data dir whose log, after a valid prefix and a state image, holds
    an operation that breaks an invariant (written past the journal, as
    another program could), and one more after it. Returns (the bad
    operation's position, where its frame starts)."""
    with Persistence.open(data_dir) as p:
        p.append_many([om.OrderReceived(order(1, "5")), om.OrderReceived(order(2, "5"))])
    writer = _core.AofWriter(data_dir / "aof")
    start = writer.position
    bad = writer.append(om.TradeExecuted(trade(1, 1, 2, "6")))
    writer.append(om.OrderReceived(order(3, "1")))
    writer.close()
    return bad, start


def test_a_log_that_breaks_an_invariant_is_refused_and_until_is_the_way_out(
    tmp_path: Path,
) -> None:
    bad, start = _poison(tmp_path)
    with pytest.raises(om.LogViolationError) as refused:
        Persistence.open(tmp_path)
    e = refused.value
    assert (e.position, e.frame_start, e.kind) == (bad, start, "remaining_out_of_range")
    assert f"--until {bad}" in str(e)

    recover = run_cli("recover", str(tmp_path))
    assert recover.returncode == 2 and "Traceback" not in recover.stderr
    assert f"--until {bad}" in recover.stderr
    verify = run_cli("aof", "verify", str(tmp_path / "aof"))
    assert verify.returncode == 2, verify.stdout + verify.stderr
    assert "invariants: violated" in verify.stdout

    # A position that is no operation's is refused and changes nothing.
    size = aof_bytes(tmp_path)
    inside = run_cli("recover", str(tmp_path), "--until", str(bad - 1))
    assert inside.returncode == 2 and aof_bytes(tmp_path) == size

    cut = run_cli("recover", str(tmp_path), "--until", str(bad))
    assert cut.returncode == 0, cut.stderr
    assert aof_bytes(tmp_path) == start
    backups = sorted((tmp_path / "aof").glob("*.bak"))
    assert len(backups) == 1 and backups[0].stat().st_size == size - start
    assert backups[0].stat().st_mode & 0o777 == 0o600
    with Persistence.open(tmp_path) as p:
        assert p.position == start and p.state.order(oid(1)) is not None
        assert p.state.order(oid(3)) is None  # after the cut: in the backup
    status = run_cli("status", str(tmp_path), "--json")
    assert status.returncode == 0 and backups[0].name in status.stdout


def test_until_moves_the_tail_it_names_and_never_what_the_snapshot_covers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # In process (the CLI test above runs it in a child): what the report says.
    bad, start = _poison(tmp_path)
    size = aof_bytes(tmp_path)
    with pytest.raises(om.RecoveryError, match=f"--until {start}: .* covers position {start}"):
        cut_log_until(tmp_path, start)  # the clean close's snapshot is at `start`
    with SqliteStore(tmp_path / SQLITE_FILENAME) as store, pytest.raises(om.IdentityMismatchError):
        cut_until(tmp_path / "aof", store, bad, data_dir_id=uuid.uuid4())
    assert aof_bytes(tmp_path) == size

    with caplog.at_level("WARNING", logger="openmatch_persistence.recovery"):
        cut = cut_log_until(tmp_path, bad)
    [logged] = [r.getMessage() for r in caplog.records if r.name.endswith("recovery")]
    assert logged.startswith(f"cut {tmp_path / 'aof'} at position {start} (--until {bad}): 1 ")
    assert (cut.until, cut.position, cut.bytes) == (bad, start, size - start)
    assert aof_bytes(tmp_path) == start
    [part] = cut.removed
    assert part.backup is not None and Path(part.backup).stat().st_size == size - start
    lines = cut.describe().splitlines()
    assert f"position {bad} " in lines[0] and f"({size - start} bytes)" in lines[0]
    assert lines[0].endswith(f"ends at {start}")
    assert lines[1:] == [f"  {part.segment} -> {part.backup}"]

    # Without the snapshot, the state is rebuilt from the log's start, so
    # an operation the snapshot covers can go too.
    earlier = cut_log_until(tmp_path, start, ignore_snapshot=True)
    assert earlier.position < start == earlier.until
    # From an empty state, at position 0: only 0 itself is covered.
    with pytest.raises(om.RecoveryError, match="--until 1: no operation has that position"):
        cut_log_until(tmp_path, 1, ignore_snapshot=True)
