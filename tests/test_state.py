"""The in-memory engine state through the Python binding: applying
operations, lookups and exports, the consistency check, change tracking,
snapshots and the bytes bulk path. The semantics are in docs/state.md."""

from __future__ import annotations

import datetime
import os
import pathlib
import pickle
import subprocess
import sys
from decimal import Decimal

import pytest
from factories import T0, oid, order, tid, trade, uid
from hypothesis import given, settings
from hypothesis import strategies as st

from openmatch_persistence import (
    Balance,
    BalanceUpdated,
    BufferSealed,
    ChecksumMismatchError,
    ConsistencyError,
    Epoch,
    EpochAdvanced,
    EpochPhase,
    InvalidTypeError,
    InvalidValueError,
    Operation,
    OrderCancelled,
    OrderReceived,
    OrderStatus,
    State,
    StateChanges,
    TradeExecuted,
    encode,
    encode_many,
)


def stream() -> list[Operation]:
    return [
        EpochAdvanced(1, EpochPhase.COLLECT),
        OrderReceived(order(1, "5", at=10)),
        OrderReceived(order(2, "3", at=11)),
        EpochAdvanced(1, EpochPhase.SEAL),
        BufferSealed(1, b"\xab" * 32),
        EpochAdvanced(1, EpochPhase.MATCH),
        TradeExecuted(trade(1, 1, 2, "3", at=20)),
        BalanceUpdated(uid(1), "BTC", Decimal("2.5"), Decimal("0.5")),
        EpochAdvanced(1, EpochPhase.FINALIZE),
    ]


def applied(ops: list[Operation]) -> State:
    state = State()
    state.apply_many([(op, i * 100) for i, op in enumerate(ops)])
    return state


def test_operations_build_the_state() -> None:
    state = applied(stream())
    assert state.position == 800
    # The filled maker and the trade left the hot state; their ids are kept.
    counts = (state.order_count, state.retired_id_count, state.balance_count, state.epoch_count)
    assert counts == (1, 2, 1, 1)
    taker = state.order(oid(1))
    assert taker is not None
    assert taker.remaining_qty == Decimal("2")
    assert taker.status == OrderStatus.PARTIALLY_FILLED
    assert taker.updated_at_ns == T0 + 20
    assert state.order(oid(2)) is None
    assert (state.retired(oid(2)), state.retired(tid(1))) == ("order", "trade")
    changes = state.take_changes()
    assert changes.trades == [trade(1, 1, 2, "3", at=20)]
    assert [o.status for o in changes.orders if o.id == oid(2)] == [OrderStatus.FILLED]
    assert state.balance(uid(1), "BTC") == Balance(uid(1), "BTC", Decimal("2.5"), Decimal("0.5"))
    assert state.balance(uid(1), "ETH") is None
    assert state.order(oid(99)) is None

    epoch = state.epoch(1)
    assert epoch is not None
    assert epoch.phase == EpochPhase.FINALIZE
    assert epoch.batch_hash == b"\xab" * 32
    assert epoch.result_hash is None
    assert epoch.trade_count == 1
    # The logical clock: nothing seen before the first EpochAdvanced, the
    # trade's executed_at by the Finalize.
    assert epoch.started_at == datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    assert epoch.completed_at_ns == T0 + 20
    state.check()
    assert state.violations() == []


def test_cancel_keeps_updated_at() -> None:
    state = applied([OrderReceived(order(1, "5", at=10)), OrderCancelled(oid(1))])
    assert state.order(oid(1)) is None  # terminal: it left the hot state
    (cancelled,) = state.take_changes().orders
    assert cancelled.status == OrderStatus.CANCELLED
    assert cancelled.updated_at_ns == T0 + 10


def test_exports_are_sorted_and_complete() -> None:
    state = applied([OrderReceived(order(n, "1")) for n in (5, 3, 9, 1)])
    assert [o.id for o in state.orders()] == [oid(1), oid(3), oid(5), oid(9)]
    assert state.balances() == [] and state.epochs() == []


