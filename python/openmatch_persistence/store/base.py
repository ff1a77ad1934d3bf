"""The store interface and the shapes of what it reads and writes.

The flusher and the stores see the engine's rows through small protocols
(attribute names only), so the Rust ``State``'s change objects, the
``Order``/``Trade`` pyclasses and test stand-ins all fit.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from openmatch_persistence import _core
from openmatch_persistence.errors import IdentityMismatchError, InvalidValueError, StoreError

#: The default PostgreSQL schema (and the only name SQLite takes).
DEFAULT_SCHEMA = "public"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_schema(schema: str | None) -> str | None:
    """``schema`` as PostgreSQL names it, or None for none given: a plain
    SQL identifier (letters, digits, ``_``; at most 63), folded to lower
    case as PostgreSQL folds an unquoted name. Anything else is refused
    with :class:`InvalidValueError`: the name goes into SQL and into the
    connection's options, so it is never taken unchecked."""
    if schema is None:
        return None
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidValueError(
            f"schema {schema!r} is not a plain SQL identifier "
            "(a letter or _, then letters, digits or _; at most 63 characters)"
        )
    return schema.lower()


def schema_label(database: str, schema: str | None) -> str:
    """How a database is named in messages: the (masked) URL, and the
    schema unless it is the default."""
    if schema is None or schema == DEFAULT_SCHEMA:
        return database
    return f"{database} (schema {schema})"


class StateChangesLike(Protocol):
    """What ``State.take_changes()`` returns: the latest row of every key
    changed since the previous call, and the AOF position they cover."""

    @property
    def orders(self) -> Sequence[_core.Order]: ...
    @property
    def trades(self) -> Sequence[_core.Trade]: ...
    @property
    def balances(self) -> Sequence[_core.Balance]: ...
    @property
    def epochs(self) -> Sequence[_core.Epoch]: ...
    @property
    def position(self) -> int: ...


@runtime_checkable
class ChangeSource(Protocol):
    """What the flusher drains: the engine's ``State``, its ``Journal``
    (which waits for the AOF behind the changes to be durable), a
    ``Follower``.

    ``take_changes_into(target)`` takes the changes since the previous take
    and folds them into ``target`` as newer changes (as
    ``StateChanges.absorb`` does: their rows win, their position, clock and
    closed epochs become ``target``'s), and returns how many rows it took.
    The engine's sources do both in one native call, so no exception a
    Python signal handler raises can fall between the take and the fold and
    lose the take. A source written in Python (a test's, a benchmark's)
    makes a ``StateChanges`` of its rows and folds it in with
    ``target.absorb``."""

    def take_changes_into(self, target: _core.StateChanges) -> int: ...


class ChangeBatch:
    """One flush: the latest row per key, and the AOF position they cover.

    The rows are a ``_core.StateChanges`` (``rows``): the flusher hands over
    the one it merged its takes into, and the stores build their database
    rows from it in Rust, with no Python object per row in between. Lists
    of ``Order``/``Trade``/``Balance``/``Epoch`` (a test's, a benchmark's)
    are made into one."""

    def __init__(
        self,
        orders: Sequence[Any] = (),
        trades: Sequence[Any] = (),
        balances: Sequence[Any] = (),
        epochs: Sequence[Any] = (),
        position: int = 0,
        clock_ns: int | None = None,
        closed_epochs_through: int | None = None,
        *,
        rows: _core.StateChanges | None = None,
    ) -> None:
        if rows is None:
            rows = _core.StateChanges(
                list(orders), list(trades), list(balances), list(epochs), position
            )
        elif orders or trades or balances or epochs:
            raise ValueError("a ChangeBatch takes rows or lists, not both")
        self.rows = rows
        self.position = position
        #: The state's logical clock and highest closed epoch at ``position``
        #: (None from a source that does not give them): the checkpoint keeps
        #: them, for recovery from rows (``load_hot_state``).
        self.clock_ns = clock_ns
        self.closed_epochs_through = closed_epochs_through

    # Lists, made on each call: the stores read balances and epochs (few)
    # this way, and orders and trades only to count or to test.
    @property
    def orders(self) -> list[_core.Order]:
        return self.rows.orders

    @property
    def trades(self) -> list[_core.Trade]:
        return self.rows.trades

    @property
    def balances(self) -> list[_core.Balance]:
        return self.rows.balances

    @property
    def epochs(self) -> list[_core.Epoch]:
        return self.rows.epochs

    def counts(self) -> tuple[int, int, int, int]:
        """How many orders, trades, balances and epochs."""
        return self.rows.counts()

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        orders, trades, balances, epochs = self.counts()
        return (
            f"ChangeBatch(orders={orders}, trades={trades}, balances={balances}, "
            f"epochs={epochs}, position={self.position})"
        )


