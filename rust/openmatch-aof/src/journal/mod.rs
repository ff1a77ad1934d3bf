//! The journal: the one owner of the write path.
//!
//! A [`Journal`] owns an AOF directory's [`AofWriter`] and the [`State`]
//! that its log adds up to. Every operation goes through it, in this order:
//!
//! 1. **judged**: it must fit the database schema ([`crate::store_fit`]) and
//!    keep the state's invariants ([`State::try_apply`]) *as the state will
//!    be when it applies*, i.e. after every operation admitted before it,
//!    written or not;
//! 2. **applied and queued together**, under one lock, so that the state's
//!    order of application is the log's order;
//! 3. **acknowledged** once the writer's fsync policy is met (group commit
//!    across threads).
//!
//! **Write-ahead.** Nothing outside the journal sees an operation before it
//! is acknowledged: a reader ([`Journal::read`]) waits, under the lock,
//! until everything applied is acknowledged; the database's changes
//! ([`Journal::take_changes`]) and the state's image ([`Journal::image`])
//! wait until it is durable. A failed write fails the writer for good, and
//! from then on every read fails too: the state is never shown ahead of
//! the log.
//!
//! **One rule.** Replay ([`replay`]) applies with the same
//! [`State::try_apply`], so a log this journal wrote always replays, and a
//! log that breaks the invariants anyway (written by another program) stops
//! recovery at the first operation that does, naming it.
//!
//! Nothing here can be interrupted halfway by the caller: an append is
//! judged, applied and queued in one critical section, and no caller code
//! runs inside it (from Python, the GIL is released for the whole call).
//!
//! As the engine uses it (a longer version: `examples/engine_journal.rs`):
//!
//! ```
//! use openmatch_aof::journal::{Journal, JournalError};
//! use openmatch_aof::state::State;
//! use openmatch_aof::state_image::decode_image;
//! use openmatch_aof::writer::WriterOptions;
//! use openmatch_aof::{AofOperation, Asset, EpochId, EpochPhase, UserId};
//! use rust_decimal::Decimal;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (journal, _) = Journal::open(dir.path(), WriterOptions::default(), State::new())?;
//! let user = UserId(uuid::Uuid::from_u128(7));
//! let usdt: Asset = "USDT".into();
//! journal.append(AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Collect))?;
//! journal.append(AofOperation::BalanceUpdated(user, usdt.clone(), Decimal::TEN, Decimal::ZERO))?;
//! // Refused before anything is written: a balance may not go below zero.
//! let negative = AofOperation::BalanceUpdated(user, usdt, -Decimal::ONE, Decimal::ZERO);
//! assert!(matches!(journal.append(negative), Err(JournalError::Refused { .. })));
//! let (_, image) = journal.image()?; // a snapshot, once durable
//! journal.close()?;
//!
//! // Recovery: the snapshot, then the log after it.
//! let base = State::from_snapshot(decode_image(&image)?)?;
//! let (journal, replayed) = Journal::open(dir.path(), WriterOptions::default(), base)?;
//! assert_eq!(replayed.operations, 0);
//! assert_eq!(journal.read(|s| s.balance(user, "USDT").map(|b| b.available))?, Some(Decimal::TEN));
//! # Ok(())
//! # }
//! ```

mod replay;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use replay::{replay, replay_with_limit, LogViolation, Replayed};

use crate::codec::{encode_run_into, BatchError, BoundedFrames, EncodeError};
use crate::scanner::{OutcomeKind, ScanError};
use crate::spare::Spares;
use crate::state::{Changes, State, Violation};
use crate::state_image::encode_image;
use crate::store_fit::check_fits_store;
use crate::types::AofOperation;
use crate::writer::{AofWriter, WriterError, WriterOptions, WriterStats};