def test_digest_depends_on_content_not_insertion_order() -> None:
    ops = stream()
    assert applied(ops).digest() == applied(ops).digest()
    assert len(applied(ops).digest()) == 64

    a, b = State(), State()
    balances = [BalanceUpdated(uid(n), f"A{n}", Decimal(n), Decimal(0)) for n in range(20)]
    a.apply_many([(op, 1) for op in balances])
    b.apply_many([(op, 1) for op in reversed(balances)])
    assert a.digest() == b.digest()
    b.apply(BalanceUpdated(uid(0), "A0", Decimal("0.0"), Decimal(0)), 1)
    assert a.digest() != b.digest()


def test_check_raises_consistency_error_naming_entity_and_position() -> None:
    state = applied(
        [
            OrderReceived(order(1, "5")),
            OrderReceived(order(2, "3")),
            TradeExecuted(trade(1, 1, 2, "4")),  # 200: overfills order 2
            BalanceUpdated(uid(1), "ETH", Decimal("-0.1"), Decimal(0)),  # 300
            EpochAdvanced(1, EpochPhase.MATCH),  # 400
            EpochAdvanced(1, EpochPhase.SEAL),  # 500: backwards
        ]
    )
    with pytest.raises(ConsistencyError) as caught:
        state.check()
    err = caught.value
    assert (err.kind, err.entity, err.entity_id, err.position) == (
        "remaining_out_of_range",
        "order",
        oid(2),
        200,
    )
    assert "remaining_out_of_range at position 200" in str(err)
    assert [(v.kind, v.entity, v.entity_id, v.position) for v in err.violations] == [
        ("remaining_out_of_range", "order", oid(2), 200),
        ("negative_balance", "balance", (uid(1), "ETH"), 300),
        ("epoch_regression", "epoch", 1, 500),
    ]
    assert len(state.violations()) == 3
    assert all(isinstance(v.detail, str) and v.detail for v in state.violations())


def test_unknown_and_duplicate_references_are_violations() -> None:
    state = applied(
        [
            OrderReceived(order(1, "5")),
            OrderReceived(order(1, "7")),  # 100: received twice, first kept
            OrderCancelled(oid(8)),  # 200
            TradeExecuted(trade(1, 1, 9, "1")),  # 300: maker unknown
        ]
    )
    found = [(v.kind, v.entity, v.position) for v in state.violations()]
    assert found == [
        ("duplicate_order", "order", 100),
        ("unknown_order", "order", 200),
        ("unknown_order", "trade", 300),
    ]
    kept = state.order(oid(1))
    assert kept is not None and kept.quantity == Decimal(5)


def test_take_changes_gives_each_entity_once() -> None:
    state = State()
    empty = state.take_changes()
    assert len(empty) == 0 and empty.position == 0
    state.apply_many([(op, i) for i, op in enumerate(stream())])
    assert state.has_changes
    changes = state.take_changes()
    assert changes.position == 8
    assert [o.id for o in changes.orders] == [oid(1), oid(2)]
    assert changes.orders[0].remaining_qty == Decimal(2)  # current values
    assert [t.id for t in changes.trades] == [tid(1)]
    assert len(changes.balances) == 1
    assert [e.phase for e in changes.epochs] == [EpochPhase.FINALIZE]
    assert len(changes) == 5
    assert not state.has_changes
    assert len(state.take_changes()) == 0

    state.apply(OrderCancelled(oid(1)), 9)
    state.apply(OrderCancelled(oid(1)), 10)  # refused (terminal) and recorded
    again = state.take_changes()
    assert [(o.id, o.status) for o in again.orders] == [(oid(1), OrderStatus.CANCELLED)]
    assert again.position == 10
    assert [(v.kind, v.position) for v in state.violations()] == [("terminal_order", 10)]


