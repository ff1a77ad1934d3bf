"""Writes the engine's state changes to the database in the background.

Every ``interval`` (100 ms) the flusher drains its source into its pending
set and writes that set in ONE transaction that also records the AOF
position it covers, so the database always holds the consistent state of a
known position. The source is a
:class:`~openmatch_persistence.store.base.ChangeSource` (the engine's
``State`` or ``Journal``, a follower): ``take_changes_into(target)`` folds
its changes since the previous take into the flusher's set. The pending set
keeps only the latest row per key (an order id, a trade id, a (user,
asset), an epoch id): during an outage it grows with the number of distinct
rows changed, never with the number of operations, so its memory is
bounded by the size of the state.

No exception loses a take either, not even one a signal handler raises in
the thread that collects (the follower's, a ``flush()`` interrupted by
Ctrl-C): the source moves its changes into the flusher's set itself (the
engine's sources in one native call), and every later move of them (into
the pending set, back from a failed batch) is one native call too, so the
rows are always in one place or the other. A take lost on the way would let
a later flush record a checkpoint past changes the database never got.

A failed transaction loses nothing: the batch goes back into the pending set
(where newer rows of the same keys win) and is retried with exponential
backoff, while the AOF appends go on. The lag is in :meth:`Flusher.stats`
and in the log. Writing the same rows again changes nothing (the stores'
upserts skip equal rows), and a batch older than the database's checkpoint
is dropped, so a retry after an ambiguous commit is harmless.

:class:`Flusher` runs in a thread of a synchronous program;
:class:`AsyncFlusher` is an asyncio task that runs the same cycle
(:meth:`Flusher.cycle`) in a worker thread, so that neither the wait for
the AOF to be durable nor the transaction ever blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openmatch_persistence import _core
from openmatch_persistence.errors import StoreError, WriterFailedError
from openmatch_persistence.store.base import (
    ChangeBatch,
    ChangeSource,
    Store,
    WriteResult,
)

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.1
DEFAULT_BACKOFF_MIN = 0.1
DEFAULT_BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class FlusherStats:
    """How far the database is behind the engine."""

    #: The AOF position the database holds (None before the first flush).
    flushed_position: int | None
    #: The AOF position of the newest changes taken from the source.
    taken_position: int | None
    #: Rows waiting to be written (latest per key: at most the state's size).
    pending_rows: int
    #: ``taken_position - flushed_position``: AOF bytes not yet in the database.
    aof_bytes_behind: int
    #: Age of the oldest change not yet in the database (0.0 when caught up).
    seconds_behind: float
    flushes: int
    rows_written: int
    failures: int
    consecutive_failures: int
    last_error: str | None
    #: Trades stored in ``orphan_trades`` because an order they name is unknown.
    orphan_trades: int


class _Pending:
    """The latest row per key of everything taken and not yet written. The
    rows stay in Rust (``StateChanges.absorb`` merges them), so a take costs
    no Python object per row; they become rows for the store once, when
    the batch is written."""

    def __init__(self) -> None:
        self.rows = _core.StateChanges()
        #: Whether anything was taken (a position to write, even with no rows).
        self.taken = False
        self.position = 0
        #: The state's clock and highest closed epoch at ``position``.
        self.clock_ns: int | None = None
        self.closed_epochs_through: int | None = None
        self.since: float | None = None  # monotonic time of the oldest change

    def __len__(self) -> int:
        return len(self.rows)

    def take_from(self, incoming: _core.StateChanges, now: float) -> None:
        """Moves ``incoming`` (a source's takes) in: its rows first, in one
        native call, then its position. An exception between the two leaves
        rows ahead of the position noted, until the next take notes it
        (a stop's final flush takes again): never a position ahead of rows
        the database does not get."""
        position = incoming.position
        clock_ns = incoming.clock_ns
        closed = incoming.closed_epochs_through
        if len(incoming) and self.since is None:
            self.since = now
        incoming.drain_into(self.rows)
        self._note(position, clock_ns, closed)

    def _note(self, position: int, clock_ns: int | None, closed: int | None) -> None:
        """Something was taken at ``position``: the batch's position (with
        the state's clock and closed epochs there) moves to it, never back."""
        if not self.taken or position > self.position:
            self.taken = True
            self.position = position
            self.clock_ns = clock_ns
            self.closed_epochs_through = closed

    def restore(self, older: _Pending) -> None:
        """Puts a failed batch back under the rows taken since (which win),
        in one native call (``absorb_older``)."""
        self.rows.absorb_older(older.rows)
        if older.taken:
            self._note(older.position, older.clock_ns, older.closed_epochs_through)
        if older.since is not None and (self.since is None or older.since < self.since):
            self.since = older.since

    def batch(self) -> ChangeBatch:
        return ChangeBatch(
            rows=self.rows,
            position=self.position,
            clock_ns=self.clock_ns,
            closed_epochs_through=self.closed_epochs_through,
        )


class Flusher:
    """Drains ``source`` into ``store``. Use :meth:`start`/:meth:`stop` (or
    ``with``) for the background thread, or call :meth:`flush` yourself."""

    def __init__(
        self,
        store: Store,
        source: ChangeSource,
        *,
        interval: float = DEFAULT_INTERVAL,
        backoff_min: float = DEFAULT_BACKOFF_MIN,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._store = store
        self._source = source
        self.interval = interval
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._clock = clock
        self._lock = threading.Lock()  # guards _pending and the counters
        self._write_lock = threading.Lock()  # one transaction at a time
        # One collect at a time: the rows of two takes must enter the
        # pending set in the order they were taken (newer rows win), also
        # when flush() runs beside the background cycle.
        self._collect_lock = threading.Lock()
        self._pending = _Pending()
        # What the source hands over, until it is moved into _pending.
        self._incoming = _core.StateChanges()
        self._inflight: _Pending | None = None  # the batch being written
        self._flushed_position: int | None = None
        self._flushes = 0
        self._rows_written = 0
        self._failures = 0
        self._consecutive = 0
        self._last_error: str | None = None
        self._orphans = 0
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the two halves of a flush ------------------------------------------

    def collect(self) -> int:
        """Takes the source's changes into the pending set; returns the number
        of rows taken. Call it where touching the source is allowed."""
        with self._collect_lock:
            # Outside the lock (the journal's take waits for the AOF to be
            # durable), into a set only collect touches; then moved.
            taken = self._source.take_changes_into(self._incoming)
            with self._lock:
                self._pending.take_from(self._incoming, self._clock())
            return taken

    def write_pending(self) -> WriteResult | None:
        """Writes the pending set in one transaction. On failure the rows go
        back to the pending set and :class:`StoreError` is raised. Returns
        None when there was nothing to write."""
        with self._write_lock:
            taken = self._pending
            batch: ChangeBatch | None = None
            try:
                with self._lock:
                    if not taken.taken or (
                        not len(taken) and taken.position == self._flushed_position
                    ):
                        return None
                    self._pending = _Pending()
                    self._inflight = taken
                batch = taken.batch()
                result = self._store.write_changes(batch)
            except BaseException as e:
                with self._lock:
                    # Also for an exception (a signal's) before the batch
                    # left: put back whatever was taken out.
                    if self._pending is not taken:
                        self._pending.restore(taken)
                    self._inflight = None
                    if batch is None:
                        raise
                    self._failures += 1
                    self._consecutive += 1
                    self._last_error = str(e)
                    delay = min(self._backoff_max, self._backoff_min * 2 ** (self._consecutive - 1))
                    self._retry_at = self._clock() + delay
                stats = self.stats()
                log.warning(
                    "flush to AOF position %s failed (attempt %d, next in %.1f s): %s; "
                    "the database is %d rows / %d AOF bytes / %.1f s behind",
                    batch.position,
                    stats.consecutive_failures,
                    delay,
                    e,
                    stats.pending_rows,
                    stats.aof_bytes_behind,
                    stats.seconds_behind,
                )
                if isinstance(e, StoreError):
                    raise
                if isinstance(e, Exception):
                    raise StoreError(f"flush to AOF position {batch.position} failed: {e}") from e
                raise
            with self._lock:
                self._inflight = None
                recovered = self._consecutive
                self._consecutive = 0
                self._retry_at = 0.0
                self._flushes += 1
                self._rows_written += batch.row_count
                self._orphans += len(result.orphan_trade_ids)
                if not result.stale:
                    self._flushed_position = batch.position
            if recovered:
                log.info(
                    "flush recovered after %d failed attempts: the database is at AOF position %d",
                    recovered,
                    batch.position,
                )
            if result.stale:
                log.warning(
                    "dropped changes at AOF position %d: the database's checkpoint is newer",
                    batch.position,
                )
            if result.orphan_trade_ids:
                log.error(
                    "consistency: %d trades at AOF position %d name orders the database does "
                    "not have; kept in orphan_trades: %s",
                    len(result.orphan_trade_ids),
                    batch.position,
                    ", ".join(str(i) for i in result.orphan_trade_ids[:10]),
                )
            return result

    def flush(self) -> WriteResult | None:
        """Collects and writes now, in the calling thread."""
        self.collect()
        return self.write_pending()

    def due(self) -> bool:
        """False while backing off after a failure."""
        return self._clock() >= self._retry_at

    def cycle(self) -> float | None:
        """One turn of the background loop, for both faces (the thread and
        :class:`AsyncFlusher`): collects, writes when not backing off.
        Returns how long to wait before the next turn, or None when the
        flusher must stop for good. Blocks (on the AOF's durability and on
        the database): an event loop runs it in a worker thread."""
        started = time.monotonic()
        try:
            self.collect()
            if self.due():
                self.write_pending()
        except StoreError:
            pass  # logged by write_pending; retried after the backoff
        except WriterFailedError as e:
            # The AOF cannot be made durable any more, so no change may go
            # to the database (write-ahead) until the data directory is
            # reopened; close() says so again.
            log.error("flusher stopped: %s", e)
            return None
        except Exception:
            log.exception("flusher cycle failed; retrying")
        # A fixed cadence: a slow flush is not followed by a full interval
        # of waiting, so the lag stays near interval + flush time.
        return max(0.0, self.interval - (time.monotonic() - started))

    # --- the background thread -------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the flusher is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="openmatch-flusher", daemon=True)
        self._thread.start()

    def stop(self, *, final_flush: bool = True, timeout: float | None = None) -> None:
        """Stops the thread; then flushes what is left (raising
        :class:`StoreError` if the database cannot take it: the AOF still
        holds those operations, and the checkpoint says where they begin)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if final_flush:
            self.flush()

    def __enter__(self) -> Flusher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.cycle()
            if wait is None:
                return
            self._stop.wait(wait)

    # --- statistics -----------------------------------------------------------

    def lag_over(self, limit: float) -> bool:
        """Whether the oldest change taken and not yet written is older
        than ``limit`` seconds, while the database takes writes (a failing
        flusher is not "behind": the AOF keeps everything until it is back).

        Called after every append, so it takes no lock: it reads two
        references and two floats, each read whole under the GIL, and a
        read that races a flush is at most one append late or early in
        holding appends back."""
        return not self._consecutive and self._seconds_behind() > limit

    def _seconds_behind(self) -> float:
        """The age of the oldest change taken and not yet written."""
        parts = (self._pending, self._inflight)
        since = [t for t in (p.since for p in parts if p is not None) if t is not None]
        return self._clock() - min(since) if since else 0.0

    def stats(self) -> FlusherStats:
        with self._lock:
            parts = [p for p in (self._pending, self._inflight) if p is not None]
            positions = [p.position for p in parts if p.taken]
            taken = max(positions) if positions else self._flushed_position
            behind = 0 if taken is None else taken - (self._flushed_position or 0)
            return FlusherStats(
                flushed_position=self._flushed_position,
                taken_position=taken,
                # A key both in flight and pending counts twice: an upper bound.
                pending_rows=sum(len(p) for p in parts),
                aof_bytes_behind=max(0, behind),
                seconds_behind=self._seconds_behind(),
                flushes=self._flushes,
                rows_written=self._rows_written,
                failures=self._failures,
                consecutive_failures=self._consecutive,
                last_error=self._last_error,
                orphan_trades=self._orphans,
            )


class AsyncFlusher:
    """The flusher as an asyncio task: :meth:`Flusher.cycle` (taking the
    changes, which waits for the AOF to be durable, and the transaction)
    runs in a worker thread, so the loop never blocks on the disk or the
    database. ``source`` must be safe to call from that thread (the
    journal is)."""

    def __init__(self, store: Store, source: ChangeSource, **options: Any) -> None:
        self._flusher = Flusher(store, source, **options)
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    @classmethod
    def around(cls, flusher: Flusher) -> AsyncFlusher:
        """The task face of an existing :class:`Flusher` (whose thread is
        not started): ``AsyncPersistence`` shares its flusher's code and
        statistics with the synchronous facade this way."""
        self = cls.__new__(cls)
        self._flusher = flusher
        self._task = None
        self._stopping = None
        return self

    @property
    def flusher(self) -> Flusher:
        return self._flusher

    def stats(self) -> FlusherStats:
        return self._flusher.stats()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the flusher is already running")
        # Made here, on the running loop (an Event of Python 3.9 binds the
        # loop current when it is made).
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="openmatch-flusher")

    async def flush(self) -> WriteResult | None:
        return await asyncio.to_thread(self._flusher.flush)

    async def stop(self, *, final_flush: bool = True) -> None:
        """Stops the task after the cycle in progress (not cancelled: its
        thread could not be stopped anyway, and a flush after it must not
        race it), then flushes what is left (raising :class:`StoreError`
        if the database cannot take it)."""
        if self._task is not None:
            assert self._stopping is not None
            self._stopping.set()
            await self._task
            self._task = None
        if final_flush:
            await self.flush()

    async def __aenter__(self) -> AsyncFlusher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            wait = await asyncio.to_thread(self._flusher.cycle)
            if wait is None:
                return
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
            except asyncio.TimeoutError:
                pass