/// Why the journal did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The writer's error: I/O, a failed writer, a closed one, a lock held
    /// by another process.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// A value the database schema cannot hold exactly; nothing was appended.
    #[error("operation {index} of the batch: {reason}; nothing was appended")]
    Unfit {
        /// The operation's place in the batch.
        index: usize,
        /// What does not fit.
        reason: String,
    },
    /// An operation that would break an invariant; nothing was appended.
    #[error("operation {index} of the batch is refused, nothing was appended: {violation}")]
    Refused {
        /// The operation's place in the batch.
        index: usize,
        /// The invariant it breaks.
        violation: Violation,
    },
    /// The operation cannot be encoded (a payload past the frame limit).
    #[error("operation {index} of the batch: {source}; nothing was appended")]
    Encode {
        /// The operation's place in the batch.
        index: usize,
        /// Why it cannot be encoded.
        source: EncodeError,
    },
    /// The log cannot be read to its end.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Recovery cannot produce a trustworthy state from this directory.
    #[error("cannot recover {}: {detail}", dir.display())]
    Unrecoverable {
        /// The AOF directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// The log holds an operation that breaks the invariants.
    #[error(transparent)]
    Violation(#[from] Box<LogViolation>),
    /// One of the journal's own invariants does not hold: a bug, reported
    /// as an error rather than a panic.
    #[error("journal invariant broken (a bug, please report it): {0}")]
    Broken(String),
}

/// Batches of at least this many operations are encoded on a thread of
/// their own while they are judged (below it, the thread costs more than
/// it saves).
const OVERLAP_FROM: usize = 4096;

/// Operations per chunk of an overlapped batch: large enough that the
/// hand-over costs nothing, small enough that judging starts early.
const OVERLAP_CHUNK: usize = 1024;

/// A chunk of a batch as its judging gets it: its operations, the length
/// of each one's frame (in the batch's frames), and the first operation of
/// the chunk that does not fit or cannot be encoded (none has a length from
/// it on).
type EncodedChunk = (
    Vec<AofOperation>,
    Vec<usize>,
    Option<(usize, BatchError<String>)>,
);

/// Whether a batch of `total` operations is encoded beside its judging:
/// a large batch, and a core for the encoder beside the judge's. `cores`
/// is asked only for a large batch (on Linux it reads cgroup files).
fn overlaps(total: usize, cores: impl FnOnce() -> usize) -> bool {
    total >= OVERLAP_FROM && cores() > 1
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Frame buffers kept: enough for the batches of a few threads at once.
const SPARE_FRAME_BUFFERS: usize = 4;

/// Chunk buffers kept: those an overlapped batch has in flight (the
/// encoder's, the channel's, the judge's).
const SPARE_CHUNKS: usize = 8;

/// The journal's error for an operation the encoding refused.
fn unfit(index: usize, e: BatchError<String>) -> JournalError {
    match e {
        BatchError::Check(reason) => JournalError::Unfit { index, reason },
        BatchError::Encode(source) => JournalError::Encode { index, source },
    }
}

/// The durable, validated write path of one AOF directory. `Send + Sync`:
/// share it between appending threads (their appends share fsyncs).
#[derive(Debug)]
pub struct Journal {
    writer: AofWriter,
    /// The state with every admitted operation applied, in log order.
    state: Mutex<State>,
    /// Batches encoded on a thread of their own beside their judging.
    overlapped: AtomicU64,
    /// Buffers a batch's frames are encoded into, kept between batches.
    frame_buffers: Spares<u8>,
    /// Buffers the chunks of an overlapped batch are made in.
    chunk_buffers: Spares<AofOperation>,
}

impl Journal {
    /// Opens `dir` (creating it if needed): the writer takes the directory
    /// lock and cuts a torn tail, then the log from `base`'s position to
    /// its end is replayed onto `base` with the journal's own rule. `base`
    /// is an empty state or a snapshot (a state image or the database's
    /// rows) whose position is still in the log.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: WriterOptions,
        base: State,
    ) -> Result<(Journal, Replayed), JournalError> {
        let dir = dir.as_ref();
        // The writer's own frame bound: what it accepts, replay reads.
        let max_payload = opts.max_payload;
        let writer = AofWriter::open(dir, opts)?;
        let end = writer.position();
        if base.position() > end {
            return Err(JournalError::Unrecoverable {
                dir: dir.to_owned(),
                detail: format!(
                    "the snapshot covers AOF position {}, past the AOF's end at {end}: this AOF \
                     is not the one the snapshot came from, or its tail was lost",
                    base.position()
                ),
            });
        }
        let mut state = base;
        let replayed = replay_with_limit(dir, &mut state, None, max_payload)?;
        // Past the limit in an older segment is what the writer reports in
        // the last one: a limit to raise, not damage.
        if let Some(e) = replay::oversized_stop(&replayed.outcome) {
            return Err(e);
        }
        if replayed.outcome.kind != OutcomeKind::Clean {
            // The writer cut a torn tail at the end when it opened, so any
            // stop before the end is damage (or another process writing).
            return Err(JournalError::Unrecoverable {
                dir: dir.to_owned(),
                detail: replayed.outcome.describe(),
            });
        }
        if replayed.position != end {
            return Err(JournalError::Unrecoverable {
                dir: dir.to_owned(),
                detail: format!(
                    "replay ended at position {}, but the log ends at {end}",
                    replayed.position
                ),
            });
        }
        Ok((
            Journal {
                writer,
                state: Mutex::new(state),
                overlapped: AtomicU64::new(0),
                frame_buffers: Spares::new(SPARE_FRAME_BUFFERS),
                chunk_buffers: Spares::new(SPARE_CHUNKS),
            },
            replayed,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock cannot leave the state half-applied in a
        // way the lock could hide: apply never panics (it is total), and
        // the only other code under it reads. So a poisoned lock is used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one operation; returns its position (the log position just
    /// past its frame) once the fsync policy is met. A refused operation
    /// writes nothing.
    pub fn append(&self, op: AofOperation) -> Result<u64, JournalError> {
        self.append_many(vec![op])
    }

    /// Appends operations as one contiguous run of the log, all or nothing:
    /// the first that does not fit the schema or would break an invariant
    /// (counting the ones before it in the batch) fails the call and
    /// nothing is written or applied. Returns the position after the last,
    /// once the fsync policy is met; an empty batch returns the current end.
    pub fn append_many(&self, ops: Vec<AofOperation>) -> Result<u64, JournalError> {
        let total = ops.len();
        let end = if overlaps(total, available_cores) {
            let mut rest = ops.into_iter();
            self.submit_chunks(total, move |chunk| {
                chunk.extend(rest.by_ref().take(OVERLAP_CHUNK));
            })?
        } else {
            self.submit(ops)?
        };
        self.writer.wait_appended(end)?;
        Ok(end)
    }

    /// As [`Journal::append_many`], taking each operation out of an item
    /// the caller keeps (`take`, a clone): for a large batch the taking is
    /// done on the encoding thread, beside the judging. The Python binding
    /// appends the operation objects of a list this way, without the GIL.
    pub fn append_many_with<T: Sync>(
        &self,
        items: &[T],
        take: impl Fn(&T) -> AofOperation + Sync,
    ) -> Result<u64, JournalError> {
        let total = items.len();
        let end = if overlaps(total, available_cores) {
            let mut rest = items.chunks(OVERLAP_CHUNK);
            let take = &take;
            self.submit_chunks(total, move |chunk| {
                if let Some(items) = rest.next() {
                    chunk.extend(items.iter().map(take));
                }
            })?
        } else {
            self.submit(items.iter().map(&take).collect())?
        };
        self.writer.wait_appended(end)?;
        Ok(end)
    }

    /// Judges, applies and queues `ops`, encoded first; returns the
    /// position after the last. The caller waits for it
    /// ([`AofWriter::wait_appended`]).
    fn submit(&self, ops: Vec<AofOperation>) -> Result<u64, JournalError> {
        let total = ops.len();
        if total == 0 {
            let _state = self.lock(); // the end, with no append half done
            return Ok(self.writer.position());
        }
        let mut frames = self.frames();
        let mut lengths = Vec::with_capacity(total);
        let refusal = encode_run_into(&ops, check_fits_store, &mut frames, &mut lengths).err();
        let mut state = self.lock();
        let judged = self.judge(&mut state, std::iter::once((ops, lengths, refusal)), total);
        self.queue(state, judged, frames, total)
    }

    /// As [`Journal::submit`] for a large batch of `total` operations,
    /// made chunk by chunk by `fill` (which adds the next chunk's
    /// operations to the empty vector it is given, or none once all are
    /// made): the chunks are made and encoded on a thread of their own
    /// while this thread judges and applies the ones already encoded, so
    /// the two costs overlap instead of adding up. The outcome is the same
    /// (the frames, the state, the first refusal).
    fn submit_chunks(
        &self,
        total: usize,
        mut fill: impl FnMut(&mut Vec<AofOperation>) + Send,
    ) -> Result<u64, JournalError> {
        self.overlapped.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|scope| {
            // Bounded: the encoder runs at most a few chunks ahead.
            let (tx, rx) = std::sync::mpsc::sync_channel::<EncodedChunk>(4);
            let encoder = scope.spawn(move || {
                // The whole batch's frames, one after the other, in one
                // buffer: the writer takes it as it is.
                let mut frames = self.frames();
                loop {
                    let mut chunk = self.chunk_buffers.take();
                    fill(&mut chunk);
                    if chunk.is_empty() {
                        self.chunk_buffers.give(chunk);
                        break;
                    }
                    let mut lengths = Vec::with_capacity(chunk.len());
                    let refusal =
                        encode_run_into(&chunk, check_fits_store, &mut frames, &mut lengths).err();
                    let refused = refusal.is_some();
                    // A send fails once the judge has refused the batch.
                    if tx.send((chunk, lengths, refusal)).is_err() || refused {
                        break;
                    }
                }
                frames
            });
            let mut state = self.lock();
            let judged = self.judge(&mut state, rx.into_iter(), total);
            // A panicking encoder drops its sender: the chunks then end
            // early, which `judge` refuses. Joined here, so its panic ends
            // with it rather than in the scope (and in the caller).
            let (judged, frames) = match encoder.join() {
                Ok(frames) => (judged, frames),
                Err(_) => {
                    if judged.is_ok() {
                        state.rollback();
                    }
                    let broken = "the encoding thread panicked after the last chunk";
                    (
                        Err(JournalError::Broken(broken.into())),
                        BoundedFrames::default(),
                    )
                }
            };
            self.queue(state, judged, frames, total)
        })
    }

    /// Judges and applies to `state`, in order, the chunks of one batch of
    /// `total` operations, each with the lengths of its frames; returns the
    /// log's end the batch starts at and the position after its last. The first operation that does not fit,
    /// cannot be encoded or would break an invariant fails the batch, and
    /// the state is rolled back to before it.
    fn judge(
        &self,
        state: &mut State,
        chunks: impl Iterator<Item = EncodedChunk>,
        total: usize,
    ) -> Result<(u64, u64), JournalError> {
        let base = self.writer.position();
        if state.position() > base {
            return Err(JournalError::Broken(format!(
                "the state is at position {} past the log's end {base}",
                state.position()
            )));
        }
        state.savepoint();
        let mut at = base;
        let mut index = 0;
        for (mut ops, lengths, refusal) in chunks {
            let count = ops.len();
            // The operations before a refused one are judged first: the
            // batch fails at its first refusal, whichever the rule. (They
            // are the ones with a length.)
            for (i, (op, len)) in ops.drain(..).zip(&lengths).enumerate() {
                at += *len as u64;
                if let Err(violation) = state.try_apply_owned(op, at) {
                    state.rollback();
                    return Err(JournalError::Refused {
                        index: index + i,
                        violation,
                    });
                }
            }
            if ops.capacity() >= OVERLAP_CHUNK {
                self.chunk_buffers.give(ops);
            }
            if let Some((i, e)) = refusal {
                state.rollback();
                return Err(unfit(index + i, e));
            }
            index += count;
        }
        if index != total {
            state.rollback();
            return Err(JournalError::Broken(format!(
                "the batch's encoding stopped after {index} of its {total} operations"
            )));
        }
        Ok((base, at))
    }

    /// Queues a judged batch's `frames` (`records` of them, from and to the
    /// positions `judged` gives), still under the state's lock so that the
    /// log's order is the state's; releases the batch's savepoint, or rolls
    /// it back if it cannot be queued. Gives the frame buffer back.
    fn queue(
        &self,
        mut state: MutexGuard<'_, State>,
        judged: Result<(u64, u64), JournalError>,
        mut frames: BoundedFrames,
        records: usize,
    ) -> Result<u64, JournalError> {
        let queued = match judged {
            Err(e) => Err(e),
            Ok((base, at)) if base + frames.len() as u64 != at => {
                state.rollback();
                Err(JournalError::Broken(format!(
                    "the batch's frames end at {}, its operations at {at}",
                    base + frames.len() as u64
                )))
            }
            Ok((_, at)) => match self.writer.submit_frames_owned(&mut frames, records as u64) {
                Ok(end) if end == at => {
                    state.release();
                    Ok(end)
                }
                Ok(end) => {
                    // Queued, so it will be written: the state cannot be
                    // rolled back to match. Every later read fails on this.
                    state.release();
                    Err(JournalError::Broken(format!(
                        "the writer queued the batch to end at {end}, the journal expected {at}"
                    )))
                }
                Err(e) => {
                    state.rollback();
                    Err(e.into())
                }
            },
        };
        drop(state);
        self.frame_buffers.give(frames.into_buffer());
        queued
    }

    /// An empty frame buffer, a kept one if there is one, bounded by the
    /// writer's own bound (what it accepts, its reopening reads).
    fn frames(&self) -> BoundedFrames {
        BoundedFrames::in_buffer(self.frame_buffers.take(), self.max_payload())
    }

    /// Runs `f` on the state once every operation in it is acknowledged
    /// (as the fsync policy promises an append), holding the lock so that
    /// nothing is applied meanwhile. Appends wait for as long as `f` runs.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, JournalError> {
        let state = self.lock();
        self.writer.wait_appended(state.position())?;
        Ok(f(&state))
    }

    /// The changes since the previous call, for the database: only once
    /// the log behind them is durable (fsynced under every policy), so the
    /// database is never ahead of the log.
    ///
    /// The changes are taken under the lock and the wait for durability
    /// runs after it is released, so appends go on during the fsync; the
    /// changes go nowhere until it is done. Should it fail, they are
    /// dropped: the writer has failed for good, and recovery replays them
    /// from the log.
    pub fn take_changes(&self) -> Result<Changes, JournalError> {
        let changes = self.lock().take_changes();
        self.writer.wait_durable(changes.position)?;
        Ok(changes)
    }

    /// The state's image ([`crate::state_image`]) and the position it
    /// covers, once the log up to it is durable.
    pub fn image(&self) -> Result<(u64, Vec<u8>), JournalError> {
        // Exported under the lock (one position), made durable and encoded
        // after it, while appends go on.
        let snapshot = self.lock().export();
        self.writer.wait_durable(snapshot.position)?;
        Ok((snapshot.position, encode_image(&snapshot)))
    }

    /// The position just past the last acknowledged operation, which is
    /// what [`Journal::read`] shows.
    pub fn position(&self) -> Result<u64, JournalError> {
        self.read(State::position)
    }

    /// The writer: its positions, statistics, rotation and close.
    pub fn writer(&self) -> &AofWriter {
        &self.writer
    }

    /// The writer's bound on a frame's payload: what it accepts, its own
    /// reopening reads.
    fn max_payload(&self) -> u32 {
        self.writer.options().max_payload
    }

    /// How many batches were encoded on a thread of their own while they
    /// were judged (those of at least 4,096 operations, given two cores).
    pub fn overlapped_batches(&self) -> u64 {
        self.overlapped.load(Ordering::Relaxed)
    }

    /// The writer's counters.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Writes and fsyncs what is queued, then closes the writer (see
    /// [`AofWriter::close`]). Idempotent.
    pub fn close(&self) -> Result<(), JournalError> {
        Ok(self.writer.close()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_overlaps_from_the_threshold_given_a_second_core() {
        assert!(overlaps(OVERLAP_FROM, || 2));
        assert!(!overlaps(OVERLAP_FROM - 1, || 2));
        assert!(!overlaps(OVERLAP_FROM, || 1));
        assert!(overlaps(10 * OVERLAP_FROM, || 8));
        let small = overlaps(0, || unreachable!("the cores asked for a small batch"));
        assert!(!small);
    }
}
