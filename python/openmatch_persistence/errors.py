"""The package's exception hierarchy.

Every error the package raises on purpose derives from
:class:`OpenMatchPersistenceError`. The Rust core raises these same classes
(it imports them from here), so a caller never sees a bare ``Exception`` or a
Rust panic. Where a standard base fits, it is a second base: a bad value is
also a ``ValueError``, a wrong type also a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openmatch_persistence._core import Violation


class OpenMatchPersistenceError(Exception):
    """The root of every error raised by openmatch_persistence."""


# --- values and types given by the caller --------------------------------


class InvalidValueError(OpenMatchPersistenceError, ValueError):
    """A value that the engine's types cannot hold exactly (a Decimal past
    rust_decimal's range, a naive datetime, a node id that is not 32 bytes).
    Raised by an append, ``index`` is the operation's place in the batch
    (None where there is no batch)."""

    index: int | None = None


class InvalidTypeError(OpenMatchPersistenceError, TypeError):
    """An argument of the wrong type."""


class JsonFormatError(InvalidValueError):
    """Text that is not the JSON form of an operation (aof-format.md §4)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


# --- frames ---------------------------------------------------------------


class FrameError(OpenMatchPersistenceError, ValueError):
    """A frame that cannot be read. ``offset`` is the byte where the frame
    starts in the input; ``cause`` names the kind of damage."""

    cause: str = "frame"

    def __init__(self, message: str, offset: int, path: str | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.path = path


class TornFrameError(FrameError):
    """The frame runs past the end of the input: an interrupted append."""

    cause = "torn"


class CorruptFrameError(FrameError):
    """A complete frame that is damaged: never the result of a clean crash."""

    cause = "corrupt"


class ChecksumMismatchError(CorruptFrameError):
    cause = "checksum_mismatch"


class OversizedFrameError(FrameError):
    """The length field is above the reader's limit (``max_payload``): a
    frame longer than this reader accepts, or a damaged length, which its
    size cannot tell apart. Not a :class:`CorruptFrameError`: nothing is cut
    for it, and a reader with a higher limit (``max_payload=``,
    ``--max-payload``) reads on. ``length`` is the length field, ``limit``
    the limit it is over (``None`` when not known)."""

    cause = "oversized_length"
    length: int | None = None
    limit: int | None = None


class UndecodablePayloadError(CorruptFrameError):
    """The checksum matched but the payload is not an operation."""

    cause = "undecodable_payload"


class TrailingBytesError(CorruptFrameError):
    """Bytes left over after an operation, inside a payload or after a frame."""

    cause = "trailing_bytes"


# --- the durable writer and the directory ----------------------------------


class AofError(OpenMatchPersistenceError, OSError):
    """An I/O failure of the AOF (open, write, fsync, rotate)."""


class WriterFailedError(AofError):
    """The writer lost durability (a failed write or fsync) and accepts no
    more appends; reopen it to recover from what is on disk."""


class WriterLockedError(AofError):
    """Another writer holds the AOF directory."""


class WriterClosedError(OpenMatchPersistenceError):
    """An append on a writer that was closed."""


# --- storage ---------------------------------------------------------------


class StoreError(OpenMatchPersistenceError):
    """A failure of the database store."""


class MigrationError(StoreError):
    """A migration that cannot be applied, or an applied one whose file
    changed since."""


class IdentityMismatchError(StoreError):
    """The database belongs to another data directory (docs/storage.md,
    "Identity"), or holds a snapshot of no known one and adoption was not
    asked for. Raised before anything is written or deleted. The ids and
    paths of both sides are attributes (None where a side has none)."""

    def __init__(
        self,
        message: str,
        *,
        data_dir_id: object = None,
        data_dir_path: str | None = None,
        database_id: object = None,
        database_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.data_dir_id = data_dir_id
        self.data_dir_path = data_dir_path
        self.database_id = database_id
        self.database_path = database_path


class ConsistencyError(OpenMatchPersistenceError):
    """State that breaks an invariant; names the entity and the position.

    ``violations`` lists every broken invariant (``Violation`` objects from
    ``State.check()``, by position); ``kind``, ``entity``, ``entity_id`` and
    ``position`` are the first one's, or None when raised without any.
    """

    def __init__(self, message: str, *, violations: Sequence[Violation] = ()) -> None:
        super().__init__(message)
        self.violations: list[Violation] = list(violations)
        first = self.violations[0] if self.violations else None
        self.kind: str | None = first.kind if first else None
        self.entity: str | None = first.entity if first else None
        self.entity_id: object = first.entity_id if first else None
        self.position: int | None = first.position if first else None


class OperationRefusedError(ConsistencyError, ValueError):
    """An operation that would break an invariant of the state, refused
    before anything was written (``docs/state.md``, "Refusals"). ``kind``,
    ``entity``, ``entity_id`` and ``position`` name the violation it would
    cause; ``index`` is the operation's place in the appended batch."""

    def __init__(
        self, message: str, *, violations: Sequence[Violation] = (), index: int | None = None
    ) -> None:
        super().__init__(message, violations=violations)
        self.index = index


class RecoveryError(OpenMatchPersistenceError):
    """Recovery cannot produce a trustworthy state."""


class NotADataDirError(OpenMatchPersistenceError, FileNotFoundError):
    """A path that is not a data directory (no ``aof/`` in it) given to a
    command that needs one, or one with no AOF segment given to ``aof``."""


class LogViolationError(RecoveryError, ConsistencyError):
    """The log holds an operation that breaks the state's invariants
    (written by another program or an older version). ``position``, ``kind``,
    ``entity`` and ``entity_id`` name the first one; ``frame_start`` is where
    its frame starts. ``recover --until POSITION`` rebuilds the state before
    it and keeps the rest in a backup."""

    def __init__(
        self, message: str, *, violations: Sequence[Violation] = (), frame_start: int = 0
    ) -> None:
        ConsistencyError.__init__(self, message, violations=violations)
        self.frame_start = frame_start


class JournalBrokenError(OpenMatchPersistenceError):
    """One of the journal's own invariants does not hold: a bug. The state
    is not trusted from then on; reopen the data directory."""


__all__ = [
    "AofError",
    "ChecksumMismatchError",
    "ConsistencyError",
    "CorruptFrameError",
    "FrameError",
    "IdentityMismatchError",
    "InvalidTypeError",
    "InvalidValueError",
    "JournalBrokenError",
    "JsonFormatError",
    "LogViolationError",
    "MigrationError",
    "NotADataDirError",
    "OpenMatchPersistenceError",
    "OperationRefusedError",
    "OversizedFrameError",
    "RecoveryError",
    "StoreError",
    "TornFrameError",
    "TrailingBytesError",
    "UndecodablePayloadError",
    "WriterClosedError",
    "WriterFailedError",
    "WriterLockedError",
]
