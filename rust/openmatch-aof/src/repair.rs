//! Repairing an AOF: what goes when a log is cut at its first bad frame,
//! and the cut itself, under the directory's writer lock.
//!
//! The scanner never drops data (`docs/recovery-rule.md`). A repair is the
//! one thing that does, and only when asked: [`plan_repair`] reads the
//! scanner's verdict and says which parts of which segments go;
//! [`repair`] takes the directory's lock, plans again (refusing if the plan
//! the caller saw is no longer the plan), and hands the parts to
//! [`cut_with_backups`], which backs every byte up before removing it.
//! [`cut_at`] is the same for a cut at a position the caller chose
//! (`recover --until`).
//!
//! The rules of what goes (the damaged frame and everything after it; a
//! segment that starts at the wrong place and everything after it; below
//! the database's checkpoint, the covered segments rather than the live
//! log) live here and nowhere else: the Python package and the CLI show the
//! plan, they do not make it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::codec::{FrameErrorKind, FrameHeader, HEADER_LEN};
use crate::cut::{cut_with_backups, directory_of, CutPart};
use crate::scanner::{verify_path, OutcomeKind, ScanError, ScanOptions, ScanReport, StopCause};
use crate::segment::{list_segments, Segment};
use crate::writer::{DirLock, WriterError};

/// What a repair of a path removes, from the scan that found the damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    /// The scan of the whole path.
    pub report: ScanReport,
    /// The parts that go, in log order; empty when nothing needs repair.
    pub parts: Vec<CutPart>,
    /// Frames damaged at the cut: 1 for a bad or torn frame, 0 for a zeroed
    /// tail, a gap or an overlap between segments.
    pub damaged_frames: u64,
    /// Intact frames found behind the damage (a lower bound: counting stops
    /// at the next damage in each file).
    pub intact_frames: u64,
    /// When the damage lies below the database's checkpoint: the position
    /// where the log starts again, in a new segment that gets the damaged
    /// one's bytes from there (the checkpoint is a frame boundary, and
    /// everything before it is in the snapshot).
    pub restart_at: Option<u64>,
    /// The bytes of the parts that a restart keeps, in its new segment.
    pub restart_bytes: u64,
}

impl RepairPlan {
    /// Whether anything goes.
    pub fn needed(&self) -> bool {
        !self.parts.is_empty()
    }

    /// Bytes that leave the log (those a restart keeps are not counted).
    pub fn bytes_removed(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum::<u64>() - self.restart_bytes
    }
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The plan carried out (made under the lock).
    pub plan: RepairPlan,
    /// Each part's backup file, in the order of the plan's parts.
    pub backups: Vec<PathBuf>,
    /// The scan after the repair.
    pub after: ScanReport,
}

/// Why a repair or a cut was not made. Nothing was removed, except for
/// [`RepairError::Cut`], whose cut may have stopped midway, with every
/// byte removed already in a backup.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The log could not be scanned.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// A file could not be read or listed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A length field above `max_payload`: no proof of damage (a writer
    /// with a higher limit writes such frames), so nothing is planned.
    #[error("{path}: refusing to repair: {described}; nothing was cut. To see what it is, repair with --max-payload above that length: a real frame then needs no repair, and a damaged length is repaired like any other damage")]
    Oversized {
        /// The path asked to repair.
        path: String,
        /// The scan's stop, in one line.
        described: String,
        /// The frame's offset in `segment`.
        offset: u64,
        /// The segment holding it.
        segment: Option<PathBuf>,
        /// The length field.
        length: u32,
        /// The limit it is over.
        limit: u32,
    },
    /// The repair or cut would remove what no snapshot holds, or cannot
    /// be placed in the log as it is (the message says which).
    #[error("{0}")]
    Refused(String),
    /// A writer (or another repair) holds the directory's lock.
    #[error("{path}: a writer has the AOF open; close it before the {why} ({source})")]
    Locked {
        /// The path asked to repair or cut.
        path: String,
        /// `repair` or `cut`.
        why: &'static str,
        /// The lock's own error.
        #[source]
        source: WriterError,
    },
    /// The cut failed partway (see [`cut_with_backups`]).
    #[error("{path}: {why} failed: {source}")]
    Cut {
        /// The path asked to repair or cut.
        path: String,
        /// `repair` or `cut`.
        why: &'static str,
        /// The file system's error.
        #[source]
        source: io::Error,
    },
}