def test_changes_absorb_newer_rows_and_keep_every_trade() -> None:
    """The flusher's pending set: takes folded in order equal one take."""
    ops = stream()
    state, whole = State(), State()
    merged = StateChanges()
    for i, op in enumerate(ops):
        state.apply(op, i + 1)
        whole.apply(op, i + 1)
        if i in (2, 5):
            merged.absorb(state.take_changes())
    merged.absorb(state.take_changes())
    one = whole.take_changes()
    assert merged.orders == one.orders and merged.trades == one.trades
    assert merged.balances == one.balances and merged.epochs == one.epochs
    assert (merged.position, merged.clock_ns) == (one.position, one.clock_ns)
    assert merged.counts() == one.counts() == (2, 1, 1, 1)
    # An older set under a newer one (a failed batch put back) keeps the newer rows.
    older, newer = StateChanges([order(1, "5", at=1)]), StateChanges([order(1, "2", at=2)])
    older.absorb(newer)
    assert [o.remaining_qty for o in older.orders] == [Decimal(2)]
    with pytest.raises(InvalidValueError):
        older.absorb(older)


def test_changes_of_rows_keep_the_last_row_of_a_key_in_key_order() -> None:
    rows = StateChanges([order(2, "1"), order(1, "3"), order(2, "4")], position=7)
    assert [(o.id, o.quantity) for o in rows.orders] == [(oid(1), Decimal(3)), (oid(2), Decimal(4))]
    assert rows.position == 7 and len(rows) == 2
    with pytest.raises(InvalidTypeError, match=r"trades\[0\]: expected Trade"):
        StateChanges(trades=[order(1, "1")])  # type: ignore[list-item]


def test_snapshot_round_trip_is_exact() -> None:
    ops = stream()
    original = applied(ops[:7])
    # The image carries the whole hot state, the id window included.
    restored = State.from_image(original.to_image())
    assert restored.digest() == original.digest()
    assert not restored.has_changes
    restored.check()
    # Replay continues on the restored state exactly as on the original.
    for i, op in enumerate(ops[7:], start=7):
        restored.apply(op, i * 100)
    assert restored.digest() == applied(ops).digest()


def test_snapshot_rebuilt_from_rows() -> None:
    epoch = Epoch(
        epoch_id=3,
        phase=EpochPhase.SEAL,
        started_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
        batch_hash=b"\x01" * 32,
        trade_count=0,
    )
    assert epoch.completed_at is None and epoch.completed_at_ns is None
    balance = Balance(uid(1), "BTC", Decimal("1.5"), 0)
    state = State.from_snapshot([], [], [balance], [epoch], 42)
    assert state.epoch(3) == epoch
    assert state.balances() == [balance]
    assert state.position == 42
    assert State.from_snapshot([], [], [], [], 0).position == 0


def test_snapshot_refuses_duplicates_and_wrong_types() -> None:
    o = order(1, "1")
    with pytest.raises(InvalidValueError, match="twice"):
        State.from_snapshot([o, o], [], [], [], 1)
    with pytest.raises(InvalidTypeError, match=r"balances\[0\]"):
        State.from_snapshot([], [], [o], [], 1)  # type: ignore[list-item]


