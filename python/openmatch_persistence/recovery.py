"""Recovery on start-up: the latest snapshot, then the AOF after it.

1. The writer opens the AOF directory first (it takes the directory lock
   and cuts a torn tail off the last segment, as Redis'
   ``aof-load-truncated`` does; corruption makes it refuse to open).
2. The store's checkpoint is the snapshot: the state it holds is the state
   at that AOF position. ``ignore_snapshot`` starts from an empty state at
   position 0 instead (only possible while compaction has not removed the
   AOF's start).
3. The AOF is replayed from that position to its end, in Rust.
4. The state is checked against its invariants.

The replay must end exactly at the writer's end position; anything else
means the directory changed under us or is damaged, and recovery refuses to
resume rather than guess.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.errors import ConsistencyError, RecoveryError
from openmatch_persistence.store.base import LoadedState, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery loaded, replayed, repaired and verified."""

    #: The snapshot's position, or None when none was loaded.
    snapshot: int | None
    snapshot_epoch: int | None
    #: Entities loaded from the snapshot.
    loaded: dict[str, int]
    #: Operations replayed from the AOF after the snapshot.
    replayed: int
    replay_from: int
    replay_to: int
    #: Bytes of a torn tail cut off the last segment when the writer opened.
    torn_tail_cut: int
    segments: int
    digest: str
    orders: int
    trades: int
    balances: int
    epochs: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        lines = []
        if self.snapshot is None:
            lines.append("snapshot: none loaded (replaying the AOF from its start)")
        else:
            loaded = ", ".join(f"{v} {k}" for k, v in self.loaded.items())
            lines.append(
                f"snapshot: position {self.snapshot} (epoch {self.snapshot_epoch}): {loaded}"
            )
        lines.append(
            f"replayed: {self.replayed} operations, positions {self.replay_from}"
            f"..{self.replay_to} over {self.segments} segment(s)"
        )
        if self.torn_tail_cut:
            lines.append(
                f"repaired: cut a torn tail of {self.torn_tail_cut} bytes off the last segment"
            )
        else:
            lines.append("repaired: nothing (no torn tail)")
        lines.append(
            f"verified: {self.orders} orders, {self.trades} trades, {self.balances} balances, "
            f"{self.epochs} epochs consistent; digest {self.digest}"
        )
        lines.append(f"took {self.seconds:.3f} s")
        return "\n".join(lines)


def state_from_snapshot(loaded: LoadedState) -> _core.State:
    checkpoint = loaded.checkpoint
    assert checkpoint is not None
    balances = [_core.Balance(b.user_id, b.asset, b.available, b.frozen) for b in loaded.balances]
    epochs = [
        _core.Epoch(
            epoch_id=e.epoch_id,
            phase=e.phase,
            batch_hash=e.batch_hash,
            result_hash=e.result_hash,
            trade_count=e.trade_count,
            started_at=e.started_at_ns,
            completed_at=e.completed_at_ns,
        )
        for e in loaded.epochs
    ]
    return _core.State.from_snapshot(
        loaded.orders, loaded.trades, balances, epochs, checkpoint.position
    )


def recover(
    aof_dir: Path, store: Store, writer: _core.AofWriter, *, ignore_snapshot: bool = False
) -> tuple[_core.State, RecoveryReport]:
    """The state at the end of the AOF in ``aof_dir``; see the module doc."""
    started = time.monotonic()
    end = writer.position
    loaded_counts: dict[str, int] = {}
    snapshot_epoch: int | None = None
    checkpoint = None if ignore_snapshot else store.checkpoint()
    if checkpoint is not None:
        if checkpoint.position > end:
            raise RecoveryError(
                f"the database's snapshot covers AOF position {checkpoint.position}, past the "
                f"AOF's end at {end} in {aof_dir}: this AOF is not the one the snapshot came "
                "from, or its tail was lost"
            )
        loaded = store.load_state()
        state = state_from_snapshot(loaded)
        snapshot_epoch = checkpoint.epoch_id
        loaded_counts = {
            "orders": len(loaded.orders),
            "trades": len(loaded.trades),
            "balances": len(loaded.balances),
            "epochs": len(loaded.epochs),
        }
        start = checkpoint.position
    else:
        state = _core.State()
        start = 0
    first = _core.aof_start(aof_dir)
    if first is not None and start < first:
        if checkpoint is not None:
            # A database restored from a backup older than the last compaction.
            raise RecoveryError(
                f"the database's snapshot is at position {start}, but compaction removed the "
                f"AOF before position {first} in {aof_dir}: the operations between them are "
                "in neither (was the database restored from an older backup?)"
            )
        why = "--ignore-snapshot was given" if ignore_snapshot else "the database has no snapshot"
        raise RecoveryError(
            f"{why}, but compaction removed the AOF before position {first} in {aof_dir}: "
            "the operations before it exist only in the snapshot"
        )
    report = _core.replay(state, aof_dir, start=start)
    if report.is_corrupt:
        raise RecoveryError(f"cannot recover: {report.message}")
    if report.is_torn_tail:
        # The writer cut torn tails when it opened; one now means a second
        # process wrote after that, which the directory lock rules out.
        raise RecoveryError(f"a torn tail appeared after the writer opened: {report.message}")
    if report.position != end:
        raise RecoveryError(
            f"replay of {aof_dir} ended at position {report.position}, "
            f"but the writer's end is {end}"
        )
    try:
        state.check()
    except ConsistencyError as e:
        raise RecoveryError(f"the recovered state is inconsistent: {e}") from e
    result = RecoveryReport(
        snapshot=None if checkpoint is None else checkpoint.position,
        snapshot_epoch=snapshot_epoch,
        loaded=loaded_counts,
        replayed=report.frames,
        replay_from=start,
        replay_to=report.position,
        torn_tail_cut=writer.truncated_bytes,
        segments=report.segments,
        digest=state.digest(),
        orders=state.order_count,
        trades=state.trade_count,
        balances=state.balance_count,
        epochs=state.epoch_count,
        seconds=time.monotonic() - started,
    )
    log.info("recovered %s: %s", aof_dir, result.describe().replace("\n", "; "))
    return state, result