impl RepairError {
    fn io(path: &Path, source: io::Error) -> Self {
        RepairError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Causes after which the damaged frame's length field can be trusted, so
/// that the frames behind it can still be counted.
fn length_trusted(cause: &Option<StopCause>) -> bool {
    matches!(
        cause,
        Some(StopCause::Frame(
            FrameErrorKind::ChecksumMismatch { .. }
                | FrameErrorKind::Undecodable { .. }
                | FrameErrorKind::TrailingBytes { .. }
        ))
    )
}

fn scan(path: &Path, start: Option<u64>, max_payload: u32) -> Result<ScanReport, ScanError> {
    let opts = ScanOptions {
        max_payload,
        ..ScanOptions::default()
    };
    verify_path(path, start, opts)
}

/// The segments of the directory `root`; none when `root` is one file.
fn segments_of(root: &Path) -> Result<Vec<Segment>, RepairError> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    list_segments(root).map_err(|e| RepairError::io(root, e))
}

fn whole(segment: &Segment) -> CutPart {
    CutPart {
        segment: segment.path.clone(),
        offset: 0,
        bytes: segment.len,
        removes_file: true,
    }
}

/// Good frames in `segment`, as far as a scan reads.
fn frames_in(segment: &Segment, max_payload: u32) -> Result<u64, ScanError> {
    Ok(scan(&segment.path, None, max_payload)?.stats.frames)
}

/// Good frames behind the damaged one at `offset` of `seg`, when its
/// length field can be trusted to skip it.
fn intact_frames_after(
    report: &ScanReport,
    seg: &Segment,
    max_payload: u32,
) -> Result<u64, RepairError> {
    let outcome = &report.outcome;
    if !length_trusted(&outcome.cause) {
        return Ok(0);
    }
    // A trusted cause is a frame the scanner read whole, header and
    // payload: a header cut short now is a file changed under the repair.
    let mut header = [0u8; HEADER_LEN];
    let mut file = File::open(&seg.path).map_err(|e| RepairError::io(&seg.path, e))?;
    file.seek(SeekFrom::Start(outcome.offset))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| RepairError::io(&seg.path, e))?;
    let header = FrameHeader::from_bytes(&header);
    let skip = outcome.offset + header.frame_len() as u64;
    if skip >= seg.len {
        return Ok(0);
    }
    let behind = scan(&seg.path, Some(outcome.segment_start + skip), max_payload)?;
    Ok(behind.stats.frames)
}

