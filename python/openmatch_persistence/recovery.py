"""Recovery on start-up: the latest snapshot, then the AOF after it.

1. The writer opens the AOF directory first (it takes the directory lock
   and cuts a torn tail off the last segment, as Redis'
   ``aof-load-truncated`` does; corruption makes it refuse to open).
2. The snapshot: the database's state image (the whole state as one
   checksummed blob, written at each snapshot and clean close) when it is
   good and its position is still in the AOF; else its rows at their
   checkpoint (slower to load: one Python object per entity); else nothing.
   ``ignore_snapshot`` starts from an empty state at position 0 instead
   (only possible while compaction has not removed the AOF's start).
3. The AOF is replayed from that position to its end, in Rust.
4. The state is checked against its invariants.

The state's digest is not computed here: hashing a large state costs about
as much as replaying half of it, and only a caller that compares states
needs it (``Persistence.digest()``, ``recover --json``).

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
from openmatch_persistence.errors import (
    ConsistencyError,
    InvalidValueError,
    RecoveryError,
    StoreError,
)
from openmatch_persistence.store.base import LoadedState, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    """What recovery loaded, replayed, repaired and verified."""

    #: The snapshot's position, or None when none was loaded.
    snapshot: int | None
    #: "image" (the state's image), "rows" (the tables), or None.
    snapshot_source: str | None
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
                f"snapshot: position {self.snapshot} (epoch {self.snapshot_epoch}), from the "
                f"database's {self.snapshot_source}: {loaded}"
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
            f"{self.epochs} epochs consistent"
        )
        lines.append(f"took {self.seconds:.3f} s")
        return "\n".join(lines)


def state_from_snapshot(loaded: LoadedState) -> _core.State:
    checkpoint = loaded.checkpoint
    assert checkpoint is not None
    return _core.State.from_snapshot(
        loaded.orders, loaded.trades, loaded.balances, loaded.epochs, checkpoint.position
    )


def recover(
    aof_dir: Path, store: Store, writer: _core.AofWriter, *, ignore_snapshot: bool = False
) -> tuple[_core.State, RecoveryReport]:
    """The state at the end of the AOF in ``aof_dir``; see the module doc."""
    started = time.monotonic()
    end = writer.position
    first = _core.aof_start(aof_dir)
    usable_from = 0 if first is None else first
    loaded_counts: dict[str, int] = {}
    snapshot_epoch: int | None = None
    source: str | None = None
    state: _core.State | None = None
    start = 0
    #: The position of a snapshot that exists but predates the AOF's start.
    too_old: int | None = None
    if not ignore_snapshot:
        try:
            image = store.load_image()
        except StoreError as e:
            # Unreadable is damaged: the rows are the fallback. (A database
            # that is down fails again, with its own error, just below.)
            log.warning("cannot read the state image, using the rows: %s", e)
            image = None
        if image is not None and image.position > end:
            raise RecoveryError(
                f"the database's snapshot (its state image) covers AOF position "
                f"{image.position}, past the AOF's end at {end} in {aof_dir}: this AOF is not "
                "the one the snapshot came from, or its tail was lost"
            )
        if image is not None and image.position < usable_from:
            too_old = image.position
        if image is not None and image.position >= usable_from:
            try:
                state = _core.State.from_image(image.data)
            except InvalidValueError as e:
                log.warning(
                    "state image at position %d is damaged, using the rows: %s", image.position, e
                )
            else:
                source, start, snapshot_epoch = "image", image.position, image.epoch_id
        if state is None:
            checkpoint = store.checkpoint()
            if checkpoint is not None and checkpoint.position > end:
                raise RecoveryError(
                    f"the database's snapshot covers AOF position {checkpoint.position}, past "
                    f"the AOF's end at {end} in {aof_dir}: this AOF is not the one the "
                    "snapshot came from, or its tail was lost"
                )
            if checkpoint is not None and checkpoint.position < usable_from:
                too_old = (
                    checkpoint.position if too_old is None else max(too_old, checkpoint.position)
                )
            if checkpoint is not None and checkpoint.position >= usable_from:
                state = state_from_snapshot(store.load_state())
                source, start, snapshot_epoch = "rows", checkpoint.position, checkpoint.epoch_id
        if state is not None:
            loaded_counts = {
                "orders": state.order_count,
                "trades": state.trade_count,
                "balances": state.balance_count,
                "epochs": state.epoch_count,
            }
    if state is None:
        state = _core.State()
    if start < usable_from:
        if too_old is not None:
            # A database restored from a backup older than the last compaction.
            raise RecoveryError(
                f"the database's snapshot is at position {too_old}, but compaction removed the "
                f"AOF before position {usable_from} in {aof_dir}: the operations between them "
                "are in neither (was the database restored from an older backup?)"
            )
        why = "--ignore-snapshot was given" if ignore_snapshot else "the database has no snapshot"
        raise RecoveryError(
            f"{why}, but compaction removed the AOF before position {usable_from} in "
            f"{aof_dir}: the operations before it exist only in the snapshot"
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
        snapshot=None if source is None else start,
        snapshot_source=source,
        snapshot_epoch=snapshot_epoch,
        loaded=loaded_counts,
        replayed=report.frames,
        replay_from=start,
        replay_to=report.position,
        torn_tail_cut=writer.truncated_bytes,
        segments=report.segments,
        orders=state.order_count,
        trades=state.trade_count,
        balances=state.balance_count,
        epochs=state.epoch_count,
        seconds=time.monotonic() - started,
    )
    log.info("recovered %s: %s", aof_dir, result.describe().replace("\n", "; "))
    return state, result
