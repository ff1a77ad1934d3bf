"""Cutting an AOF at its first bad frame, after saving what is cut.

The scanner never drops data (``docs/recovery-rule.md``); this module is the
one place that does, and only when asked. :func:`plan_repair` says what a
repair would remove; :func:`repair` first copies every byte it will remove
to a backup file beside its segment (mode 0600, fsynced, directory
fsynced), then truncates the damaged segment at the first bad frame and
deletes the segments after it (the last one first, each unlink made
durable by a directory fsync before the next removal, so that a crash
midway leaves a prefix of the log followed by bytes that are already backed
up, never a gap).
The file actions are the Rust core's (``cut.rs``, with ``backup.rs`` naming
and writing the backups, which the writer uses for the torn tails it cuts):
this module decides what goes, Rust removes it.

:func:`repair` holds the AOF directory's writer lock while it works, and
refuses with :class:`WriterLockedError` while a writer has the AOF open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openmatch_persistence import _core
from openmatch_persistence.errors import AofError, OversizedFrameError, WriterLockedError
from openmatch_persistence.fileio import StrPath

_SEGMENT_NAME = re.compile(r"^[0-9]{20}\.aof$")

#: Causes after which the damaged frame's length field can be trusted, so
#: the frames behind it can still be counted.
_LENGTH_TRUSTED = frozenset({"checksum_mismatch", "undecodable_payload", "trailing_bytes"})


@dataclass(frozen=True)
class RemovedPart:
    """Bytes a repair removes from one segment file."""

    segment: str
    #: Where the cut starts in the file; 0 with ``removes_file`` for a
    #: segment deleted whole.
    offset: int
    bytes: int
    #: True when the file is deleted, not truncated.
    removes_file: bool
    #: The backup file, once written.
    backup: str | None = None


@dataclass(frozen=True)
class RepairPlan:
    """What a repair of ``path`` removes, from the scan that found the damage."""

    path: str
    report: _core.ScanReport
    parts: tuple[RemovedPart, ...]
    #: Frames damaged at the cut: 1 for a bad or torn frame, 0 for a zeroed
    #: tail or a gap between segments.
    damaged_frames: int
    #: Intact frames found behind the damage (a lower bound: counting stops
    #: at the next damage in each file).
    intact_frames: int
    #: When the damage lies below the database's checkpoint: the position
    #: where the log starts again, in a new segment that gets the damaged
    #: one's bytes from there (the checkpoint is a frame boundary, and
    #: everything before it is in the snapshot).
    restart_at: int | None = None

    @property
    def needed(self) -> bool:
        return bool(self.parts)

    @property
    def cut_position(self) -> int:
        return self.report.position

    @property
    def bytes_removed(self) -> int:
        """Bytes that leave the log (those a restart keeps are not counted)."""
        kept = 0 if self.restart_at is None else _end_of(self.parts[-1]) - self.restart_at
        return sum(p.bytes for p in self.parts) - kept

    @property
    def frames_removed(self) -> int:
        return self.damaged_frames + self.intact_frames


@dataclass(frozen=True)
class RepairResult:
    plan: RepairPlan
    #: The parts as removed, each with its backup file.
    removed: tuple[RemovedPart, ...]
    #: The scan after the repair.
    after: _core.ScanReport
    backups: tuple[str, ...] = field(default=())


def _segments_after(path: Path, segment: Path) -> list[Path]:
    """The segment files of directory ``path`` that come after ``segment``."""
    return [p for p in _segment_files(path) if p.name > segment.name]


def _segments_before(path: Path, segment: Path) -> list[Path]:
    """The segment files of directory ``path`` that come before ``segment``."""
    return [p for p in _segment_files(path) if p.name < segment.name]


def _segment_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return [path / n for n in sorted(os.listdir(path)) if _SEGMENT_NAME.match(n)]


def _intact_frames_after(report: _core.ScanReport, seg: Path, size: int, max_payload: int) -> int:
    """Good frames behind the damaged one, in the same segment."""
    if report.cause not in _LENGTH_TRUSTED:
        return 0
    with open(seg, "rb") as f:
        f.seek(report.offset)
        header = f.read(_core.HEADER_LEN)
    if len(header) < _core.HEADER_LEN:
        return 0
    skip = report.offset + _core.HEADER_LEN + int.from_bytes(header[:4], "little")
    if skip >= size:
        return 0
    return _core.verify(seg, start=report.segment_start + skip, max_payload=max_payload).frames


def _start_of(segment: StrPath) -> int:
    return int(Path(segment).name[:20])


def _end_of(part: RemovedPart) -> int:
    return _start_of(part.segment) + part.offset + part.bytes


def plan_repair(
    path: StrPath,
    *,
    checkpoint: int | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> RepairPlan:
    """Scans ``path`` (a segment file or an AOF directory) and says what a
    repair would remove; changes nothing.

    ``checkpoint`` is the database's snapshot position, when known. A gap
    whose later side starts at or before it is what a compaction interrupted
    between unlinks can leave (an older segment back without the ones after
    it): the segments before the gap are covered by the snapshot, so they go,
    not the live log. And no repair removes a segment that starts at or
    after the checkpoint (no snapshot holds its operations): that plan is
    refused with :class:`AofError` naming the segment.

    A length field above ``max_payload`` is no proof of damage (a writer
    with a higher limit writes such frames): the plan is refused with
    :class:`OversizedFrameError`. With the limit raised past it, the scan
    reads on and says what the bytes are: a real frame (nothing to repair)
    or damage, which is then repaired as any other."""
    root = Path(path)
    report = _core.verify(root, max_payload=max_payload)
    if report.is_oversized:
        raise OversizedFrameError(
            f"{root}: refusing to repair: {report.message}; nothing was cut. To see what it "
            "is, repair with --max-payload above that length: a real frame then needs no "
            "repair, and a damaged length is repaired like any other damage",
            report.offset,
            report.segment,
        )
    if report.is_clean or report.segment is None:
        return RepairPlan(str(root), report, (), 0, 0)
    seg = Path(report.segment)
    size = seg.stat().st_size
    parts: list[RemovedPart] = []
    cause = report.cause
    intact = 0
    gap = cause in ("segment_gap", "segment_overlap")
    if gap and checkpoint is not None and _start_of(seg) <= checkpoint:
        for older in _segments_before(root, seg):
            parts.append(RemovedPart(str(older), 0, older.stat().st_size, removes_file=True))
            intact += _core.verify(older, max_payload=max_payload).frames
        return RepairPlan(str(root), report, tuple(parts), 0, intact)
    if gap:
        # The segment that starts at the wrong position goes whole, with
        # everything after it; the log ends where the previous one ends.
        parts.append(RemovedPart(str(seg), 0, size, removes_file=True))
        intact += _core.verify(seg, max_payload=max_payload).frames
        damaged = 0
    elif checkpoint is not None and report.position < checkpoint:
        return _plan_restart(root, report, seg, size, checkpoint)
    else:
        parts.append(RemovedPart(str(seg), report.offset, size - report.offset, removes_file=False))
        intact += _intact_frames_after(report, seg, size, max_payload)
        damaged = 0 if cause == "zeroed_tail" else 1
    for later in _segments_after(root, seg):
        parts.append(RemovedPart(str(later), 0, later.stat().st_size, removes_file=True))
        intact += _core.verify(later, max_payload=max_payload).frames
    if checkpoint is not None:
        for part in parts:
            if part.removes_file and _start_of(part.segment) >= checkpoint:
                raise AofError(
                    f"{part.segment}: refusing to repair: the repair would delete this segment, "
                    f"which starts at position {_start_of(part.segment)}, at or after the "
                    f"database's checkpoint {checkpoint}, so no snapshot holds its operations"
                )
    return RepairPlan(str(root), report, tuple(parts), damaged, intact)


def _plan_restart(
    root: Path, report: _core.ScanReport, seg: Path, size: int, checkpoint: int
) -> RepairPlan:
    """Damage below the database's checkpoint: the bytes it spoils are in
    the snapshot, so cutting there would leave the log ending before it,
    which recovery must refuse. Instead the log starts again at the
    checkpoint: the damaged segment and every one before it go (backed up),
    and a new segment at the checkpoint gets the damaged one's bytes from
    there (empty when the checkpoint is this segment's end). When a later
    segment starts at or before the checkpoint, the log goes on there and
    no new segment is needed."""
    start = _start_of(seg)
    later = _segments_after(root, seg)
    parts = [
        RemovedPart(str(p), 0, p.stat().st_size, removes_file=True)
        for p in (*_segments_before(root, seg), seg)
    ]
    if later and _start_of(later[0]) <= checkpoint:
        # The log already goes on from the checkpoint or before it: in the
        # next segment, or in the one an interrupted repair made.
        restart_at = None
    elif checkpoint <= start + size:
        restart_at = checkpoint
    else:
        raise AofError(
            f"{seg}: refusing to repair: the database's checkpoint {checkpoint} is past the "
            f"AOF's end at {start + size}; this AOF is not the database's, or lost its tail"
        )
    damaged = 0 if report.cause == "zeroed_tail" else 1
    return RepairPlan(str(root), report, tuple(parts), damaged, 0, restart_at)


def _locked(path: StrPath, why: str) -> _core.AofDirLock:
    """The AOF directory's writer lock, or ``WriterLockedError``."""
    root = Path(path)
    try:
        return _core.AofDirLock(root if root.is_dir() else root.parent)
    except WriterLockedError as e:
        raise WriterLockedError(
            f"{path}: a writer has the AOF open; close it before the {why} ({e})"
        ) from e


def repair(
    path: StrPath,
    *,
    plan: RepairPlan | None = None,
    checkpoint: int | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> RepairResult:
    """Cuts ``path`` at its first bad frame after backing up what goes
    (``checkpoint``, ``max_payload``: see :func:`plan_repair`).

    ``plan`` (from :func:`plan_repair`) is re-checked against a fresh scan:
    if the AOF changed since, the repair refuses rather than cut elsewhere.
    Raises :class:`WriterLockedError` while a writer has the AOF open.
    """
    with _locked(path, "repair"):
        fresh = plan_repair(path, checkpoint=checkpoint, max_payload=max_payload)
        if plan is not None and (fresh.parts != plan.parts):
            raise AofError(f"{path}: the AOF changed since the repair was planned; plan it again")
        if not fresh.needed:
            return RepairResult(fresh, (), fresh.report)
        done = _remove(path, fresh.parts, "repair", fresh.restart_at)
        after = _core.verify(Path(path), max_payload=max_payload)
    return RepairResult(fresh, done, after, tuple(p.backup or "" for p in done))


def plan_cut(aof_dir: StrPath, position: int) -> tuple[RemovedPart, ...]:
    """The parts that go when the log in ``aof_dir`` is cut at ``position``
    (a frame boundary): the rest of the segment holding it, and every later
    segment. Changes nothing."""
    root = Path(aof_dir)
    segments = _core.list_segments(root)
    holding = [s for s in segments if s[0] <= position]
    if not holding:
        raise AofError(f"{root}: no segment holds position {position}")
    start, seg, size = holding[-1]
    offset = position - start
    if offset > size:
        raise AofError(f"{seg}: position {position} is past its end ({start + size})")
    parts = []
    if offset < size:
        parts.append(RemovedPart(seg, offset, size - offset, removes_file=False))
    for later in _segments_after(root, Path(seg)):
        parts.append(RemovedPart(str(later), 0, later.stat().st_size, removes_file=True))
    return tuple(parts)


def cut(aof_dir: StrPath, position: int) -> tuple[RemovedPart, ...]:
    """Cuts the log in ``aof_dir`` at ``position`` (a frame boundary),
    after copying everything from there on to backup files; returns the
    parts removed, each with its backup. Holds the directory's writer lock
    (``WriterLockedError`` while a writer has the AOF open)."""
    with _locked(aof_dir, "cut"):
        return _remove(aof_dir, plan_cut(aof_dir, position), "cut")


def _remove(
    path: StrPath, parts: Sequence[RemovedPart], why: str, restart_at: int | None = None
) -> tuple[RemovedPart, ...]:
    """Backs up every part (fsynced, directory fsynced), then removes them,
    the last segment first, so that a crash midway leaves a prefix of the
    log followed by bytes that are already backed up
    (``cut::cut_with_backups`` in Rust, the one owner of that order).

    With ``restart_at`` (see :func:`_plan_restart`) the new segment is made
    before anything is removed: a crash then leaves it overlapping the
    parts, or after a gap, each of which a repair with the checkpoint ends."""
    cut = [(p.segment, p.offset, p.bytes, p.removes_file) for p in parts]
    try:
        backups = _core.cut_with_backups(cut, why, restart_at)
    except OSError as e:
        if isinstance(e, AofError):
            raise AofError(f"{path}: {e}") from e
        raise AofError(f"{path}: {why} failed: {e}") from e
    return tuple(
        RemovedPart(p.segment, p.offset, p.bytes, p.removes_file, backup)
        for p, backup in zip(parts, backups, strict=True)
    )


def describe(plan: RepairPlan, removed: Sequence[RemovedPart] = ()) -> list[str]:
    """Lines saying what a repair removes (or removed)."""
    if not plan.needed:
        return ["nothing to repair: " + plan.report.message]
    frames = f"{plan.damaged_frames} damaged frame(s)"
    if plan.intact_frames:
        frames += f" and at least {plan.intact_frames} intact frame(s) behind the damage"
    if plan.restart_at is not None:
        kept = _end_of(plan.parts[-1]) - plan.restart_at
        lines = [
            f"damage at position {plan.cut_position}, below the database's checkpoint "
            f"{plan.restart_at}: {plan.report.message}",
            f"the log starts again at {plan.restart_at} in a new segment with the "
            f"{kept} bytes from there; the {plan.bytes_removed} bytes before it, which the "
            "snapshot holds, go",
        ]
    else:
        lines = [
            f"cut at position {plan.cut_position}: {plan.report.message}",
            f"removes {plan.bytes_removed} bytes: {frames}",
        ]
    for part in removed or plan.parts:
        what = (
            f"whole file, {part.bytes} bytes"
            if part.removes_file
            else f"bytes {part.offset}..{part.offset + part.bytes} ({part.bytes} bytes)"
        )
        line = f"  {part.segment}: {what}"
        if part.backup:
            line += f" -> backup {part.backup}"
        lines.append(line)
    return lines


__all__ = [
    "RemovedPart",
    "RepairPlan",
    "RepairResult",
    "cut",
    "describe",
    "plan_cut",
    "plan_repair",
    "repair",
]
