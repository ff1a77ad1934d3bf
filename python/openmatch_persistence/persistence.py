"""The facade: one object that makes the engine's state durable.

    with Persistence.open("data") as p:          # recovers what is there
        position = p.append(op)                   # durable per the fsync policy
        p.state.order(order_id)

Write-ahead, in this order for every operation:

1. validated against the database schema (nothing that cannot be stored
   exactly ever reaches the AOF),
2. appended to the AOF and made durable (group commit across threads),
3. applied to the in-memory state, in AOF order,
4. flushed to the database by a background thread, in batches.

Threads may append concurrently. Appends become durable in an order that
the writer decides; each thread applies its operation only after all the
operations before it in the AOF are applied (an operation whose
predecessors are still on their way is left for the thread that applies
them), so the state is always the replay of a prefix of the AOF.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.compaction import (
    CompactionPolicy,
    CompactionReport,
    aof_bytes_and_oldest,
    delete_covered_segments,
)
from openmatch_persistence.dsn import mask_dsn
from openmatch_persistence.errors import OpenMatchPersistenceError, StoreError
from openmatch_persistence.flusher import Flusher
from openmatch_persistence.recovery import RecoveryReport, recover
from openmatch_persistence.state_view import StateView
from openmatch_persistence.store import open_store
from openmatch_persistence.store.base import Store, WriteResult
from openmatch_persistence.validate import validate_for_store

log = logging.getLogger(__name__)

AOF_DIRNAME = "aof"
SQLITE_FILENAME = "state.sqlite3"


class _LockedChanges:
    """The flusher's view of the state: ``take_changes`` under the state lock."""

    def __init__(self, owner: Persistence) -> None:
        self._owner = owner

    def take_changes(self) -> Any:
        owner = self._owner
        with owner._state_lock:
            # The write-ahead rule: the database may hold a change only once
            # the AOF records behind it are durable. Under `always` they are
            # already; under `everysec`/`no` this costs one fdatasync per
            # flush. Without it a power loss could leave the database ahead
            # of the AOF, which recovery refuses. Appends go on meanwhile;
            # only applying them to the state waits.
            owner._writer.wait_durable(owner._applied)
            return owner._state.take_changes()