/// Scans `path` (a segment file or an AOF directory) and says what a
/// repair would remove; changes nothing.
///
/// `checkpoint` is the database's snapshot position, when known. A gap
/// whose later side starts at or before it is what a compaction
/// interrupted between unlinks can leave (an older segment back without
/// the ones after it): the segments before the gap are covered by the
/// snapshot, so they go, not the live log. Damage below it restarts the
/// log at the checkpoint instead of cutting below it. And no repair
/// removes a segment that starts at or after the checkpoint (no snapshot
/// holds its operations): that plan is refused.
///
/// A length field above `max_payload` is no proof of damage: the plan is
/// refused with [`RepairError::Oversized`]. With the limit raised past it,
/// the scan reads on and says what the bytes are.
pub fn plan_repair(
    path: &Path,
    checkpoint: Option<u64>,
    max_payload: u32,
) -> Result<RepairPlan, RepairError> {
    let report = scan(path, None, max_payload)?;
    let outcome = &report.outcome;
    if let Some((length, limit)) = outcome.oversized() {
        return Err(RepairError::Oversized {
            path: path.display().to_string(),
            described: outcome.describe(),
            offset: outcome.offset,
            segment: outcome.segment.clone(),
            length,
            limit,
        });
    }
    let nothing = |report| RepairPlan {
        report,
        parts: Vec::new(),
        damaged_frames: 0,
        intact_frames: 0,
        restart_at: None,
        restart_bytes: 0,
    };
    let Some(seg_path) = outcome.segment.clone() else {
        return Ok(nothing(report));
    };
    if outcome.kind == OutcomeKind::Clean {
        return Ok(nothing(report));
    }
    let len = std::fs::metadata(&seg_path)
        .map_err(|e| RepairError::io(&seg_path, e))?
        .len();
    let seg = Segment {
        start: outcome.segment_start,
        path: seg_path,
        len,
    };
    let segments = segments_of(path)?;
    let before: Vec<&Segment> = segments.iter().filter(|s| s.start < seg.start).collect();
    let after: Vec<&Segment> = segments.iter().filter(|s| s.start > seg.start).collect();
    let gap = matches!(
        outcome.cause,
        Some(StopCause::SegmentGap { .. } | StopCause::SegmentOverlap { .. })
    );
    let damaged_frames = u64::from(!gap && outcome.cause != Some(StopCause::ZeroedTail));

    if gap && checkpoint.is_some_and(|c| seg.start <= c) {
        // The segments before the gap are the snapshot's: they go.
        let mut intact = 0;
        for older in &before {
            intact += frames_in(older, max_payload)?;
        }
        let parts = before.iter().map(|s| whole(s)).collect();
        return Ok(RepairPlan {
            report,
            parts,
            damaged_frames: 0,
            intact_frames: intact,
            restart_at: None,
            restart_bytes: 0,
        });
    }
    if let Some(c) = checkpoint.filter(|&c| !gap && outcome.position < c) {
        return plan_restart(report, &seg, &before, &after, c, damaged_frames);
    }
    let mut parts = Vec::with_capacity(after.len() + 1);
    let mut intact;
    if gap {
        // The segment that starts at the wrong position goes whole, with
        // everything after it; the log ends where the previous one ends.
        parts.push(whole(&seg));
        intact = frames_in(&seg, max_payload)?;
    } else {
        parts.push(CutPart {
            segment: seg.path.clone(),
            offset: outcome.offset,
            bytes: seg.len - outcome.offset,
            removes_file: false,
        });
        intact = intact_frames_after(&report, &seg, max_payload)?;
    }
    for later in &after {
        parts.push(whole(later));
        intact += frames_in(later, max_payload)?;
    }
    if let Some(c) = checkpoint {
        let deleted_uncovered = after
            .iter()
            .copied()
            .chain(gap.then_some(&seg))
            .filter(|s| s.start >= c)
            .min_by_key(|s| s.start);
        if let Some(s) = deleted_uncovered {
            return Err(RepairError::Refused(format!(
                "{}: refusing to repair: the repair would delete this segment, which starts at \
                 position {}, at or after the database's checkpoint {c}, so no snapshot holds \
                 its operations",
                s.path.display(),
                s.start
            )));
        }
    }
    Ok(RepairPlan {
        report,
        parts,
        damaged_frames,
        intact_frames: intact,
        restart_at: None,
        restart_bytes: 0,
    })
}

/// Damage below the database's checkpoint: the bytes it spoils are in the
/// snapshot, so cutting there would leave the log ending before it, which
/// recovery must refuse. Instead the log starts again at the checkpoint:
/// the damaged segment and every one before it go (backed up), and a new
/// segment at the checkpoint gets the damaged one's bytes from there
/// (empty when the checkpoint is this segment's end). When a later segment
/// starts at or before the checkpoint, the log goes on there and no new
/// segment is needed.
fn plan_restart(
    report: ScanReport,
    seg: &Segment,
    before: &[&Segment],
    after: &[&Segment],
    checkpoint: u64,
    damaged_frames: u64,
) -> Result<RepairPlan, RepairError> {
    let restart_at = if after.first().is_some_and(|s| s.start <= checkpoint) {
        // The log already goes on from the checkpoint or before it: in the
        // next segment, or in the one an interrupted repair made.
        None
    } else if checkpoint <= seg.end() {
        Some(checkpoint)
    } else {
        return Err(RepairError::Refused(format!(
            "{}: refusing to repair: the database's checkpoint {checkpoint} is past the AOF's \
             end at {}; this AOF is not the database's, or lost its tail",
            seg.path.display(),
            seg.end()
        )));
    };
    let parts = before.iter().copied().chain([seg]).map(whole).collect();
    Ok(RepairPlan {
        report,
        parts,
        damaged_frames,
        intact_frames: 0,
        restart_at,
        restart_bytes: restart_at.map_or(0, |at| seg.end() - at),
    })
}

/// The directory's writer lock, for a repair or cut of `path`.
fn lock(path: &Path, why: &'static str) -> Result<DirLock, RepairError> {
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        directory_of(path)
    };
    DirLock::acquire(&dir).map_err(|source| RepairError::Locked {
        path: path.display().to_string(),
        why,
        source,
    })
}

