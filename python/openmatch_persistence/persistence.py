"""The facade: one object that makes the engine's state durable.

    with Persistence.open("data") as p:          # recovers what is there
        position = p.append(op)                   # durable per the fsync policy
        p.state.order(order_id)

The write path belongs to the journal (``_core.Journal``, Rust): every
append is judged (the database schema and the state's invariants), written
with group commit across threads, and applied to the state in AOF order,
in one call that no exception or signal of the caller can split. Readers
of :attr:`Persistence.state` see only acknowledged operations; the
background flusher takes only durable changes. Python keeps the database
(flushes, snapshots) and the compaction policy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from openmatch_persistence import _core
from openmatch_persistence.compaction import (
    CompactionPolicy,
    CompactionReport,
    aof_bytes_and_oldest,
    delete_covered_segments,
)
from openmatch_persistence.dsn import mask_dsn
from openmatch_persistence.errors import (
    IdentityMismatchError,
    OpenMatchPersistenceError,
    StoreError,
)
from openmatch_persistence.flusher import Flusher
from openmatch_persistence.identity import (
    AOF_DIRNAME,
    DataDirIdentity,
    create_identity,
    is_data_dir,
    read_identity,
    require_data_dir,
)
from openmatch_persistence.recovery import CutReport, RecoveryReport, cut_until, recover
from openmatch_persistence.store import open_store, store_schema
from openmatch_persistence.store.base import Store, WriteResult, schema_label

log = logging.getLogger(__name__)

SQLITE_FILENAME = "state.sqlite3"
#: Seconds the oldest change not yet in the database may age before appends
#: wait for the flusher (``max_flush_lag``).
DEFAULT_MAX_FLUSH_LAG = 0.5


@dataclasses.dataclass(frozen=True)
class _Opened:
    """What opening a data directory produced, for either face."""

    root: Path
    store: Store
    journal: _core.Journal
    report: RecoveryReport
    label: str
    identity: DataDirIdentity

    def discard(self) -> None:
        """Releases what an open that nobody will use took (the directory
        lock, the connections): for an open whose caller went away."""
        try:
            self.journal.close()
        finally:
            self.store.close()


def _open_data_dir(
    data_dir: str | os.PathLike[str],
    *,
    database_url: str | None,
    fsync: _core.FsyncPolicy,
    ignore_snapshot: bool,
    max_connections: int,
    adopt: bool,
    create: bool,
    schema: str | None,
    max_payload: int,
) -> _Opened:
    """Opens and recovers ``data_dir`` (blocking): see :meth:`Persistence.open`."""
    schema = store_schema(database_url, schema)  # before anything is created
    # A long-running process frees multi-megabyte blocks all the time
    # (flushes, images): with glibc's growing mmap threshold they fragment
    # the heap (rust/openmatch-persistence-py/src/memory.rs).
    _core.fix_malloc_mmap_threshold()
    root = Path(data_dir)
    if not create:
        require_data_dir(root)
    existing = is_data_dir(root)
    aof_dir = root / AOF_DIRNAME
    # Durably (each new directory's parent fsynced): a crash must not
    # lose the data dir under acknowledged appends.
    _core.create_dir_durably(aof_dir)
    identity = read_identity(root) or create_identity(root, existing=existing)
    store = _bound_store(
        root,
        identity,
        database_url=database_url,
        schema=schema,
        max_connections=max_connections,
        adopt=adopt,
    )
    try:
        journal, report = recover(
            aof_dir,
            store,
            fsync,
            ignore_snapshot=ignore_snapshot,
            data_dir_id=identity.id,
            max_payload=max_payload,
        )
    except BaseException:
        store.close()
        raise
    if database_url is None:
        label = f"sqlite:{root / SQLITE_FILENAME}"
    else:
        label = schema_label(mask_dsn(database_url), schema)
    return _Opened(root, store, journal, report, label, identity)


class PersistenceBase:
    """What both faces share (:class:`Persistence`, and
    :class:`~openmatch_persistence.async_persistence.AsyncPersistence`):
    the parts of an open data directory, the reads, the snapshot and
    compaction logic and when a compaction is due, and the order of
    closing. Its methods block; a face decides where they run (the
    caller's thread, or a worker thread of an event loop)."""

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        journal: _core.Journal,
        recovery: RecoveryReport,
        *,
        flush_interval: float,
        compaction: CompactionPolicy | None,
        database_label: str,
        identity: DataDirIdentity,
        max_flush_lag: float | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.aof_dir = data_dir / AOF_DIRNAME
        self.database = database_label
        #: The data directory's identity (``DATA_DIR/identity``); the
        #: database is bound to it (docs/storage.md, "Identity").
        self.identity = identity
        self._store = store
        self._journal = journal
        self._recovery = recovery
        # The journal's take_changes waits until the AOF behind the changes
        # is durable: the database never gets ahead of the log. Each face
        # runs the flusher's cycle its own way (a thread, a task).
        self._flusher = Flusher(store, journal, interval=flush_interval)
        self._max_flush_lag = max_flush_lag
        self._lag_check_at = 0.0
        #: Seconds appends waited for the flusher (``max_flush_lag``).
        self._held_back = 0.0
        self._policy = compaction
        self._compaction_lock = threading.Lock()
        self._compacting = False
        self._compaction_thread: threading.Thread | None = None
        self._compactions = 0
        #: Failed compactions in all, and since the last one that succeeded.
        self._compaction_failures = 0
        self._compaction_failures_in_a_row = 0
        #: Why the last state image could not be written (None: it was).
        self._last_image_error: str | None = None
        self._last_compaction_error: str | None = None
        # The age of the oldest record is counted from when it was appended;
        # records older than this process are counted from its start.
        self._oldest_since = time.monotonic()
        self._oldest_start = _core.aof_start(self.aof_dir) or 0
        self._arm_compaction()
        self._closed = False

    @classmethod
    def _from_opened(
        cls: type[_Face],
        opened: _Opened,
        *,
        flush_interval: float,
        compaction: CompactionPolicy | None,
        max_flush_lag: float | None,
    ) -> _Face:
        return cls(
            opened.root,
            opened.store,
            opened.journal,
            opened.report,
            flush_interval=flush_interval,
            compaction=compaction if compaction is not None else CompactionPolicy(),
            database_label=opened.label,
            identity=opened.identity,
            max_flush_lag=max_flush_lag,
        )

    # --- holding appends back -------------------------------------------------

    def _flusher_behind(self) -> bool:
        """Whether the next append should wait for the flusher: the oldest
        change not yet in the database is older than ``max_flush_lag``.
        Looked at most every 10 ms, so the check costs an append nothing."""
        limit = self._max_flush_lag
        if limit is None:
            return False
        now = time.monotonic()
        if now < self._lag_check_at:
            return False
        self._lag_check_at = now + 0.01
        return self._flusher.lag_over(limit)

    def _wait_for_flusher(self) -> None:
        """Blocks (without the GIL, in sleeps) until the flusher is back
        under half of ``max_flush_lag``, or fails, or the face closes. The
        changes not yet written are held in memory: bounding their age
        bounds that memory, whatever the append rate (docs/fsync-policies.md,
        "Flush lag")."""
        limit = self._max_flush_lag
        if limit is None:
            return
        started = time.monotonic()
        while not self._closed and self._flusher.lag_over(limit / 2):
            time.sleep(0.002)
        self._held_back += time.monotonic() - started

    # --- reading ----------------------------------------------------------------

    @property
    def state(self) -> _core.State:
        """The in-memory state, read-only. Each call shows only acknowledged
        operations (it waits, without the GIL, for the group commit that
        covers everything applied so far)."""
        return self._journal.state

    @property
    def recovery(self) -> RecoveryReport:
        return self._recovery

    @property
    def position(self) -> int:
        """The position after the last acknowledged operation."""
        return self._journal.position

    @property
    def closed(self) -> bool:
        return self._closed

    def digest(self) -> str:
        return self._journal.state.digest()

    def stats(self) -> dict[str, Any]:
        writer = self._journal.stats().as_dict()
        flusher = self._flusher.stats()
        aof_bytes, _ = aof_bytes_and_oldest(self.aof_dir)
        return {
            "position": self._journal.end,
            "aof_bytes": aof_bytes,
            "writer": writer,
            "flusher": dataclasses.asdict(flusher),
            "compactions": self._compactions,
            "compaction_failures": self._compaction_failures,
            "compaction_failures_in_a_row": self._compaction_failures_in_a_row,
            "last_compaction_error": self._last_compaction_error,
            "last_image_error": self._last_image_error,
            "held_back_seconds": self._held_back,
        }

    # --- snapshots, compaction (blocking) ---------------------------------------

    def _snapshot_now(self) -> int:
        target = self._journal.end
        result = self._flusher.flush()
        checkpoint = self._store.checkpoint()
        if checkpoint is not None and checkpoint.data_dir_id != self.identity.id:
            # Never reached through the store's own checks (the flush above
            # refuses a database of another data directory); compaction
            # relies on this: it deletes only what this data directory's
            # own checkpoint covers.
            raise IdentityMismatchError(
                f"snapshot: the database's checkpoint was written for data directory id "
                f"{checkpoint.data_dir_id}, not {self.data_dir} (id {self.identity.id})",
                data_dir_id=self.identity.id,
                data_dir_path=str(self.data_dir),
                database_id=checkpoint.data_dir_id,
            )
        covered = checkpoint.position if checkpoint is not None else 0
        if covered < target:
            raise StoreError(
                f"snapshot did not reach position {target}: the database holds {covered}"
                + ("" if result is None else f" after writing up to {result.position}")
            )
        return self._write_image(None if checkpoint is None else checkpoint.epoch_id)

    def _write_image(self, epoch_id: int | None) -> int:
        # The journal exports the state at one position, once the AOF up to
        # it is durable (write-ahead: the database may hold a state only
        # then, or a power loss could leave an image ahead of the AOF).
        position, image = self._journal.image()
        try:
            self._store.write_image(position, epoch_id, image)
        except OpenMatchPersistenceError as e:
            self._last_image_error = str(e)
            raise
        self._last_image_error = None
        return position

    def _compact_now(self) -> CompactionReport:
        started = time.monotonic()
        with self._compaction_lock:
            # Every record before the rotation is durable once rotate
            # returns, and the journal applied each when it admitted it.
            rotated_at = self._journal.rotate()
            covered = self._snapshot_now()
            segments, nbytes = delete_covered_segments(self._journal, min(covered, rotated_at))
            _, oldest = aof_bytes_and_oldest(self.aof_dir)
            self._oldest_start = rotated_at if oldest is None else oldest
            self._oldest_since = time.monotonic()
            self._arm_compaction()
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

    def _arm_compaction(self) -> None:
        """Where the policy's thresholds lie, as a position and a time, so
        that the check after every append is two comparisons."""
        max_bytes = None if self._policy is None else self._policy.max_bytes
        max_age = None if self._policy is None else self._policy.max_age
        self._due_position: float = (
            math.inf if max_bytes is None else self._oldest_start + max_bytes
        )
        self._due_time: float = math.inf if max_age is None else self._oldest_since + max_age

    def _maybe_compact(self, position: int) -> None:
        # Called after every append (the async face: after every group
        # commit): two comparisons, no file system calls. A due compaction
        # runs in a thread of its own under both faces, so an event loop
        # never waits for it.
        if position <= self._due_position and time.monotonic() < self._due_time:
            return
        if self._policy is None or self._compacting or self._closed:
            return
        held = position - self._oldest_start
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

    def _background_compaction(self) -> object:
        return self._compact_now()

    def _wait_compaction(self, timeout: float | None = None) -> bool:
        thread = self._compaction_thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _compact_in_background(self) -> None:
        try:
            self._background_compaction()
            self._last_compaction_error = None
            self._compaction_failures_in_a_row = 0
        except OpenMatchPersistenceError as e:
            # The AOF keeps everything until a compaction succeeds.
            self._last_compaction_error = str(e)
            self._compaction_failures += 1
            self._compaction_failures_in_a_row += 1
            log.warning("compaction failed, will retry: %s", e)
        finally:
            self._compacting = False

    # --- closing ----------------------------------------------------------------

    def _close_now(self, stop_flusher: Callable[[], None]) -> None:
        """The blocking part of closing, once ``_closed`` is set (so no
        compaction starts any more): a started compaction finishes (closing
        the writer under it would fail it halfway, after its rotation and
        before its snapshot); ``stop_flusher`` stops the face's background
        cycle; then a final flush, the state's image, the AOF (fsync) and
        the store."""
        self._wait_compaction()
        with self._compaction_lock:
            try:
                stop_flusher()
                self._flusher.flush()
                try:
                    checkpoint = self._store.checkpoint()
                    self._write_image(None if checkpoint is None else checkpoint.epoch_id)
                except OpenMatchPersistenceError as e:
                    log.warning("close: no state image written (recovery will replay): %s", e)
            finally:
                try:
                    self._journal.close()
                finally:
                    self._store.close()


_Face = TypeVar("_Face", bound=PersistenceBase)


class Persistence(PersistenceBase):
    """Durable state in ``data_dir``: the AOF in ``data_dir/aof``, the
    snapshot in SQLite at ``data_dir/state.sqlite3`` or in PostgreSQL when a
    ``database_url`` is given. Use :meth:`open`."""

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
        adopt: bool = False,
        create: bool = True,
        schema: str | None = None,
        max_flush_lag: float | None = DEFAULT_MAX_FLUSH_LAG,
        max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
    ) -> Persistence:
        """Opens (creating it if needed, unless ``create`` is false) and
        recovers ``data_dir``. The database must be this data directory's:
        one of another is refused (:class:`IdentityMismatchError`) before
        anything is written; one of none is taken when it holds no snapshot,
        or when ``adopt`` is true (see docs/storage.md, "Identity").

        ``schema``: the PostgreSQL schema that holds this data directory's
        tables, created by the migrations if missing, so that several data
        directories share one database (docs/storage.md, "Schemas"). None
        keeps the URL's own search_path (normally ``public``); SQLite takes
        none but ``public``.

        ``max_flush_lag``: when the oldest change not yet in the database is
        older than this many seconds while the database takes writes, an
        append waits (after it is durable) until the flusher is back under
        half of it; None never waits. A database that fails holds nothing
        back: the AOF keeps every operation until it is back.

        ``max_payload``: the longest frame payload the journal replays and
        appends (16 MiB by default). A log written by an engine with a
        higher bound is refused (:class:`OversizedFrameError`, naming the
        frame) until it is raised to match (docs/recovery.md); an append
        above it is refused and writes nothing."""
        opened = _open_data_dir(
            data_dir,
            database_url=database_url,
            fsync=fsync,
            ignore_snapshot=ignore_snapshot,
            max_connections=max_connections,
            adopt=adopt,
            create=create,
            schema=schema,
            max_payload=max_payload,
        )
        self = cls._from_opened(
            opened,
            flush_interval=flush_interval,
            compaction=compaction,
            max_flush_lag=max_flush_lag,
        )
        self._flusher.start()  # this face flushes in a thread
        return self

    # --- appending --------------------------------------------------------------

    def append(self, op: _core.Operation) -> int:
        """Appends one operation; returns its position once it is durable (as
        the fsync policy promises) and applied. An operation that does not
        fit the database schema (``InvalidValueError``) or would break an
        invariant of the state (``OperationRefusedError``) writes nothing."""
        position = self._journal.append(op)
        self._after_append(position)
        return position

    def append_many(self, ops: Iterable[_core.Operation]) -> int:
        """Appends operations as one contiguous run of the AOF; returns the
        position after the last. All or nothing: a bad operation (judged
        after the ones before it in the batch) fails the call before
        anything is written."""
        position = self._journal.append_many(ops)
        self._after_append(position)
        return position

    def _after_append(self, position: int) -> None:
        """What follows every acknowledged append on this face: a compaction
        when one is due, and the wait for a flusher that is behind."""
        self._maybe_compact(position)
        if self._flusher_behind():
            self._wait_for_flusher()

    # --- flushing, snapshots, compaction ----------------------------------------

    def flush(self) -> WriteResult | None:
        """Writes every change applied so far to the database now."""
        return self._flusher.flush()

    def snapshot(self) -> int:
        """Makes the database hold the whole state at the current position:
        its rows (one transaction) and its image (another); returns the
        position."""
        return self._snapshot_now()

    def compact(self) -> CompactionReport:
        """Rotate, snapshot, delete the covered segments (see compaction.py)."""
        return self._compact_now()

    def _background_compaction(self) -> object:
        # Through the public method, which a subclass (or a test) may wrap.
        return self.compact()

    def wait_compaction(self, timeout: float | None = None) -> bool:
        """Waits for a background compaction that has started; True once
        none runs."""
        return self._wait_compaction(timeout)

    # --- closing ----------------------------------------------------------------

    def close(self) -> None:
        """Flushes what it can to the database, writes the state's image (so
        the next open replays nothing), closes the AOF (fsync) and the store.
        The database being down loses nothing: the AOF has every operation.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True  # and no compaction starts from now on
        self._close_now(lambda: self._flusher.stop(final_flush=False, timeout=30))

    def __enter__(self) -> Persistence:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def cut_log_until(
    data_dir: str | os.PathLike[str],
    until: int,
    *,
    database_url: str | None = None,
    ignore_snapshot: bool = False,
    adopt: bool = False,
    schema: str | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> CutReport:
    """``recover --until``: see :func:`recovery.cut_until`. The data
    directory must exist and not be open; the database must be its own."""
    schema = store_schema(database_url, schema)
    root = Path(data_dir)
    require_data_dir(root)
    aof_dir = root / AOF_DIRNAME
    identity = read_identity(root) or create_identity(root, existing=True)
    store = _bound_store(
        root, identity, database_url=database_url, schema=schema, max_connections=1, adopt=adopt
    )
    try:
        return cut_until(
            aof_dir,
            store,
            until,
            ignore_snapshot=ignore_snapshot,
            data_dir_id=identity.id,
            max_payload=max_payload,
        )
    finally:
        store.close()


def _bound_store(
    root: Path,
    identity: DataDirIdentity,
    *,
    database_url: str | None,
    schema: str | None,
    max_connections: int,
    adopt: bool,
) -> Store:
    """The data directory's database, migrated and claimed for it
    (:class:`IdentityMismatchError` before anything is written)."""
    store = open_store(
        database_url,
        sqlite_path=str(root / SQLITE_FILENAME),
        max_connections=max_connections,
        schema=schema,
    )
    try:
        store.migrate()
        _claim(store, identity, root / AOF_DIRNAME, embedded=database_url is None, adopt=adopt)
    except BaseException:
        store.close()
        raise
    return store


def _claim(
    store: Store, identity: DataDirIdentity, aof_dir: Path, *, embedded: bool, adopt: bool
) -> None:
    """Binds ``store`` to the data directory, or raises
    :class:`IdentityMismatchError` before anything is written.

    A database of no data directory that holds a snapshot is taken only
    when ``adopt`` is asked for, or on upgrade: the data directory was made
    by a version before identities (its identity was made for an existing
    one) and the database is its embedded SQLite file, or the snapshot's
    position lies within its AOF (the AOF continues the snapshot)."""
    upgrading = False
    if not adopt and identity.created_for == "existing" and store.identity() is None:
        if embedded:
            upgrading = True
        else:
            segments = _core.list_segments(aof_dir)
            start = segments[0][0] if segments else 0
            end = segments[-1][0] + segments[-1][2] if segments else 0
            checkpoint = store.checkpoint()
            image = store.load_image()
            positions = [x.position for x in (checkpoint, image) if x is not None]
            upgrading = bool(positions) and all(start <= p <= end for p in positions)
    how = store.claim(
        identity.id,
        str(identity.path),
        adopt=adopt or upgrading,
        claimed_as="adopted" if adopt else "upgraded",
    )
    if how in ("adopted", "upgraded"):
        log.warning(
            "data directory %s (id %s) %s a database with a snapshot and no identity",
            identity.path,
            identity.id,
            "adopted" if how == "adopted" else "took over its pre-identity",
        )
