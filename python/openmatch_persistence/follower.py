"""Follow mode: another process (the Rust engine, linking ``openmatch-aof``)
writes ``DATA_DIR/aof``; a :class:`Follower` reads it as it grows and keeps
the database current, snapshots and compacts.

* **Start**: recovery's own start (``recovery.load_base``): the database's
  state image or rows at their checkpoint, else an empty state at 0. The
  log is then applied from that position with the journal's rule
  (``_core.replay``), so after a restart nothing is skipped and nothing is
  applied twice: the checkpoint is where the database's state ends.
* **Poll**: every ``poll_interval`` the log is replayed on from the state's
  position. A torn tail at the live end is an append in progress: the
  replay stops before it and the next poll reads it whole. Corruption is an
  error naming the segment and offset, and so is a frame longer than the
  reader's limit (``OversizedFrameError``: not called corruption), each seen
  twice at the same place, so that bytes read while the writer wrote them
  are not taken for damage; nothing after it was applied, so no flush
  covers it.
* **Write-ahead across processes**: before a flush covers a position, the
  follower fdatasyncs the segments holding the bytes up to it, unless it
  was told that the writer's policy is ``always`` (each append fsynced
  before the writer went on). The database then never holds a state that
  a power loss could take out of the AOF.
* **Flush**: the existing :class:`~openmatch_persistence.flusher.Flusher`,
  every ``flush_interval`` (100 ms), with the checkpoint.
* **Compaction**, when the AOF is over the policy's size: a snapshot (a
  flush, then the state image), then the deletion of the *closed* segments
  (not the last: the writer may append to it) that the durable checkpoint
  covers, oldest first, the directory fsynced after each. Nothing else is
  ever written, truncated or deleted in ``aof/``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.compaction import (
    CompactionPolicy,
    aof_bytes_and_oldest,
    delete_covered_segments,
)
from openmatch_persistence.errors import (
    CorruptFrameError,
    FrameError,
    NotADataDirError,
    OversizedFrameError,
)
from openmatch_persistence.flusher import DEFAULT_INTERVAL, Flusher
from openmatch_persistence.identity import AOF_DIRNAME, create_identity, read_identity
from openmatch_persistence.persistence import _bound_store
from openmatch_persistence.recovery import load_base
from openmatch_persistence.store import store_schema
from openmatch_persistence.store.base import Store

log = logging.getLogger(__name__)

#: Seconds between looks at the log for new frames.
DEFAULT_POLL_INTERVAL = 0.01


@dataclass(frozen=True)
class FollowerStats:
    """Where the follower is."""

    #: The AOF position applied to the follower's state.
    position: int
    #: The position the database holds (its checkpoint), once flushed.
    flushed_position: int | None
    #: The position up to which the follower knows the AOF is durable.
    durable_position: int
    #: Seconds the oldest change not yet in the database has waited.
    seconds_behind: float
    operations: int
    compactions: int


class _FollowedDir:
    """The AOF directory as the follower may touch it: fdatasync its
    segments, and delete closed ones (``compaction.delete_covered_segments``
    calls :meth:`delete_covered`, as it calls the writer's in-process)."""

    def __init__(self, aof_dir: Path) -> None:
        self.path = aof_dir

    def sync_through(self, durable: int, position: int) -> None:
        """fdatasyncs every segment holding bytes in ``[durable, position)``
        (``segment::sync_range``, beside the writer's own file-system
        actions)."""
        _core.sync_segments(self.path, durable, position)

    def delete_covered(self, covered: int) -> tuple[int, int]:
        """Deletes, oldest first and each durably, the segments whose
        successor starts at or before ``covered``; never the last one (the
        writer's). The rule is the writer's own (``segment::delete_covered``)."""
        return _core.delete_covered_segments(self.path, covered)


class Follower:
    """Follows ``DATA_DIR/aof`` written by another process into the
    database. :meth:`run` loops until :meth:`stop` (or a signal, in the
    CLI); :meth:`poll` and :meth:`flush` are its steps, for tests."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        database_url: str | None = None,
        schema: str | None = None,
        writer_fsync: _core.FsyncPolicy | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        flush_interval: float = DEFAULT_INTERVAL,
        compaction: CompactionPolicy | None = None,
        adopt: bool = False,
        max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
    ) -> None:
        schema = store_schema(database_url, schema)
        self.data_dir = Path(data_dir)
        self.aof_dir = self.data_dir / AOF_DIRNAME
        if not self.aof_dir.is_dir():
            raise NotADataDirError(
                f"{self.data_dir}: no {AOF_DIRNAME}/ to follow (start the engine first: it "
                "creates it)"
            )
        self._dir = _FollowedDir(self.aof_dir)
        self.identity = read_identity(self.data_dir) or create_identity(self.data_dir)
        self._store: Store = _bound_store(
            self.data_dir,
            self.identity,
            database_url=database_url,
            schema=schema,
            max_connections=1,
            adopt=adopt,
        )
        try:
            base = load_base(self.aof_dir, self._store, False, self.identity.id)
        except BaseException:
            self._store.close()
            raise
        self._state = base.state
        self._writer_syncs = writer_fsync == "always"
        # What the database holds is durable: it was synced before it was
        # flushed (or the writer did it).
        self._durable = base.position
        self._poll_interval = poll_interval
        # The reader's frame limit: raise it for an engine whose writer
        # accepts longer frames, or its first such frame stops the follower
        # as oversized.
        self._max_payload = max_payload
        self._policy = compaction
        self._suspect: tuple[int, str] | None = None
        self._operations = 0
        self._compactions = 0
        self._stopping = False
        self._closed = False
        self._flusher = Flusher(self._store, self, interval=flush_interval)
        log.info(
            "following %s from position %d (%s)",
            self.aof_dir,
            base.position,
            base.source or "no snapshot: the log's start",
        )

    # --- the flusher's source ----------------------------------------------------

    def take_changes_into(self, target: _core.StateChanges) -> int:
        """The state's changes, once the AOF bytes they come from are
        durable, folded into the flusher's set in one native call (a
        SIGTERM lands in this thread: it must not lose a take). Synced
        first: a failed fdatasync must leave the changes in the state for
        the next flush (the state does not move in between: one thread
        polls and flushes)."""
        self._make_durable(self._state.position)
        return self._state.take_changes_into(target)

    def _make_durable(self, position: int) -> None:
        if position <= self._durable:
            return
        if not self._writer_syncs:
            self._dir.sync_through(self._durable, position)
        self._durable = position

    # --- the steps -----------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._state.position

    def state_digest(self) -> str:
        """The digest of the followed state (``_core.State.digest``)."""
        return self._state.digest()

    def poll(self) -> int:
        """Applies what was appended since the last poll; returns the number
        of operations applied. Raises :class:`CorruptFrameError` (naming
        segment and offset) for corruption, :class:`OversizedFrameError` for
        a frame longer than the reader's limit, ``LogViolationError`` for an
        operation that breaks the invariants."""
        report = _core.replay(self._state, self.aof_dir, max_payload=self._max_payload)
        self._operations += report["operations"]
        outcome = report["outcome"]
        if outcome not in ("corrupt", "oversized"):
            self._suspect = None
            return report["operations"]
        place = (report["position"], report["message"])
        if self._suspect != place:
            # Maybe bytes read while the writer wrote them: look again.
            self._suspect = place
            return report["operations"]
        error: type[FrameError] = (
            OversizedFrameError if outcome == "oversized" else CorruptFrameError
        )
        raise error(
            f"follow stopped: {report['message']}; nothing after position "
            f"{report['position']} was applied or flushed",
            report["position"],
            str(self.aof_dir),
        )

    def flush(self) -> int | None:
        """Writes the state's changes with the checkpoint now; returns the
        position the database holds."""
        self._flusher.flush()
        return self._flusher.stats().flushed_position

    def snapshot(self) -> int:
        """Flushes, then writes the state image at the same position."""
        self.flush()
        checkpoint = self._store.checkpoint()
        covered = 0 if checkpoint is None else checkpoint.position
        if covered >= self.position:
            self._make_durable(self.position)
            self._store.write_image(
                self.position,
                None if checkpoint is None else checkpoint.epoch_id,
                self._state.to_image(),
            )
        return covered

    def compact(self) -> tuple[int, int]:
        """Snapshot, then delete the closed segments the durable checkpoint
        covers; returns (segments, bytes) deleted."""
        covered = self.snapshot()
        deleted = delete_covered_segments(self._dir, covered)
        self._compactions += 1
        return deleted

    def _compaction_due(self) -> bool:
        if self._policy is None:
            return False
        aof_bytes, _ = aof_bytes_and_oldest(self.aof_dir)
        return self._policy.due(aof_bytes, None) is not None

    # --- the loop ------------------------------------------------------------------

    def run(self, *, until: float | None = None) -> None:
        """Polls, flushes every flush interval, compacts when due, until
        :meth:`stop` (or ``until``, a ``time.monotonic()`` deadline)."""
        next_flush = time.monotonic()
        while not self._stopping and (until is None or time.monotonic() < until):
            self.poll()
            now = time.monotonic()
            if now >= next_flush:
                wait = self._flusher.cycle()
                next_flush = now + (self._flusher.interval if wait is None else wait)
                if self._compaction_due():
                    self.compact()
            time.sleep(self._poll_interval)

    def stop(self) -> None:
        self._stopping = True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flushes what was applied, then closes the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._store.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> FollowerStats:
        flusher = self._flusher.stats()
        return FollowerStats(
            position=self.position,
            flushed_position=flusher.flushed_position,
            durable_position=self._durable,
            seconds_behind=flusher.seconds_behind,
            operations=self._operations,
            compactions=self._compactions,
        )

    def stats_dict(self) -> dict[str, Any]:
        return asdict(self.stats())


__all__ = ["DEFAULT_POLL_INTERVAL", "Follower", "FollowerStats"]