fn remove(
    path: &Path,
    parts: &[CutPart],
    why: &'static str,
    restart_at: Option<u64>,
) -> Result<Vec<PathBuf>, RepairError> {
    let done = cut_with_backups(parts, why, restart_at).map_err(|source| RepairError::Cut {
        path: path.display().to_string(),
        why,
        source,
    })?;
    Ok(done.backups)
}

/// Cuts `path` at its first bad frame after backing up what goes
/// (`checkpoint`, `max_payload`: see [`plan_repair`]), holding the
/// directory's writer lock ([`RepairError::Locked`] while a writer has the
/// AOF open).
///
/// `expected` is the plan the caller showed (its parts): planned again
/// under the lock, a different plan refuses rather than cut elsewhere.
pub fn repair(
    path: &Path,
    checkpoint: Option<u64>,
    max_payload: u32,
    expected: Option<&[CutPart]>,
) -> Result<Repaired, RepairError> {
    let _lock = lock(path, "repair")?;
    let plan = plan_repair(path, checkpoint, max_payload)?;
    if expected.is_some_and(|parts| parts != plan.parts.as_slice()) {
        return Err(RepairError::Refused(format!(
            "{}: the AOF changed since the repair was planned; plan it again",
            path.display()
        )));
    }
    if !plan.needed() {
        let after = plan.report.clone();
        return Ok(Repaired {
            plan,
            backups: Vec::new(),
            after,
        });
    }
    let backups = remove(path, &plan.parts, "repair", plan.restart_at)?;
    let after = scan(path, None, max_payload)?;
    Ok(Repaired {
        plan,
        backups,
        after,
    })
}

/// The parts that go when the log in `dir` is cut at `position` (a frame
/// boundary): the rest of the segment holding it, and every later segment.
/// Changes nothing.
pub fn plan_cut(dir: &Path, position: u64) -> Result<Vec<CutPart>, RepairError> {
    let segments = list_segments(dir).map_err(|e| RepairError::io(dir, e))?;
    let Some(holding) = segments.iter().rposition(|s| s.start <= position) else {
        return Err(RepairError::Refused(format!(
            "{}: no segment holds position {position}",
            dir.display()
        )));
    };
    let seg = &segments[holding];
    if position > seg.end() {
        return Err(RepairError::Refused(format!(
            "{}: position {position} is past its end ({})",
            seg.path.display(),
            seg.end()
        )));
    }
    let mut parts = Vec::new();
    if position < seg.end() {
        parts.push(CutPart {
            segment: seg.path.clone(),
            offset: position - seg.start,
            bytes: seg.end() - position,
            removes_file: false,
        });
    }
    parts.extend(segments[holding + 1..].iter().map(whole));
    Ok(parts)
}