@dataclass(frozen=True)
class Checkpoint:
    """The AOF position whose state the database holds, and the newest epoch
    in it."""

    position: int
    epoch_id: int | None
    flushed_at: datetime.datetime | str
    #: The data directory it was written for (None: before identities).
    data_dir_id: uuid.UUID | None = None
    #: The state's logical clock and highest closed epoch at ``position``
    #: (None: written before they were kept).
    clock_ns: int | None = None
    closed_epochs_through: int | None = None


@dataclass(frozen=True)
class WriteResult:
    """What one ``write_changes`` transaction did."""

    position: int
    orders: int
    trades: int
    balances: int
    epochs: int
    #: Trades kept in ``orphan_trades`` because an order they name is unknown.
    orphan_trade_ids: tuple[uuid.UUID, ...] = ()
    #: True when the batch was older than the checkpoint and nothing was written.
    stale: bool = False


@dataclass(frozen=True)
class StateImage:
    """The whole state as one checksummed blob (``State.to_image``) at an AOF
    position: what recovery loads first, the rows being the fallback."""

    position: int
    epoch_id: int | None
    data: bytes
    #: The data directory it was written for (None: before identities).
    data_dir_id: uuid.UUID | None = None


#: The largest state image a store takes: below PostgreSQL's 1 GB field and
#: message limits and SQLite's default 1,000,000,000-byte blob limit, with
#: room for the row around it. The hot state (docs/state.md) is far below
#: it; an image past it is refused before anything is sent.
MAX_IMAGE_BYTES = 900 * 1024 * 1024