def test_apply_rejects_bad_arguments_and_applies_nothing() -> None:
    state = State()
    with pytest.raises(InvalidTypeError):
        state.apply(order(1, "1"), 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        state.apply(OrderCancelled(oid(1)), -1)
    with pytest.raises(InvalidTypeError, match=r"apply_many\[1\]"):
        state.apply_many([(OrderReceived(order(1, "1")), 0), "nope"])  # type: ignore[list-item]
    assert state.order_count == 0 and state.position == 0


def test_apply_frames_matches_apply_and_is_all_or_nothing() -> None:
    ops = stream()
    data = encode_many(ops)
    state = State()
    assert state.apply_frames(data, 1000) == len(ops)

    expected = State()
    at = 1000
    for op in ops:
        at += len(encode(op))
        expected.apply(op, at)  # an operation's position is just past its frame
    assert state.digest() == expected.digest()
    assert state.position == expected.position == 1000 + len(data)

    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    fresh = State()
    with pytest.raises(ChecksumMismatchError) as caught:
        fresh.apply_frames(bytes(damaged), 1000)
    assert caught.value.offset == 1000 + len(data) - len(encode(ops[-1]))  # the frame's start
    assert fresh.order_count == 0 and fresh.position == 0


def test_entities_compare_hash_and_show() -> None:
    a = Balance(uid(1), "BTC", Decimal(1), Decimal(0))
    assert a == Balance(uid(1), "BTC", Decimal(1), Decimal(0))
    assert a != Balance(uid(1), "BTC", Decimal(2), Decimal(0))
    assert len({a, Balance(uid(1), "BTC", Decimal(1), Decimal(0))}) == 1
    assert a != "BTC"  # type: ignore[comparison-overlap]
    assert "BTC" in repr(a)
    e = Epoch(epoch_id=1, phase=EpochPhase.COLLECT, started_at=0)
    assert e.started_at_ns == 0 and e.trade_count == 0
    assert "Epoch(epoch_id=1" in repr(e)
    assert "State(position=0," in repr(State())
    with pytest.raises(InvalidValueError):
        Epoch(epoch_id=1, phase=EpochPhase.COLLECT, started_at=0, batch_hash=b"short")
    with pytest.raises(TypeError):
        pickle.dumps(State())


# --- properties ---------------------------------------------------------------

small = st.integers(min_value=0, max_value=5)
amounts = st.decimals(min_value=-10, max_value=1000, places=3, allow_nan=False)
phases = st.sampled_from(
    [EpochPhase.COLLECT, EpochPhase.SEAL, EpochPhase.MATCH, EpochPhase.FINALIZE]
)
operations = st.one_of(
    st.builds(lambda n, q: OrderReceived(order(n, str(q))), small, amounts),
    st.builds(lambda n: OrderCancelled(oid(n)), small),
    st.builds(
        lambda n, a, b, q, e: TradeExecuted(trade(n, a, b, str(q), epoch=e)),
        small,
        small,
        small,
        amounts,
        small,
    ),
    st.builds(lambda u, a, f: BalanceUpdated(uid(u), "X", a, f), small, amounts, amounts),
    st.builds(EpochAdvanced, small, phases),
    st.builds(lambda e, h: BufferSealed(e, bytes([h]) * 32), small, st.integers(0, 255)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(operations, max_size=40))
def test_any_stream_applies_the_same_way_through_every_path(ops: list[Operation]) -> None:
    """Valid or not, a stream gives one state whether applied op by op or as
    frames, and that state survives a snapshot exactly."""
    data = b"".join(encode(op) for op in ops)
    by_frames = State()
    assert by_frames.apply_frames(data, 7) == len(ops)

    by_ops = State()
    at = 7
    for op in ops:
        at += len(encode(op))
        by_ops.apply(op, at)
    assert by_ops.digest() == by_frames.digest()
    assert [str(v) for v in by_ops.violations()] == [str(v) for v in by_frames.violations()]

    restored = State.from_image(by_ops.to_image())
    assert restored.digest() == by_ops.digest()


_ROWS_BESIDE_READERS = """
import gc, sys, threading, time
import weakref
from openmatch_persistence import _core
from factories import order

rows = _core.StateChanges([order(n, "1") for n in range(1, 5000)])
stop = threading.Event()

class Junk:
    me: object

def builder() -> None:
    keep: weakref.WeakSet[Junk] = weakref.WeakSet()
    while not stop.is_set():
        for _ in range(200):
            j = Junk()
            j.me = j  # freed only by the collector, whose callbacks run Python code
            keep.add(j)
        _core.sqlite_order_json(rows)

def reader() -> None:
    while not stop.is_set():
        len(rows)
        rows.counts()

gc.set_threshold(50)
sys.setswitchinterval(1e-6)
threads = [threading.Thread(target=builder), threading.Thread(target=reader)]
for t in threads:
    t.start()
time.sleep(3)
stop.set()
for t in threads:
    t.join()
"""


def test_building_rows_beside_readers_of_the_same_changes_never_deadlocks() -> None:
    """A thread building a store's rows makes Python objects, which can run
    the collector's callbacks and hand the GIL to a thread that reads the
    same changes: the rows are copied out before any object is made, so the
    reader never waits, holding the GIL, for a lock whose holder needs it.
    (Before, this hung within seconds; a subprocess, so that a hang fails.)"""
    here = pathlib.Path(__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", _ROWS_BESIDE_READERS],
        cwd=here,
        env={**os.environ, "PYTHONPATH": str(here)},
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
