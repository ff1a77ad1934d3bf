//! Replay: the log applied to a state with the journal's own rule.

use std::path::{Path, PathBuf};

use crate::codec::DEFAULT_MAX_PAYLOAD_LEN;
use crate::scanner::{OutcomeKind, ScanOptions, ScanOutcome, Scanner};
use crate::state::{State, Violation};
use crate::writer::WriterError;

use super::JournalError;

/// What a replay applied, and where and why it stopped.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The position it started at (the state's position before).
    pub from: u64,
    /// The position after the last applied operation.
    pub position: u64,
    /// Operations applied.
    pub operations: u64,
    /// Segment files read.
    pub segments: u64,
    /// Where the scan stopped: clean, a torn tail or corruption, with the
    /// segment and offset. When `until` stopped the replay, the scan's
    /// place at that moment (clean).
    pub outcome: ScanOutcome,
}

/// An operation in the log that breaks the state's invariants: written by
/// another program or an older version (the journal refuses such an
/// operation before it is written).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{}: the operation at position {} breaks the state's invariants: {violation}. Recovery \
     stops there. To rebuild the state before it, run `openmatch-persistence recover DATA_DIR \
     --until {}`: that operation and everything after it are moved to a backup file, not deleted",
    dir.display(), violation.position, violation.position
)]
pub struct LogViolation {
    /// The AOF directory (or segment) replayed.
    pub dir: PathBuf,
    /// The first violation: its kind, entity, and the operation's position.
    pub violation: Violation,
    /// Where that operation's frame starts: the log would end here without it.
    pub frame_start: u64,
}

/// A scan's stop at a length field above the reader's limit, as the
/// writer's own error for it (the one a writer opening the last segment
/// gives): a limit to raise, which no caller may take for damage.
pub(crate) fn oversized_stop(outcome: &ScanOutcome) -> Option<JournalError> {
    let (length, limit) = outcome.oversized()?;
    Some(JournalError::Writer(WriterError::Oversized {
        path: outcome.segment.clone()?,
        offset: outcome.offset,
        length,
        limit,
    }))
}

/// Applies the log at `path` (an AOF directory or one segment) to `state`,
/// from the state's position on, with [`State::try_apply`]: the first
/// operation it refuses stops the replay as a [`LogViolation`], with the
/// state as it was just before that operation. With `until`, the replay
/// stops before the operation whose position is `until` (it must be one).
/// A torn tail, an oversized frame or corruption stops the scan; the caller
/// decides what that means (see [`Replayed::outcome`]).
pub fn replay(
    path: &Path,
    state: &mut State,
    until: Option<u64>,
) -> Result<Replayed, JournalError> {
    replay_with_limit(path, state, until, DEFAULT_MAX_PAYLOAD_LEN)
}

/// [`replay`] with the reader's frame limit raised (or lowered) to
/// `max_payload` bytes: a log written by a writer with a higher
/// [`crate::WriterOptions::max_payload`] stops a default replay as
/// oversized, and replays whole with its limit.
pub fn replay_with_limit(
    path: &Path,
    state: &mut State,
    until: Option<u64>,
    max_payload: u32,
) -> Result<Replayed, JournalError> {
    let from = state.position();
    let options = ScanOptions {
        max_payload,
        ..ScanOptions::default()
    };
    let mut scanner = Scanner::open(path, Some(from), options)?;
    let mut operations = 0u64;
    let mut frame_start = from;
    let mut stopped_at_until = false;
    while let Some((end, op)) = scanner.next_op()? {
        if let Some(u) = until {
            if end == u {
                stopped_at_until = true;
                break;
            }
            if end > u {
                return Err(JournalError::Unrecoverable {
                    dir: path.to_owned(),
                    detail: format!(
                        "--until {u}: no operation has that position (the operation from \
                         {frame_start} to {end} spans it); use a position that recovery or \
                         `aof verify` names"
                    ),
                });
            }
        }
        if let Err(violation) = state.try_apply_owned(op, end) {
            return Err(JournalError::Violation(Box::new(LogViolation {
                dir: path.to_owned(),
                violation,
                frame_start,
            })));
        }
        operations += 1;
        frame_start = end;
    }
    if let (Some(u), false) = (until, stopped_at_until) {
        // Short of `until` at a frame past the limit: that is why, not a
        // position that names no operation.
        if let Some(e) = oversized_stop(&scanner.finished_report()?.outcome) {
            return Err(e);
        }
        return Err(JournalError::Unrecoverable {
            dir: path.to_owned(),
            detail: format!(
                "--until {u}: the log from position {from} has no operation at that position \
                 (it ends at {frame_start})"
            ),
        });
    }
    let outcome = if stopped_at_until {
        // The scan did not stop by itself: where `until` stopped it.
        ScanOutcome {
            kind: OutcomeKind::Clean,
            cause: None,
            position: frame_start,
            segment: None,
            segment_start: 0,
            offset: 0,
            tail_bytes: 0,
        }
    } else {
        scanner.finished_report()?.outcome
    };
    Ok(Replayed {
        from,
        position: frame_start,
        operations,
        segments: scanner.stats().segments,
        outcome,
    })
}