/// Cuts the log in `dir` at `position` (a frame boundary), after copying
/// everything from there on to backups; returns the parts removed and
/// their backups. Holds the directory's writer lock.
pub fn cut_at(dir: &Path, position: u64) -> Result<(Vec<CutPart>, Vec<PathBuf>), RepairError> {
    let _lock = lock(dir, "cut")?;
    let parts = plan_cut(dir, position)?;
    let backups = remove(dir, &parts, "cut", None)?;
    Ok((parts, backups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_frame;
    use crate::segment::segment_file_name;
    use crate::types::{AofOperation, EpochId, EpochPhase};

    const MAX: u32 = crate::codec::DEFAULT_MAX_PAYLOAD_LEN;

    /// `n` frames, with their lengths.
    fn frames(n: u64) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut lens = Vec::new();
        for i in 0..n {
            let f = encode_frame(&AofOperation::EpochAdvanced(
                EpochId(i + 1),
                EpochPhase::Seal,
            ))
            .unwrap();
            lens.push(f.len() as u64);
            out.extend_from_slice(&f);
        }
        (out, lens)
    }

    fn segment(dir: &Path, start: u64, bytes: &[u8]) -> PathBuf {
        let path = dir.join(segment_file_name(start));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A directory of two segments of 4 frames each; returns the segment
    /// length (both are the same).
    fn two_segments(dir: &Path) -> (PathBuf, PathBuf, u64) {
        let (data, _) = frames(4);
        let len = data.len() as u64;
        (segment(dir, 0, &data), segment(dir, len, &data), len)
    }

    #[test]
    fn a_clean_log_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        two_segments(dir.path());
        let plan = plan_repair(dir.path(), None, MAX).unwrap();
        assert!(!plan.needed());
        assert_eq!(plan.bytes_removed(), 0);
    }

    #[test]
    fn a_bad_frame_goes_with_everything_after_it_and_the_frames_behind_it_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, len) = two_segments(dir.path());
        let (_, lens) = frames(4);
        let mut data = std::fs::read(&first).unwrap();
        data[lens[0] as usize + 10] ^= 1; // the second frame's payload
        std::fs::write(&first, &data).unwrap();
        let plan = plan_repair(dir.path(), None, MAX).unwrap();
        let cut = CutPart {
            segment: first,
            offset: lens[0],
            bytes: len - lens[0],
            removes_file: false,
        };
        assert_eq!(plan.parts, vec![cut, whole_of(&second)]);
        assert_eq!((plan.damaged_frames, plan.intact_frames), (1, 2 + 4));
        assert_eq!(plan.bytes_removed(), 2 * len - lens[0]);
    }

    fn whole_of(path: &Path) -> CutPart {
        CutPart {
            segment: path.to_owned(),
            offset: 0,
            bytes: std::fs::metadata(path).unwrap().len(),
            removes_file: true,
        }
    }

    #[test]
    fn frames_behind_a_length_that_cannot_be_trusted_are_not_counted() {
        // A zero length field with frames behind it: skipping the header
        // would find them, but a zero length is no frame's, so there is no
        // telling where the damage ends.
        let dir = tempfile::tempdir().unwrap();
        let (data, lens) = frames(3);
        let first = lens[0] as usize;
        let damaged = [&data[..first], &[0u8; HEADER_LEN][..], &data[first..]].concat();
        segment(dir.path(), 0, &damaged);
        let plan = plan_repair(dir.path(), None, MAX).unwrap();
        assert_eq!(
            plan.report.outcome.cause.as_ref().map(StopCause::name),
            Some("zero_length")
        );
        assert_eq!((plan.parts[0].offset, plan.damaged_frames), (lens[0], 1));
        assert_eq!(plan.intact_frames, 0);
    }

    #[test]
    fn a_zeroed_tail_is_no_damaged_frame_and_a_torn_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = frames(2);
        let seg = segment(dir.path(), 0, &[data.clone(), vec![0; 40]].concat());
        let plan = plan_repair(dir.path(), None, MAX).unwrap();
        assert_eq!(plan.parts[0].offset, data.len() as u64);
        assert_eq!((plan.damaged_frames, plan.intact_frames), (0, 0));
        std::fs::write(&seg, &data[..data.len() - 3]).unwrap();
        let plan = plan_repair(&seg, None, MAX).unwrap();
        assert_eq!((plan.damaged_frames, plan.parts.len()), (1, 1));
    }

    #[test]
    fn a_segment_after_a_gap_goes_whole_unless_the_checkpoint_covers_what_is_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = frames(4);
        let len = data.len() as u64;
        let first = segment(dir.path(), 0, &data);
        let late = segment(dir.path(), len + 5, &data);
        let plan = plan_repair(dir.path(), None, MAX).unwrap();
        assert_eq!(plan.parts, vec![whole_of(&late)]);
        assert_eq!((plan.damaged_frames, plan.intact_frames), (0, 4));
        // A compaction interrupted between unlinks: the snapshot holds the
        // older segment, which goes instead.
        let plan = plan_repair(dir.path(), Some(len + 5), MAX).unwrap();
        assert_eq!(plan.parts, vec![whole_of(&first)]);
        assert_eq!((plan.damaged_frames, plan.intact_frames), (0, 4));
        // A checkpoint inside the gap: no snapshot holds the later
        // segment, and a restart at the checkpoint would leave the gap.
        let err = plan_repair(dir.path(), Some(len + 2), MAX).unwrap_err();
        assert!(err.to_string().contains("refusing to repair"), "{err}");
        // A checkpoint inside the older segment: the later one holds what
        // no snapshot holds, and is not deleted.
        let err = plan_repair(dir.path(), Some(3), MAX).unwrap_err();
        assert!(
            err.to_string()
                .contains("at or after the database's checkpoint 3"),
            "{err}"
        );
    }

    #[test]
    fn damage_below_the_checkpoint_starts_the_log_again_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, lens) = frames(4);
        let len = data.len() as u64;
        let mut bad = data.clone();
        bad[5] ^= 1; // the first frame's checksum field
        let seg = segment(dir.path(), 0, &bad);
        let checkpoint = lens[0] + lens[1];
        let plan = plan_repair(dir.path(), Some(checkpoint), MAX).unwrap();
        assert_eq!(plan.parts, vec![whole_of(&seg)]);
        assert_eq!(plan.restart_at, Some(checkpoint));
        assert_eq!(plan.bytes_removed(), checkpoint);
        let err = plan_repair(dir.path(), Some(len + 1), MAX).unwrap_err();
        assert!(err.to_string().contains("past the AOF's end"), "{err}");
        // Damage right at the checkpoint: the log is cut there, as without
        // one (everything before it is whole).
        let mut at = data.clone();
        at[checkpoint as usize + 5] ^= 1;
        std::fs::write(&seg, &at).unwrap();
        let cut = plan_repair(dir.path(), Some(checkpoint), MAX).unwrap();
        assert_eq!((cut.parts[0].offset, cut.restart_at), (checkpoint, None));
        std::fs::write(&seg, &bad).unwrap();
        let done = repair(dir.path(), Some(checkpoint), MAX, Some(&plan.parts)).unwrap();
        assert_eq!(done.after.outcome.kind, OutcomeKind::Clean);
        let restarted = std::fs::read(dir.path().join(segment_file_name(checkpoint))).unwrap();
        assert_eq!(restarted, &data[checkpoint as usize..]);
    }

    #[test]
    fn damage_below_the_checkpoint_needs_no_new_segment_when_a_later_one_starts_there() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, len) = two_segments(dir.path());
        let mut data = std::fs::read(&first).unwrap();
        data[5] ^= 1;
        std::fs::write(&first, &data).unwrap();
        let plan = plan_repair(dir.path(), Some(len), MAX).unwrap();
        assert_eq!(plan.parts, vec![whole_of(&first)]);
        assert_eq!((plan.restart_at, plan.bytes_removed()), (None, len));
        assert!(second.exists());
    }

    #[test]
    fn a_length_past_the_limit_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (data, _) = frames(2);
        segment(dir.path(), 0, &data);
        let err = plan_repair(dir.path(), None, 4).unwrap_err();
        assert!(
            matches!(err, RepairError::Oversized { limit: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_repair_refuses_while_a_writer_holds_the_directory_and_when_the_plan_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _, _) = two_segments(dir.path());
        let mut data = std::fs::read(&first).unwrap();
        data[20] ^= 1;
        std::fs::write(&first, &data).unwrap();
        let plan = plan_repair(dir.path(), None, MAX).unwrap();
        {
            let _writer = DirLock::acquire(dir.path()).unwrap();
            let err = repair(dir.path(), None, MAX, None).unwrap_err();
            assert!(
                matches!(err, RepairError::Locked { why: "repair", .. }),
                "{err}"
            );
        }
        let stale = &plan.parts[..1];
        let err = repair(dir.path(), None, MAX, Some(stale)).unwrap_err();
        assert!(err.to_string().contains("changed since"), "{err}");
        assert_eq!(std::fs::read(&first).unwrap(), data);
        let done = repair(dir.path(), None, MAX, Some(&plan.parts)).unwrap();
        assert_eq!(done.backups.len(), 2);
        assert_eq!(done.after.outcome.kind, OutcomeKind::Clean);
    }

    #[test]
    fn a_cut_at_a_position_takes_the_rest_of_its_segment_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, len) = two_segments(dir.path());
        let (_, lens) = frames(4);
        assert_eq!(
            plan_cut(dir.path(), lens[0]).unwrap(),
            vec![
                CutPart {
                    segment: first.clone(),
                    offset: lens[0],
                    bytes: len - lens[0],
                    removes_file: false,
                },
                whole_of(&second)
            ]
        );
        // At a segment's end: nothing of it goes.
        assert_eq!(plan_cut(dir.path(), 2 * len).unwrap(), vec![]);
        assert!(plan_cut(dir.path(), 2 * len + 1).is_err());
        // At a segment's start: the segment stays, empty, where the log
        // goes on.
        let (parts, backups) = cut_at(dir.path(), len).unwrap();
        assert_eq!((parts[0].offset, parts[0].bytes), (0, len));
        assert_eq!(std::fs::read(&backups[0]).unwrap().len() as u64, len);
        assert_eq!(std::fs::metadata(&second).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(&first).unwrap().len(), len);
    }
}