class Persistence:
    """Durable state in ``data_dir``: the AOF in ``data_dir/aof``, the
    snapshot in SQLite at ``data_dir/state.sqlite3`` or in PostgreSQL when a
    ``database_url`` is given. Use :meth:`open`."""

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        writer: _core.AofWriter,
        state: _core.State,
        recovery: RecoveryReport,
        *,
        flush_interval: float,
        compaction: CompactionPolicy | None,
        database_label: str,
    ) -> None:
        self.data_dir = data_dir
        self.aof_dir = data_dir / AOF_DIRNAME
        self.database = database_label
        self._store = store
        self._writer = writer
        self._state = state
        self._recovery = recovery
        self._state_lock = threading.Lock()
        self._applied_cv = threading.Condition(self._state_lock)
        self._applied = writer.position
        #: Durable operations waiting for their predecessors, by start position.
        self._waiting: dict[int, tuple[int, _core.Operation]] = {}
        self._flusher = Flusher(store, _LockedChanges(self), interval=flush_interval)
        self._policy = compaction
        self._compaction_lock = threading.Lock()
        self._compacting = False
        self._compaction_thread: threading.Thread | None = None
        self._compactions = 0
        self._last_compaction_error: str | None = None
        # The age of the oldest record is counted from when it was appended;
        # records older than this process are counted from its start.
        self._oldest_since = time.monotonic()
        self._oldest_start = _core.aof_start(self.aof_dir) or 0
        self._closed = False
        self._flusher.start()

    # --- opening --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        database_url: str | None = None,
        fsync: _core.FsyncPolicy = "always",
        flush_interval: float = 0.1,
        compaction: CompactionPolicy | None = None,
        ignore_snapshot: bool = False,
        max_connections: int = 10,
    ) -> Persistence:
        """Opens (creating if needed) and recovers ``data_dir``."""
        root = Path(data_dir)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        aof_dir = root / AOF_DIRNAME
        aof_dir.mkdir(mode=0o700, exist_ok=True)
        store = open_store(
            database_url,
            sqlite_path=str(root / SQLITE_FILENAME),
            max_connections=max_connections,
        )
        try:
            store.migrate()
            writer = _core.AofWriter(aof_dir, fsync)
        except BaseException:
            store.close()
            raise
        try:
            state, report = recover(aof_dir, store, writer, ignore_snapshot=ignore_snapshot)
        except BaseException:
            writer.close()
            store.close()
            raise
        if database_url is None:
            label = f"sqlite:{root / SQLITE_FILENAME}"
        else:
            label = mask_dsn(database_url)
        return cls(
            root,
            store,
            writer,
            state,
            report,
            flush_interval=flush_interval,
            compaction=compaction if compaction is not None else CompactionPolicy(),
            database_label=label,
        )

    # --- appending --------------------------------------------------------------

    def append(self, op: _core.Operation) -> int:
        """Appends one operation; returns its position once it is durable (as
        the fsync policy promises) and applied in order."""
        return self.append_many([op])

    def append_many(self, ops: Iterable[_core.Operation]) -> int:
        """Appends operations as one contiguous run of the AOF; returns the
        position after the last. All or nothing: a bad operation fails the
        call before anything is written."""
        ops = list(ops)
        if not ops:
            return self._writer.position
        for op in ops:
            validate_for_store(op)
        bounds = self._writer.append_many_bounds(ops)
        self._apply_in_order(list(zip(bounds, bounds[1:], ops)))
        self._maybe_compact()
        return bounds[-1]

    def _apply_in_order(self, entries: list[tuple[int, int, _core.Operation]]) -> None:
        with self._state_lock:
            for start, end, op in entries:
                self._waiting[start] = (end, op)
            applied = self._applied
            while True:
                entry = self._waiting.pop(applied, None)
                if entry is None:
                    break
                end, op = entry
                self._state.apply(op, end)
                applied = end
            if applied != self._applied:
                self._applied = applied
                self._applied_cv.notify_all()

    def wait_applied(self, position: int, timeout: float | None = None) -> bool:
        """Waits until the state includes every operation before ``position``."""
        with self._applied_cv:
            return self._applied_cv.wait_for(lambda: self._applied >= position, timeout)

    # --- reading ----------------------------------------------------------------

    @property
    def state(self) -> StateView:
        """The in-memory state, read-only; each call takes the state lock."""
        return StateView(self._state, self._state_lock)

    @property
    def recovery(self) -> RecoveryReport:
        return self._recovery

    @property
    def position(self) -> int:
        """The position after the last applied operation."""
        return self._applied

    def digest(self) -> str:
        with self._state_lock:
            return self._state.digest()

    def stats(self) -> dict[str, Any]:
        writer = self._writer.stats().as_dict()
        flusher = self._flusher.stats()
        aof_bytes, _ = aof_bytes_and_oldest(self.aof_dir)
        return {
            "position": self._applied,
            "aof_bytes": aof_bytes,
            "writer": writer,
            "flusher": dataclasses.asdict(flusher),
            "compactions": self._compactions,
            "last_compaction_error": self._last_compaction_error,
        }

    # --- flushing, snapshots, compaction ----------------------------------------

    def flush(self) -> WriteResult | None:
        """Writes every change applied so far to the database now."""
        return self._flusher.flush()

    def snapshot(self) -> int:
        """Makes the database hold the whole state at the current position:
        its rows (one transaction) and its image (another); returns the
        position."""
        target = self._applied
        result = self._flusher.flush()
        checkpoint = self._store.checkpoint()
        covered = checkpoint.position if checkpoint is not None else 0
        if covered < target:
            raise StoreError(
                f"snapshot did not reach position {target}: the database holds {covered}"
                + ("" if result is None else f" after writing up to {result.position}")
            )
        return self._write_image(None if checkpoint is None else checkpoint.epoch_id)

    def _write_image(self, epoch_id: int | None) -> int:
        # Under the state lock so that the image is the state at one position;
        # appends go on meanwhile (only applying waits).
        with self._state_lock:
            position = self._state.position
            image = self._state.to_image()
        # Write-ahead: the database may hold a state only once the AOF behind
        # it is durable (a no-op under `always`), or a power loss could leave
        # an image ahead of the AOF, which recovery refuses.
        self._writer.wait_durable(position)
        self._store.write_image(position, epoch_id, image)
        return position

    def compact(self) -> CompactionReport:
        """Rotate, snapshot, delete the covered segments (see compaction.py)."""
        started = time.monotonic()
        with self._compaction_lock:
            rotated_at = self._writer.rotate()
            # Every record before the rotation is durable once rotate returns;
            # wait until this process has also applied them.
            if not self.wait_applied(rotated_at, timeout=60):
                raise StoreError(f"operations before position {rotated_at} were not applied")
            covered = self.snapshot()
            segments, nbytes = delete_covered_segments(self.aof_dir, min(covered, rotated_at))
            _, oldest = aof_bytes_and_oldest(self.aof_dir)
            self._oldest_start = rotated_at if oldest is None else oldest
            self._oldest_since = time.monotonic()
            self._compactions += 1
        report = CompactionReport(
            rotated_at=rotated_at,
            snapshot_position=covered,
            deleted_segments=segments,
            deleted_bytes=nbytes,
            seconds=time.monotonic() - started,
        )
        log.info("compaction: %s", report)
        return report

    def _maybe_compact(self) -> None:
        # Called after every append: arithmetic only, no file system calls.
        if self._policy is None or self._compacting or self._closed:
            return
        held = self._writer.position - self._oldest_start
        if held <= 0:
            return
        why = self._policy.due(held, time.monotonic() - self._oldest_since)
        if why is None:
            return
        self._compacting = True
        log.info("compaction due: %s", why)
        thread = threading.Thread(target=self._compact_in_background, name="om-compaction")
        self._compaction_thread = thread
        thread.start()

    def wait_compaction(self, timeout: float | None = None) -> bool:
        """Waits for a background compaction that has started; True once
        none runs."""
        thread = self._compaction_thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _compact_in_background(self) -> None:
        try:
            self.compact()
            self._last_compaction_error = None
        except OpenMatchPersistenceError as e:
            # The AOF keeps everything until a compaction succeeds.
            self._last_compaction_error = str(e)
            log.warning("compaction failed, will retry: %s", e)
        finally:
            self._compacting = False

    # --- closing ----------------------------------------------------------------

    def close(self) -> None:
        """Flushes what it can to the database, writes the state's image (so
        the next open replays nothing), closes the AOF (fsync) and the store.
        The database being down loses nothing: the AOF has every operation.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True  # and no compaction starts from now on
        # One that already started finishes first: closing the writer under
        # it would fail it halfway (after its rotation, before its snapshot).
        self.wait_compaction()
        with self._compaction_lock:
            try:
                self._flusher.stop(final_flush=True, timeout=30)
                try:
                    checkpoint = self._store.checkpoint()
                    self._write_image(None if checkpoint is None else checkpoint.epoch_id)
                except OpenMatchPersistenceError as e:
                    log.warning("close: no state image written (recovery will replay): %s", e)
            finally:
                try:
                    self._writer.close()
                finally:
                    self._store.close()

    def __enter__(self) -> Persistence:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