def check_image_size(database: str, size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise StoreError(
            f"{database}: the state image is {size} bytes, past the {MAX_IMAGE_BYTES}-byte limit "
            "of a database field: not written (recovery replays the AOF from the last image)"
        )


@dataclass(frozen=True)
class DatabaseIdentity:
    """The data directory a database holds the state of
    (``persistence_identity``)."""

    data_dir_id: uuid.UUID
    data_dir_path: str
    #: "new", "adopted" or "upgraded" (see the migration).
    claimed_as: str


def identity_mismatch(
    database: str,
    ours: uuid.UUID | None,
    our_path: str | None,
    theirs: DatabaseIdentity | None,
    doing: str,
) -> IdentityMismatchError:
    """The error for a database that is not this data directory's."""
    if theirs is None:
        message = (
            f"{doing}: the database {database} has no data directory identity, and this store "
            f"writes for data directory {our_path} (id {ours}): refusing to write to it"
        )
    else:
        me = (
            "a store bound to no data directory"
            if ours is None
            else f"data directory {our_path} (id {ours})"
        )
        message = (
            f"{doing}: the database {database} belongs to data directory {theirs.data_dir_path} "
            f"(id {theirs.data_dir_id}), not to {me}: nothing was written; give each data "
            "directory its own database (or schema)"
        )
        if our_path == theirs.data_dir_path:
            message += (
                f" (the same path: if {our_path}/identity was deleted or replaced, restore it "
                f"with the id {theirs.data_dir_id})"
            )
    return IdentityMismatchError(
        message,
        data_dir_id=ours,
        data_dir_path=our_path,
        database_id=None if theirs is None else theirs.data_dir_id,
        database_path=None if theirs is None else theirs.data_dir_path,
    )


@dataclass
class LoadedState:
    """Every row of the store, rebuilt as the engine's values."""

    orders: list[_core.Order]
    trades: list[_core.Trade]
    balances: list[_core.Balance]
    epochs: list[_core.Epoch]
    checkpoint: Checkpoint | None
    #: Trades from ``orphan_trades`` (their orders are missing); also in ``trades``.
    orphan_trade_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass
class HotRows:
    """What recovery from rows needs (docs/state.md, "The hot state"): the
    open orders, the ids still in the id window, the balances and the held
    epochs, each read through an index; never the whole history."""

    orders: list[_core.Order]
    retired_order_ids: list[uuid.UUID]
    retired_trade_ids: list[uuid.UUID]
    balances: list[_core.Balance]
    epochs: list[_core.Epoch]
    checkpoint: Checkpoint

    def state(self) -> _core.State:
        cp = self.checkpoint
        return _core.State.from_snapshot(
            self.orders,
            [],
            self.balances,
            self.epochs,
            cp.position,
            clock_ns=cp.clock_ns,
            closed_epochs_through=cp.closed_epochs_through,
            retired_order_ids=self.retired_order_ids,
            retired_trade_ids=self.retired_trade_ids,
        )


OPEN_STATUSES = "('PENDING_ESCROW', 'ACTIVE', 'PARTIALLY_FILLED')"


def window_start_id(clock_ns: int) -> uuid.UUID:
    """The lowest UUIDv7 inside the id window when the clock is ``clock_ns``."""
    ms = max(0, clock_ns // 1_000_000 - _core.ID_WINDOW_MS)
    return uuid.UUID(int=ms << 80)


def hot_rows_sql(param: str, id_text: str) -> dict[str, str]:
    """The queries of ``load_hot_state``, for a store whose placeholder is
    ``param`` and whose id column reads as text through ``id_text`` (the
    partial indexes of the hot_state migration match these predicates)."""
    untimed = f"substr({id_text}, 15, 1) <> '7'"
    return {
        "orders": f"SELECT * FROM orders WHERE status IN {OPEN_STATUSES}",
        "retired_orders": (
            f"SELECT id FROM orders WHERE id >= {param} AND status NOT IN {OPEN_STATUSES}"
            f" UNION SELECT id FROM orders WHERE {untimed} AND status NOT IN {OPEN_STATUSES}"
        ),
        "retired_trades": (
            f"SELECT id FROM trades WHERE id >= {param}"
            f" UNION SELECT id FROM trades WHERE {untimed}"
            " UNION SELECT id FROM orphan_trades"
        ),
        "epochs": (
            "SELECT * FROM epochs WHERE phase <> 'FINALIZE' UNION ALL SELECT * FROM"
            " (SELECT * FROM epochs WHERE phase = 'FINALIZE' ORDER BY epoch_id DESC"
            f" LIMIT {_core.FINALIZED_EPOCHS_KEPT}) AS kept"
        ),
    }


_Closing = TypeVar("_Closing", bound="ClosesOnExit")


class ClosesOnExit:
    """``with store: ...`` closes the store at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Closing) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(Protocol):
    """A database that holds the engine's state at a known AOF position.
    ``with store: ...`` closes it at the end of the block."""

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...

    def migrate(self) -> list[int]:
        """Applies the pending migrations; returns the versions applied."""
        ...

    def write_changes(self, batch: ChangeBatch) -> WriteResult:
        """Upserts the batch's rows and records ``batch.position`` as the
        checkpoint, all in one transaction. Idempotent; a batch older than
        the checkpoint writes nothing."""
        ...

    def checkpoint(self) -> Checkpoint | None: ...

    def load_state(self) -> LoadedState: ...

    def load_hot_state(self) -> HotRows | None:
        """The hot part of the rows at the checkpoint, in one read
        transaction; None when there is no checkpoint or it predates the
        clock column (``load_state`` then gives the history)."""
        ...

    def write_image(self, position: int, epoch_id: int | None, data: bytes) -> None:
        """Replaces the stored state image, in one transaction, unless the
        stored one is at a later position."""
        ...

    def load_image(self) -> StateImage | None: ...

    def identity(self) -> DatabaseIdentity | None:
        """The data directory the database belongs to, or None (none yet,
        or a schema from before identities)."""
        ...

    def claim(
        self, data_dir_id: uuid.UUID, data_dir_path: str, *, adopt: bool, claimed_as: str
    ) -> str:
        """Binds the store to a data directory, in one transaction: a
        database of that data directory is kept ("owned"); one of no data
        directory is claimed when it holds no snapshot ("new") or when
        ``adopt`` is true (``claimed_as``; its checkpoint and image are
        stamped with the id); one of another data directory is refused
        (:class:`IdentityMismatchError`). Every later ``write_changes`` and
        ``write_image`` checks the binding in its own transaction."""
        ...

    def close(self) -> None: ...


#: Whether a database holds a snapshot (in either dialect).
HOLDS_SNAPSHOT_SQL = (
    "SELECT EXISTS (SELECT 1 FROM persistence_checkpoint)"
    " OR EXISTS (SELECT 1 FROM persistence_state_image)"
)
#: The tables whose rows a claim stamps with the data directory's id.
STAMPED_TABLES = ("persistence_checkpoint", "persistence_state_image")

# The statements both stores run as they are (either dialect).
#: The checkpoint's row, in :class:`Checkpoint`'s order.
SELECT_CHECKPOINT = (
    "SELECT aof_position, epoch_id, flushed_at, data_dir_id, clock_ns, closed_epochs_through"
    " FROM persistence_checkpoint"
)
#: The identity row, in :class:`DatabaseIdentity`'s order.
SELECT_IDENTITY = "SELECT data_dir_id, data_dir_path, claimed_as FROM persistence_identity"
#: The state image's row, in :class:`StateImage`'s order.
SELECT_IMAGE = "SELECT aof_position, epoch_id, data, data_dir_id FROM persistence_state_image"
#: ``load_state``'s reads of the whole history (in one read transaction).
SELECT_ORDERS = "SELECT * FROM orders ORDER BY created_at_ns, id"
SELECT_TRADES = "SELECT * FROM trades"
SELECT_ORPHAN_TRADES = "SELECT * FROM orphan_trades"
SELECT_BALANCES = "SELECT * FROM balances ORDER BY user_id, asset"
SELECT_EPOCHS = "SELECT * FROM epochs ORDER BY epoch_id"
#: ``load_hot_state``'s balances: every one, in no order.
SELECT_ALL_BALANCES = "SELECT * FROM balances"


@dataclass(frozen=True)
class Claim:
    """What a store does to bind a database to a data directory."""

    #: "owned", "new", or the caller's ``claimed_as`` (adopted/upgraded).
    how: str
    #: Insert the identity row and stamp the unstamped snapshot rows.
    insert: bool
    #: Owned, but the data directory moved: update the stored path.
    move: bool


def decide_claim(
    database: str,
    theirs: DatabaseIdentity | None,
    holds_snapshot: Callable[[], bool],
    data_dir_id: uuid.UUID,
    data_dir_path: str,
    *,
    adopt: bool,
    claimed_as: str,
) -> Claim:
    """The claim rule of :meth:`Store.claim`, for both stores (they only
    run its SQL): raises :class:`IdentityMismatchError` for a database of
    another data directory, or of none that holds a snapshot unless
    ``adopt``."""
    if theirs is not None:
        if theirs.data_dir_id != data_dir_id:
            raise identity_mismatch(database, data_dir_id, data_dir_path, theirs, "opening")
        return Claim("owned", insert=False, move=theirs.data_dir_path != data_dir_path)
    held = holds_snapshot()
    if held and not adopt:
        raise unclaimed_snapshot(database, data_dir_id, data_dir_path)
    return Claim(claimed_as if held else "new", insert=True, move=False)


def check_owner(
    database: str,
    ours: uuid.UUID | None,
    our_path: str | None,
    theirs: DatabaseIdentity | None,
    doing: str,
) -> None:
    """Inside a write transaction, first: the database must be this store's
    data directory's (or, for a store bound to none, of none)."""
    if (None if theirs is None else theirs.data_dir_id) != ours:
        raise identity_mismatch(database, ours, our_path, theirs, doing)


def unclaimed_snapshot(database: str, ours: uuid.UUID, our_path: str) -> IdentityMismatchError:
    """The error for a database of no data directory that holds a snapshot."""
    return IdentityMismatchError(
        f"the database {database} holds a snapshot but no data directory identity: it may be "
        f"another data directory's, so data directory {our_path} (id {ours}) does not take it "
        "silently. If it is this data directory's state, adopt it (--adopt, or "
        "Persistence.open(..., adopt=True)); otherwise use an empty database",
        data_dir_id=ours,
        data_dir_path=our_path,
    )
