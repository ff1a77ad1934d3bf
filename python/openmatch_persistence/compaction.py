"""Compaction: when the AOF grows past a size or an age, snapshot the state
into the database and delete the segments that the snapshot covers.

The steps, and why a crash after any of them loses nothing:

1. **Rotate**: the writer starts a new segment at position R. A crash here
   leaves one more (maybe empty) segment; recovery reads it like any other.
2. **Snapshot**: the flusher writes every change up to a position Q >= R,
   with Q as the checkpoint, in one transaction. A crash before the commit
   leaves the previous checkpoint; after it, the database holds the state at
   Q and the whole AOF is still there.
3. **Delete** the segments that end at or before R (so before Q), oldest
   first, fsyncing the directory after each unlink. A crash midway leaves
   a contiguous suffix of segments that still starts at or before Q, which
   is where recovery replays from. (Unlinks that share one directory fsync
   can come back as any subset of themselves: a hole in the log.) The
   writer deletes them (``AofWriter.delete_covered``): it owns the
   directory, and a deletion never overlaps its rotation.

Appends go on during all three steps: only the writer's rotation takes its
lock, for as long as a segment switch takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from openmatch_persistence import _core

log = logging.getLogger(__name__)

#: Compaction starts when the AOF holds more than this many bytes...
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
#: ...or its oldest record is this many seconds old.
DEFAULT_MAX_AGE = 3600.0


@dataclass(frozen=True)
class CompactionPolicy:
    """When to compact. ``None`` disables a threshold."""

    max_bytes: int | None = DEFAULT_MAX_BYTES
    max_age: float | None = DEFAULT_MAX_AGE

    def due(self, aof_bytes: int, oldest_age: float | None) -> str | None:
        """Why compaction is due now, or None."""
        if self.max_bytes is not None and aof_bytes > self.max_bytes:
            return f"the AOF holds {aof_bytes} bytes, over {self.max_bytes}"
        if self.max_age is not None and oldest_age is not None and oldest_age >= self.max_age:
            return f"its oldest record is {oldest_age:.0f} s old, over {self.max_age:.0f} s"
        return None


@dataclass(frozen=True)
class CompactionReport:
    rotated_at: int
    snapshot_position: int
    deleted_segments: int
    deleted_bytes: int
    seconds: float


class _DeletesCovered(Protocol):
    """What owns the AOF directory: an ``AofWriter`` or a ``Journal``."""

    def delete_covered(self, covered: int) -> tuple[int, int]: ...


def delete_covered_segments(writer: _DeletesCovered, covered: int) -> tuple[int, int]:
    """Deletes, through ``writer``, the segments that end at or before
    ``covered``, oldest first; never the one appended to. Returns
    (segments, bytes) deleted."""
    deleted, deleted_bytes = writer.delete_covered(covered)
    if deleted:
        log.info(
            "compaction: deleted %d segment(s), %d bytes, covered by position %d",
            deleted,
            deleted_bytes,
            covered,
        )
    return deleted, deleted_bytes


def aof_bytes_and_oldest(aof_dir: Path) -> tuple[int, int | None]:
    """Bytes held by the AOF's segments, and the start of the oldest."""
    segments = _core.list_segments(aof_dir)
    if not segments:
        return 0, None
    return sum(length for _, _, length in segments), segments[0][0]
