"""Recovery on start-up: the latest snapshot, then the AOF after it.

1. The snapshot: the database's state image (the whole state as one
   checksummed blob, written at each snapshot and clean close) when it is
   good and its position is still in the AOF; else its rows at their
   checkpoint (slower to load: one Python object per entity); else nothing.
   ``ignore_snapshot`` starts from an empty state at position 0 instead
   (only possible while compaction has not removed the AOF's start).
2. The journal opens the AOF directory on it (``_core.Journal.open``): the
   writer takes the directory lock and cuts a torn tail off the last
   segment (as Redis' ``aof-load-truncated`` does), then the AOF is
   replayed from the snapshot's position to its end with the same rule the
   journal applies before every append, in Rust. An operation that breaks
   an invariant stops recovery there, naming it (``LogViolationError``;
   ``recover --until`` is the way out); corruption, or a replay that does
   not end at the writer's end, is refused.
3. The state is checked against its invariants (this catches bad data
   imported from a snapshot).

The state's digest is not computed here: hashing a large state costs about
as much as replaying half of it, and only a caller that compares states
needs it (``Persistence.digest()``, ``recover --json``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from openmatch_persistence import _core, repair
from openmatch_persistence.errors import (
    ConsistencyError,
    IdentityMismatchError,
    InvalidValueError,
    RecoveryError,
    StoreError,
)
from openmatch_persistence.store.base import LoadedState, StateImage, Store

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
    #: Ids of terminal orders and trades in the id window (docs/state.md).
    retired_ids: int
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
            f"verified: {self.orders} open orders, {self.retired_ids} ids in the window, "
            f"{self.balances} balances, "
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


@dataclass(frozen=True)
class RecoveryBase:
    """The state recovery starts from, and where it came from."""

    state: _core.State
    source: str | None
    position: int
    epoch: int | None


@dataclass(frozen=True)
class SeenSnapshot:
    """What recovery knows of a snapshot in the database before loading it:
    the state image or the rows' checkpoint."""

    position: int
    #: The data directory it was written for (None: before identities).
    written_for: uuid.UUID | None
    epoch: int | None = None


@dataclass(frozen=True)
class Start:
    """Where recovery starts: the image, the rows at their checkpoint, or an
    empty state at position 0 (``source`` None)."""

    source: Literal["image", "rows"] | None
    position: int = 0
    epoch: int | None = None


def decide_start(
    *,
    aof_dir: Path,
    aof_start: int | None,
    image: SeenSnapshot | None,
    checkpoint: SeenSnapshot | None,
    ignore_snapshot: bool = False,
    data_dir_id: uuid.UUID | None = None,
) -> Start:
    """The one rule of where recovery starts, a function of what it found
    (tests/test_recovery_start.py takes it case by case):

    * a snapshot stamped with another data directory is refused
      (``IdentityMismatchError``), whatever else there is;
    * the image first, then the rows, each only when compaction has not
      removed the AOF it continues from (its position is at or after the
      AOF's first segment); ``image`` None means none, unreadable or
      damaged;
    * with neither: an empty state, if the AOF still starts at 0; else the
      operations before the AOF's start exist nowhere, and recovery refuses
      (``RecoveryError``), naming a database restored from an older backup
      when a snapshot predates the AOF.

    ``aof_dir`` only names the directory in messages."""
    usable_from = aof_start or 0
    candidates: list[tuple[Literal["image", "rows"], SeenSnapshot]] = []
    found: list[tuple[Literal["image", "rows"], SeenSnapshot | None, str]] = [
        ("image", image, "state image"),
        ("rows", checkpoint, "checkpoint"),
    ]
    if not ignore_snapshot:
        for source, seen, what in found:
            if seen is None:
                continue
            if data_dir_id is not None and seen.written_for not in (None, data_dir_id):
                raise IdentityMismatchError(
                    f"the database's {what} was written for data directory id "
                    f"{seen.written_for}, not this one ({data_dir_id}): refusing to load it",
                    data_dir_id=data_dir_id,
                    database_id=seen.written_for,
                )
            candidates.append((source, seen))
    for source, seen in candidates:
        if seen.position >= usable_from:
            return Start(source, seen.position, seen.epoch)
    if usable_from == 0:
        return Start(None)
    too_old = max((seen.position for _, seen in candidates), default=None)
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


