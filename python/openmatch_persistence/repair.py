"""Cutting an AOF at its first bad frame, after saving what is cut.

The scanner never drops data (``docs/recovery-rule.md``); a repair is the
one thing that does, and only when asked. The rules and the file actions
are the Rust core's (``repair.rs``: what goes; ``cut.rs``: every removed
byte copied to a backup beside its segment, fsynced, before the damaged
segment is truncated and the later ones deleted, the last first, each
removal durable before the next, so that a crash midway leaves a prefix
of the log followed by bytes already backed up, never a gap). This module
shows the plan and the result.

:func:`repair` and :func:`cut` hold the AOF directory's writer lock while
they work, and refuse with :class:`WriterLockedError` while a writer has
the AOF open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from openmatch_persistence import _core
from openmatch_persistence.fileio import StrPath


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
    #: Bytes that leave the log (those a restart keeps are not counted).
    bytes_removed: int = 0

    @property
    def needed(self) -> bool:
        return bool(self.parts)

    @property
    def cut_position(self) -> int:
        return self.report.position

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


#: The core's plan: ``(report, parts, damaged_frames, intact_frames,
#: restart_at, bytes_removed)``, each part ``(segment, offset, bytes,
#: removes_file)``.
_RawPlan = tuple[_core.ScanReport, list[tuple[str, int, int, bool]], int, int, "int | None", int]


def _plan(raw: _RawPlan, path: StrPath) -> RepairPlan:
    report, parts, damaged, intact, restart_at, bytes_removed = raw
    removed = tuple(RemovedPart(*p) for p in parts)
    return RepairPlan(str(path), report, removed, damaged, intact, restart_at, bytes_removed)


def plan_repair(
    path: StrPath,
    *,
    checkpoint: int | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> RepairPlan:
    """Scans ``path`` (a segment file or an AOF directory) and says what a
    repair would remove; changes nothing (``repair::plan_repair`` in Rust,
    which holds the rules).

    ``checkpoint`` is the database's snapshot position, when known. A gap
    whose later side starts at or before it is what a compaction interrupted
    between unlinks can leave (an older segment back without the ones after
    it): the segments before the gap are covered by the snapshot, so they go,
    not the live log. Damage below it restarts the log at the checkpoint.
    And no repair removes a segment that starts at or after the checkpoint
    (no snapshot holds its operations): that plan is refused with
    :class:`AofError` naming the segment.

    A length field above ``max_payload`` is no proof of damage (a writer
    with a higher limit writes such frames): the plan is refused with
    :class:`OversizedFrameError`. With the limit raised past it, the scan
    reads on and says what the bytes are: a real frame (nothing to repair)
    or damage, which is then repaired as any other."""
    raw = _core.plan_repair(path, checkpoint=checkpoint, max_payload=max_payload)
    return _plan(raw, path)


def repair(
    path: StrPath,
    *,
    plan: RepairPlan | None = None,
    checkpoint: int | None = None,
    max_payload: int = _core.DEFAULT_MAX_PAYLOAD_LEN,
) -> RepairResult:
    """Cuts ``path`` at its first bad frame after backing up what goes
    (``checkpoint``, ``max_payload``: see :func:`plan_repair`).

    ``plan`` (from :func:`plan_repair`) is re-checked against a fresh scan
    made under the directory's writer lock: if the AOF changed since, the
    repair refuses rather than cut elsewhere. Raises
    :class:`WriterLockedError` while a writer has the AOF open.
    """
    expected = None
    if plan is not None:
        expected = [(p.segment, p.offset, p.bytes, p.removes_file) for p in plan.parts]
    raw, backups, after = _core.repair(
        path, checkpoint=checkpoint, max_payload=max_payload, expected=expected
    )
    fresh = _plan(raw, path)
    removed = tuple(
        dataclasses.replace(p, backup=b) for p, b in zip(fresh.parts, backups, strict=True)
    )
    return RepairResult(fresh, removed, after, tuple(backups))


def cut(aof_dir: StrPath, position: int) -> tuple[RemovedPart, ...]:
    """Cuts the log in ``aof_dir`` at ``position`` (a frame boundary),
    after copying everything from there on to backup files; returns the
    parts removed, each with its backup. Holds the directory's writer lock
    (``WriterLockedError`` while a writer has the AOF open)."""
    return tuple(RemovedPart(*p) for p in _core.cut_at(aof_dir, position))


def describe(plan: RepairPlan, removed: Sequence[RemovedPart] = ()) -> list[str]:
    """Lines saying what a repair removes (or removed)."""
    if not plan.needed:
        return ["nothing to repair: " + plan.report.message]
    frames = f"{plan.damaged_frames} damaged frame(s)"
    if plan.intact_frames:
        frames += f" and at least {plan.intact_frames} intact frame(s) behind the damage"
    if plan.restart_at is not None:
        kept = sum(p.bytes for p in plan.parts) - plan.bytes_removed
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
    "plan_repair",
    "repair",
]
