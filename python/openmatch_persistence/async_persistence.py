"""The asyncio face of the facade (docs/asyncio.md).

    async with await AsyncPersistence.open("data") as p:   # recovers, in a thread
        position = await p.append(op)        # durable per the fsync policy
        p.state.order(order_id)              # never blocks the loop on I/O

The logic is :class:`~openmatch_persistence.persistence.PersistenceBase`'s,
the same as the synchronous :class:`Persistence`; this face only decides
where it runs: everything that blocks (opening and recovery, the flusher's
cycle, snapshots, compaction, closing) in worker threads, and the appends
of all the loop's tasks through one :class:`_GroupCommit`, which merges
what they queued into one journal batch at a time and wakes the loop once
per completed batch, not once per operation.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Literal, TypeVar

from openmatch_persistence import _core
from openmatch_persistence.compaction import CompactionPolicy, CompactionReport
from openmatch_persistence.flusher import AsyncFlusher
from openmatch_persistence.persistence import (
    DEFAULT_MAX_FLUSH_LAG,
    PersistenceBase,
    _open_data_dir,
    _Opened,
)
from openmatch_persistence.store.base import WriteResult

_T = TypeVar("_T")


class _GroupCommit:
    """Group commit across the tasks of one event loop: the loop's side of
    ``_core.GroupCommit`` (rust/openmatch-persistence-py/src/group_commit.rs).

    ``core.submit`` (from ``AsyncPersistence.append``) takes the operations
    out of their Python objects and queues them (no I/O, no thread hand-off
    to wait for); a Rust thread commits
    whatever is queued as ONE journal batch (judged, applied, written and
    fsynced together) while the tasks of the previous batch run, and
    signals the loop once per completed batch through a socket the loop
    watches; ``_drained`` then resolves every future of the batch in one
    callback. The thread never takes the GIL, so its fsync overlaps with
    the loop's work instead of waiting for the loop to go idle.

    The journal keeps its judgement per call: an operation it refuses fails
    only the call that submitted it, with the error (``OperationRefusedError``,
    ``InvalidValueError``; ``index`` counted in that call's operations) its
    own batch would have had; the rest of the batch is committed. The log's
    order is the order of ``submit`` calls: each task's operations land in
    the order it submitted them.
    """

    def __init__(
        self,
        journal: _core.Journal,
        loop: asyncio.AbstractEventLoop,
        committed: Callable[[int], None],
        acknowledged: _core.State,
    ) -> None:
        self._loop = loop
        self._committed = committed
        self._acknowledged = acknowledged
        self._core = _core.GroupCommit(journal)
        self._fd = self._core.fileno()
        loop.add_reader(self._fd, self._drained)
        self._closed = False

    @property
    def core(self) -> _core.GroupCommit:
        """``core.submit(ops, future)`` queues ``ops`` as one contiguous,
        all-or-nothing run; ``future`` (of this loop) resolves to the
        position after its last operation, or fails with the error that
        refused it."""
        return self._core

    def _drained(self) -> None:
        # The committed operations reach the readers' copy of the state
        # before any future is resolved (both in this one callback).
        last = self._core.drain(self._acknowledged)
        if last is not None:
            self._committed(last)

    async def close(self, reason: str) -> None:
        """Refuses new submissions (``WriterClosedError`` naming
        ``reason``), waits until every queued one is committed or refused,
        and resolves them all."""
        if self._closed:
            return
        self._closed = True
        self._core.close(reason)
        try:
            await asyncio.to_thread(self._core.join)
        finally:
            self._loop.remove_reader(self._fd)
            self._drained()


class AsyncPersistence(PersistenceBase):
    """Durable state in ``data_dir``, for asyncio programs. Use
    ``await AsyncPersistence.open(...)``; one instance belongs to the
    event loop it was opened on. See docs/asyncio.md."""

    def __init__(
        self,
        opened: _Opened,
        acknowledged: _core.State,
        *,
        flush_interval: float,
        compaction: CompactionPolicy | None,
        max_flush_lag: float | None = None,
    ) -> None:
        """Made by :meth:`open`, on the loop it binds to."""
        super().__init__(
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
        self._loop = asyncio.get_running_loop()
        # The state as of the last completed group commit. The journal's
        # own view waits for the fsync in flight whenever a batch is being
        # committed (it shows only acknowledged operations), which would
        # block the loop; this copy is brought forward on the loop as each
        # completed batch is resolved, so reading it never waits.
        self._acknowledged = acknowledged
        self._state_view = AcknowledgedState(acknowledged)
        self._commits = _GroupCommit(opened.journal, self._loop, self._after_commit, acknowledged)
        self._group = self._commits.core
        self._runner = AsyncFlusher.around(self._flusher)
        self._closing: asyncio.Future[None] | None = None

    def _after_commit(self, position: int) -> None:
        self._maybe_compact(position)

    # --- opening --------------------------------------------------------------

    @classmethod
    async def open(
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
    ) -> AsyncPersistence:
        """As :meth:`Persistence.open`, in a worker thread. Cancelled while
        the thread recovers, the open completes there and is closed again
        (the directory's lock is released): nothing is left open."""
        opened = await _owned_in_thread(
            functools.partial(
                _open_data_dir,
                data_dir,
                database_url=database_url,
                fsync=fsync,
                ignore_snapshot=ignore_snapshot,
                max_connections=max_connections,
                adopt=adopt,
                create=create,
                schema=schema,
                max_payload=max_payload,
            ),
            _Opened.discard,
        )
        try:
            # The copy of the state that reads use (see __init__), from the
            # recovered state's image: one encode and decode, in the thread.
            acknowledged = await asyncio.to_thread(_acknowledged_copy, opened.journal)
            self = cls(
                opened,
                acknowledged,
                flush_interval=flush_interval,
                compaction=compaction,
                max_flush_lag=max_flush_lag,
            )
            await self._runner.start()
        except BaseException:
            await asyncio.to_thread(opened.discard)
            raise
        return self

    # --- reading ----------------------------------------------------------------

    @property
    def state(self) -> AcknowledgedState:  # type: ignore[override]
        """The in-memory state, read-only, as of the last completed group
        commit: every acknowledged operation, nothing else. Reading it never
        blocks the loop (no lock shared with the commit in flight, no wait
        for an fsync)."""
        return self._state_view

    @property
    def position(self) -> int:
        """The position after the last acknowledged operation."""
        return self._acknowledged.position

    def digest(self) -> str:
        return self._acknowledged.digest()

    # --- appending --------------------------------------------------------------

    async def _hold_back(self) -> None:
        """Waits, off the loop, for a flusher that is behind
        (``max_flush_lag``); at once when it is not."""
        if self._flusher_behind():
            await asyncio.to_thread(self._wait_for_flusher)

    async def append(self, op: _core.Operation) -> int:
        """Appends one operation; returns its position once it is durable
        (as the fsync policy promises) and applied. Appends of all the
        loop's tasks share fsyncs. ``OperationRefusedError`` or
        ``InvalidValueError``: this operation was refused and nothing of it
        written (the others of its group commit are not affected).

        The operation is submitted when this coroutine starts (at once,
        under ``await p.append(op)``); from then on, cancelling the
        awaiting task does not withdraw it (docs/asyncio.md)."""
        # Inlined (no helper call): this is the path of every operation.
        # A task of another loop gets asyncio's own error for awaiting a
        # future of this one.
        future: asyncio.Future[int] = self._loop.create_future()
        self._group.submit((op,), future)
        position = await future
        await self._hold_back()
        return position

    async def append_many(self, ops: Iterable[_core.Operation]) -> int:
        """Appends operations as one contiguous run of the AOF, all or
        nothing; returns the position after the last (after the log's end
        before it, for none)."""
        future: asyncio.Future[int] = self._loop.create_future()
        self._group.submit(ops, future)
        position = await future
        await self._hold_back()
        return position

    # --- flushing, snapshots, compaction ----------------------------------------

    async def flush(self) -> WriteResult | None:
        """Writes every change applied so far to the database now (in a
        worker thread)."""
        return await self._runner.flush()

    async def snapshot(self) -> int:
        """As :meth:`Persistence.snapshot`, in a worker thread."""
        return await asyncio.to_thread(self._snapshot_now)

    async def compact(self) -> CompactionReport:
        """As :meth:`Persistence.compact`, in a worker thread."""
        return await asyncio.to_thread(self._compact_now)

    async def wait_compaction(self, timeout: float | None = None) -> bool:
        """Waits for a background compaction that has started; True once
        none runs."""
        return await asyncio.to_thread(self._wait_compaction, timeout)

    # --- closing ----------------------------------------------------------------

    async def close(self) -> None:
        """Refuses new appends (``WriterClosedError``), lets every pending
        one complete (each gets its position or its own error), then, in a
        worker thread, as :meth:`Persistence.close`: a started compaction
        finishes, a final flush, the state's image, the AOF (fsync) and the
        store. Safe to call twice, and from several tasks (all wait for the
        same close). Cancelling a task in close() does not stop the close."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True  # and no compaction starts from now on
        try:
            await self._commits.close(
                f"AsyncPersistence({self.data_dir}) is closed: close() was called before "
                "this append; nothing of it was written"
            )
            await self._runner.stop(final_flush=False)
        finally:
            await asyncio.to_thread(self._close_now, lambda: None)

    async def __aenter__(self) -> AsyncPersistence:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _owned_in_thread(fn: Callable[[], _T], release: Callable[[_T], None]) -> _T:
    """``fn()`` in a worker thread, whose result is a resource: should the
    awaiting task be cancelled before it arrives, ``release`` runs on it in
    that thread once it does, instead of leaking it."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    future = loop.run_in_executor(None, ctx.run, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:

        def later(done: asyncio.Future[_T]) -> None:
            if not done.cancelled() and done.exception() is None:
                loop.run_in_executor(None, release, done.result())

        future.add_done_callback(later)
        raise


def _acknowledged_copy(journal: _core.Journal) -> _core.State:
    """A state of its own equal to the journal's, which has no operation in
    flight yet (nothing was appended since the open). Nobody takes its
    changes (the journal's go to the flusher), so it keeps none: its memory
    stays the hot state's."""
    _, image = journal.image()
    return _core.State.from_image(image, track_changes=False)


class AcknowledgedState:
    """A read-only view of :attr:`AsyncPersistence.state`: the reads of
    :class:`~openmatch_persistence.State`, none of its mutations (the
    journal alone applies operations)."""

    __slots__ = ("_state",)

    def __init__(self, state: _core.State) -> None:
        self._state = state

    @property
    def position(self) -> int:
        return self._state.position

    @property
    def order_count(self) -> int:
        return self._state.order_count

    @property
    def retired_id_count(self) -> int:
        return self._state.retired_id_count

    @property
    def closed_epochs_through(self) -> int | None:
        return self._state.closed_epochs_through

    @property
    def clock_ns(self) -> int:
        return self._state.clock_ns

    def retired(self, id: uuid.UUID) -> Literal["order", "trade"] | None:
        return self._state.retired(id)

    @property
    def balance_count(self) -> int:
        return self._state.balance_count

    @property
    def epoch_count(self) -> int:
        return self._state.epoch_count

    def order(self, order_id: uuid.UUID) -> _core.Order | None:
        return self._state.order(order_id)

    def balance(self, user_id: uuid.UUID, asset: str) -> _core.Balance | None:
        return self._state.balance(user_id, asset)

    def epoch(self, epoch_id: int) -> _core.Epoch | None:
        return self._state.epoch(epoch_id)

    def orders(self) -> list[_core.Order]:
        return self._state.orders()

    def balances(self) -> list[_core.Balance]:
        return self._state.balances()

    def epochs(self) -> list[_core.Epoch]:
        return self._state.epochs()

    def digest(self) -> str:
        return self._state.digest()

    def check(self) -> None:
        self._state.check()

    def violations(self) -> list[_core.Violation]:
        return self._state.violations()

    def to_image(self) -> bytes:
        return self._state.to_image()