def load_base(
    aof_dir: Path, store: Store, ignore_snapshot: bool, data_dir_id: uuid.UUID | None = None
) -> RecoveryBase:
    """The state recovery starts from (the image, the rows, or empty, as
    :func:`decide_start` rules), before the AOF after it is replayed: the
    start of :func:`recover` and of the follower (follower.py)."""
    aof_start = _core.aof_start(aof_dir) if aof_dir.is_dir() else None
    image: StateImage | None = None
    checkpoint = None
    if not ignore_snapshot:
        try:
            image = store.load_image()
        except StoreError as e:
            # Unreadable is damaged: the rows are the fallback. (A database
            # that is down fails again, with its own error, just below.)
            log.warning("cannot read the state image, using the rows: %s", e)
        checkpoint = store.checkpoint()
    while True:
        start = decide_start(
            aof_dir=aof_dir,
            aof_start=aof_start,
            image=None if image is None else SeenSnapshot(image.position, image.data_dir_id),
            checkpoint=None
            if checkpoint is None
            else SeenSnapshot(checkpoint.position, checkpoint.data_dir_id, checkpoint.epoch_id),
            ignore_snapshot=ignore_snapshot,
            data_dir_id=data_dir_id,
        )
        if start.source == "image" and image is not None:
            try:
                state = _core.State.from_image(image.data)
            except InvalidValueError as e:
                log.warning(
                    "state image at position %d is damaged, using the rows: %s", image.position, e
                )
                image = None  # and decide again without it
                continue
            return RecoveryBase(state, "image", image.position, image.epoch_id)
        if start.source == "rows":
            # The hot part of the rows, through indexes; the whole history
            # only for a checkpoint written before the clock was kept
            # (from_snapshot then keeps its hot part).
            hot = store.load_hot_state()
            state = state_from_snapshot(store.load_state()) if hot is None else hot.state()
            return RecoveryBase(state, "rows", state.position, start.epoch)
        return RecoveryBase(_core.State(), None, 0, None)


def recover(
    aof_dir: Path,
    store: Store,
    fsync: _core.FsyncPolicy = "always",
    *,
    ignore_snapshot: bool = False,
    data_dir_id: uuid.UUID | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> tuple[_core.Journal, RecoveryReport]:
    """The journal of ``aof_dir`` with the state at the AOF's end; see the
    module doc. ``data_dir_id``: refuse a snapshot written for another data
    directory (the caller has claimed the store for this one).
    ``max_payload``: the journal's frame bound, for replay and appends; a
    frame above it in the log is refused (``OversizedFrameError``)."""
    started = time.monotonic()
    base = load_base(aof_dir, store, ignore_snapshot, data_dir_id)
    loaded: dict[str, int] = {}
    if base.source is not None:
        loaded = {
            "orders": base.state.order_count,
            "retired_ids": base.state.retired_id_count,
            "balances": base.state.balance_count,
            "epochs": base.state.epoch_count,
        }
    journal, replayed = _core.Journal.open(aof_dir, fsync, base.state, max_payload=max_payload)
    try:
        state = journal.state
        state.check()
        result = RecoveryReport(
            snapshot=None if base.source is None else base.position,
            snapshot_source=base.source,
            snapshot_epoch=base.epoch,
            loaded=loaded,
            replayed=replayed["operations"],
            replay_from=replayed["from_position"],
            replay_to=replayed["position"],
            torn_tail_cut=replayed["torn_tail_cut"],
            segments=replayed["segments"],
            orders=state.order_count,
            retired_ids=state.retired_id_count,
            balances=state.balance_count,
            epochs=state.epoch_count,
            seconds=time.monotonic() - started,
        )
    except ConsistencyError as e:
        journal.close()
        raise RecoveryError(f"the recovered state is inconsistent: {e}") from e
    except BaseException:
        journal.close()
        raise
    log.info("recovered %s: %s", aof_dir, result.describe().replace("\n", "; "))
    return journal, result


@dataclass(frozen=True)
class CutReport:
    """What ``recover --until`` moved out of the log."""

    #: The position asked for: the operation there and all after it went.
    until: int
    #: Where the log ends now (the start of that operation's frame).
    position: int
    #: The parts removed, each with its backup file.
    removed: tuple[repair.RemovedPart, ...]

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.removed)

    def describe(self) -> str:
        lines = [
            f"cut: the operation at position {self.until} and everything after it "
            f"({self.bytes} bytes) moved to backups; the log now ends at {self.position}"
        ]
        lines += [f"  {p.segment} -> {p.backup}" for p in self.removed]
        return "\n".join(lines)


def cut_until(
    aof_dir: Path,
    store: Store,
    until: int,
    *,
    ignore_snapshot: bool = False,
    data_dir_id: uuid.UUID | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> CutReport:
    """The way out of a log that breaks the invariants: moves the operation
    at position ``until`` (as recovery named it) and everything after it to
    backup files, so that recovery rebuilds the state before it. Nothing is
    deleted. Refuses when an earlier operation breaks an invariant too
    (naming it), when ``until`` is not an operation's position, or when the
    database's snapshot already covers it, or a frame before it is above
    ``max_payload`` (``OversizedFrameError``). Run it while nothing has the
    data directory open."""
    base = load_base(aof_dir, store, ignore_snapshot, data_dir_id)
    if base.position >= until:
        raise RecoveryError(
            f"--until {until}: the database's snapshot already covers position "
            f"{base.position}, so the state cannot be rebuilt from before it"
        )
    replayed = _core.replay(base.state, aof_dir, until=until, max_payload=max_payload)
    removed = repair.cut(aof_dir, replayed["position"])
    log.warning(
        "cut %s at position %d (--until %d): %d part(s) moved to backups",
        aof_dir,
        replayed["position"],
        until,
        len(removed),
    )
    return CutReport(until, replayed["position"], removed)
