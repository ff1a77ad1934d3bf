//! The durable AOF writer: segments, fsync policies, group commit.
//!
//! An [`AofWriter`] owns one AOF directory (see [`crate::segment`]): it takes
//! an exclusive lock on it (`lock.rs`), finds where the last segment's frames
//! end and cuts a torn tail (`recover.rs`), then appends frames at the end.
//!
//! **Positions.** Every append returns the *end position* of its record: the
//! position (global byte offset in the logical AOF) just past its frame. It
//! grows strictly across appends and segments; the record lives in the
//! segment with the greatest start below it. "Position P is durable" means
//! every record whose end is <= P survives a crash.
//!
//! **Policies** ([`FsyncPolicy`], Redis' `appendfsync`): `always` returns
//! after an fdatasync covering the record; `everysec` and `no` return after
//! the record is written to the kernel. See `docs/fsync-policies.md`.
//!
//! **Failure.** A failed write or fsync fails the writer for good: the
//! append that hit it and every waiting and later one get
//! [`WriterError::Failed`]; nothing is retried. Reopen to recover from disk.

mod fault;
mod group_commit;
mod lock;
mod policy;
mod recover;
mod stats;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use fault::{Fault, Gate};
pub use lock::{DirLock, LOCK_FILE_NAME};
pub use policy::{FsyncPolicy, EVERYSEC_INTERVAL};
pub use stats::{WriterStats, FSYNC_BUCKETS_US, LATENCY_WINDOW};

use serde::Serialize;

use crate::codec::{
    encode_frame_into, encode_frame_into_bounded, BoundedFrames, EncodeError,
    DEFAULT_MAX_PAYLOAD_LEN,
};
use crate::dir_fsync::DirFsyncs;
use crate::scanner::{ScanError, StopCause};
use crate::segment::{
    covered_count, create_dir_durably, delete_segment_durably, list_segments, segment_file_name,
};
use crate::types::AofOperation;
use group_commit::{Current, Goal, Shared, State};
use stats::Counters;

/// Why the writer could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// Another writer holds the directory's lock.
    #[error("{} is locked by another writer", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    #[error("the writer has failed and accepts no appends ({reason}); reopen it to recover")]
    /// A write or fsync failed earlier; the writer accepts nothing more.
    Failed {
        /// The first failure.
        reason: String,
    },
    #[error("{}: the writer is closed", dir.display())]
    /// The writer was closed.
    Closed {
        /// Its directory.
        dir: PathBuf,
    },
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// To what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The last segment is damaged where a crash leaves no damage
    /// ([`crate::tail::classify_stop`]); nothing was cut.
    #[error("{}: offset {offset}: corrupt, refusing to open: {cause}", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the bad frame starts in the segment.
        offset: u64,
        /// What is wrong.
        cause: StopCause,
    },
    /// A length field in the last segment is above
    /// [`WriterOptions::max_payload`] ([`crate::tail::classify_stop`]), or
    /// in an older one as [`crate::journal::Journal::open`] replays it: a
    /// frame longer than this writer accepts, or a damaged length. Nothing
    /// was cut; a writer opened with a higher limit reads on.
    #[error(
        "{}: offset {offset}: oversized (limit {limit}): the length field says {length} bytes; \
         refusing to open, nothing was cut; if frames that long are real, open with a higher \
         limit (WriterOptions::max_payload, max_payload=)",
        path.display()
    )]
    Oversized {
        /// The segment.
        path: PathBuf,
        /// Where the frame starts in the segment.
        offset: u64,
        /// Its length field.
        length: u32,
        /// The limit it is over.
        limit: u32,
    },
    /// The last segment could not be scanned.
    #[error("{0}")]
    Scan(#[from] ScanError),
    /// An operation cannot be encoded.
    #[error("{0}")]
    Encode(#[from] EncodeError),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
}

impl WriterError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> WriterError {
        WriterError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// How a writer behaves; [`WriterOptions::default`] is `always` with pure
/// group commit (no added latency).
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// When an append's bytes reach stable storage.
    pub fsync: FsyncPolicy,
    /// How long a leader waits for more appends before its write+fsync.
    pub gather: Gather,
    /// The gathering window ends early once this many bytes are pending.
    pub max_batch_bytes: usize,
    /// The bound on a frame's payload when the last segment is checked.
    pub max_payload: u32,
    /// Start a new segment once the one appended to holds at least this
    /// many bytes (checked after each append), so that segments close on
    /// their own and compaction, here or in a process following the log,
    /// can delete them. `None`: only [`AofWriter::rotate`] rotates.
    pub rotate_bytes: Option<u64>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            fsync: FsyncPolicy::Always,
            gather: Gather::Adaptive,
            max_batch_bytes: 4 << 20,
            max_payload: DEFAULT_MAX_PAYLOAD_LEN,
            rotate_bytes: None,
        }
    }
}

/// How a leader gathers appends before its write+fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gather {
    /// Take what is pending, never wait: a batch is what arrived while the
    /// previous fsync was in flight.
    Off,
    /// Wait up to this long (or until `max_batch_bytes` are pending).
    Window(Duration),
    /// The default. Wait for as many records as the previous batch had, at
    /// most half the recent fsync latency (and never more than
    /// [`MAX_ADAPTIVE_WAIT`]). A lone appender never waits (its previous
    /// batch was itself); N appenders converge to batches of about N,
    /// because those woken by one fsync are given the time to come back
    /// before the next starts.
    Adaptive,
}

/// The upper bound of an adaptive gathering wait.
pub const MAX_ADAPTIVE_WAIT: Duration = Duration::from_millis(2);

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The segment appended to, and its start position.
    pub segment: PathBuf,
    /// Its start position.
    pub segment_start: u64,
    /// The position the next append starts at.
    pub end: u64,
    /// Bytes of torn tail cut from the last segment.
    pub truncated_bytes: u64,
    /// The file holding exactly those bytes, written before the cut.
    pub torn_tail_backup: Option<PathBuf>,
}

/// The durable writer of one AOF directory. `Send + Sync`: share it (in an
/// `Arc`) between appending threads; that is how group commit batches.
#[derive(Debug)]
pub struct AofWriter {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<DirLock>>,
    /// Held by whatever changes the set of segment files (rotation,
    /// deletion, close), taken before the state lock: a deletion's I/O then
    /// never overlaps a rotation, while appends go on.
    segments_change: Mutex<()>,
    report: OpenReport,
}

impl AofWriter {
    /// Opens (creating if needed) the AOF directory `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: WriterOptions) -> Result<AofWriter, WriterError> {
        let dir = dir.as_ref().to_owned();
        if opts.max_batch_bytes == 0 {
            return Err(WriterError::Invalid(
                "max_batch_bytes must be positive".into(),
            ));
        }
        if opts.rotate_bytes == Some(0) {
            return Err(WriterError::Invalid("rotate_bytes must be positive".into()));
        }
        create_dir_durably(&dir).map_err(|e| WriterError::io("create directory", &dir, e))?;
        let dir_lock = DirLock::acquire(&dir)?;
        let segments = list_segments(&dir).map_err(|e| WriterError::io("list", &dir, e))?;
        let mut dir_fsyncs = DirFsyncs::default();
        let (start, path, file, valid_len, truncated, backup) = match segments.last() {
            None => {
                let path = dir.join(segment_file_name(0));
                let file = recover::create_segment(&dir, &path, &mut dir_fsyncs)?;
                (0, path, file, 0, 0, None)
            }
            Some(last) => {
                let (file, tail) = recover::open_last_segment(
                    &dir,
                    &last.path,
                    opts.max_payload,
                    &mut dir_fsyncs,
                )?;
                (
                    last.start,
                    last.path.clone(),
                    file,
                    tail.valid_len,
                    tail.torn_bytes,
                    tail.backup,
                )
            }
        };
        let end = start + valid_len;
        let mut segment_starts: Vec<u64> = segments.iter().map(|s| s.start).collect();
        if segment_starts.is_empty() {
            segment_starts.push(0);
        }
        let mut counters = Counters::default();
        counters.truncated_on_open = truncated;
        counters.dir_fsyncs = dir_fsyncs.done() as u64;
        let report = OpenReport {
            segment: path.clone(),
            segment_start: start,
            end,
            truncated_bytes: truncated,
            torn_tail_backup: backup,
        };
        let shared = Arc::new(Shared {
            dir,
            opts: opts.clone(),
            state: Mutex::new(State {
                pending: Vec::with_capacity(64 << 10),
                spare: Vec::with_capacity(64 << 10),
                pending_records: 0,
                end,
                written: end,
                durable: end,
                sync_wanted: 0,
                gather_want: u64::MAX,
                pace: Default::default(),
                leader: false,
                failed: None,
                closed: false,
                current: Current {
                    start,
                    path,
                    file: Arc::new(file),
                },
                segment_starts,
                counters,
                waiters: Vec::new(),
                progress_waiters: 0,
            }),
            progress: Condvar::new(),
            halt: Condvar::new(),
            written_at: AtomicU64::new(end),
            durable_at: AtomicU64::new(end),
            batch_full: Condvar::new(),
            faults: Default::default(),
        });
        let syncer = match opts.fsync.background_interval() {
            Some(interval) => {
                let s = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("aof-everysec".into())
                    .spawn(move || s.background_fsync(interval))
                    .map_err(|e| WriterError::io("spawn fsync thread for", &shared.dir, e))?;
                Some(handle)
            }
            None => None,
        };
        Ok(AofWriter {
            shared,
            syncer: Mutex::new(syncer),
            lock: Mutex::new(Some(dir_lock)),
            segments_change: Mutex::new(()),
            report,
        })
    }

    /// The AOF directory it owns.
    pub fn directory(&self) -> &Path {
        &self.shared.dir
    }

    /// Its fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.shared.opts.fsync
    }

    /// The options it was opened with.
    pub fn options(&self) -> &WriterOptions {
        &self.shared.opts
    }

    /// What opening found (the torn bytes cut, where appends go).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Appends one operation; returns its end position once the policy is
    /// satisfied.
    pub fn append(&self, op: &AofOperation) -> Result<u64, WriterError> {
        let mut frame = Vec::with_capacity(512);
        encode_frame_into(op, &mut frame)?;
        self.append_frames(&frame, 1)
    }

    /// Appends any serde value as one frame, framed exactly as an
    /// [`AofOperation`] is (one framing implementation:
    /// [`crate::codec::encode_frame_into_bounded`]), so that the engine can
    /// append its own types, which serialize to the same bytes, without
    /// converting them into this crate's copies.
    ///
    /// ```
    /// use openmatch_aof::writer::{AofWriter, WriterOptions};
    /// use openmatch_aof::{AofOperation, EpochId, EpochPhase};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("doc-append-{}", std::process::id()));
    /// let writer = AofWriter::open(&dir, WriterOptions::default())?;
    /// // The engine's own enum, declared as the engine declares it.
    /// #[derive(serde::Serialize)]
    /// enum EngineOp { A, B, C, D, E, EpochAdvanced(u64, EpochPhase) }
    /// let end = writer.append_value(&EngineOp::EpochAdvanced(7, EpochPhase::Seal))?;
    /// let same = AofOperation::EpochAdvanced(EpochId(7), EpochPhase::Seal);
    /// assert_eq!(end, openmatch_aof::encode_frame(&same)?.len() as u64);
    /// writer.close()?;
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn append_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<u64, WriterError> {
        let mut frame = Vec::with_capacity(512);
        encode_frame_into_bounded(value, &mut frame, DEFAULT_MAX_PAYLOAD_LEN)?;
        self.append_frames(&frame, 1)
    }

    /// Appends operations as one batch (contiguous in the log); returns the
    /// end position of the last one. Encoding fails the call before
    /// anything is appended.
    pub fn append_many<'a>(
        &self,
        ops: impl IntoIterator<Item = &'a AofOperation>,
    ) -> Result<u64, WriterError> {
        let mut frames = Vec::new();
        let mut count = 0;
        for op in ops {
            encode_frame_into(op, &mut frames)?;
            count += 1;
        }
        self.append_frames(&frames, count)
    }

    /// Appends `records` already-encoded whole frames, contiguously. The
    /// caller guarantees `frames` is exactly that (the binding encodes with
    /// [`encode_frame_into`]); an empty batch returns the current end.
    pub fn append_frames(&self, frames: &[u8], records: u64) -> Result<u64, WriterError> {
        let mut st = self.shared.lock();
        let end = self.shared.enqueue(&mut st, frames, records)?;
        let goal = self.append_goal();
        self.shared.wait_for(st, end, goal)?;
        self.rotate_if_full()?;
        Ok(end)
    }

    /// Queues frames without waiting; [`AofWriter::wait_appended`] on the
    /// returned position gives the policy's guarantee. For pipelining
    /// (asyncio): the order of positions is the order of `submit` calls.
    pub fn submit_frames(&self, frames: &[u8], records: u64) -> Result<u64, WriterError> {
        let mut st = self.shared.lock();
        self.shared.enqueue(&mut st, frames, records)
    }

    /// As [`AofWriter::submit_frames`], for frames the caller hands over:
    /// queued without a copy when nothing else is pending, and not read
    /// again when their bound is within the writer's. `frames` comes back
    /// empty, holding memory to reuse (the writer's, when it took the
    /// caller's).
    pub fn submit_frames_owned(
        &self,
        frames: &mut BoundedFrames,
        records: u64,
    ) -> Result<u64, WriterError> {
        let mut st = self.shared.lock();
        self.shared.enqueue_owned(&mut st, frames, records)
    }

    /// Waits until the record ending at `position` has what the policy
    /// promises an append (durable for `always`, written otherwise).
    pub fn wait_appended(&self, position: u64) -> Result<u64, WriterError> {
        self.wait(position, self.append_goal())?;
        self.rotate_if_full()?;
        Ok(position)
    }

    /// Rotates if the segment appended to has reached
    /// [`WriterOptions::rotate_bytes`]. Checked again under the lock that
    /// rotation takes: appenders that saw the same full segment rotate once.
    fn rotate_if_full(&self) -> Result<(), WriterError> {
        let Some(limit) = self.shared.opts.rotate_bytes else {
            return Ok(());
        };
        let full = |w: &Self| {
            let st = w.shared.lock();
            st.end - st.current.start >= limit
        };
        if !full(self) {
            return Ok(());
        }
        let _change = self.segments_change();
        if full(self) {
            self.rotate_locked()?;
        }
        Ok(())
    }

    /// Waits until everything up to `position` is durable, fsyncing if
    /// needed (under any policy).
    pub fn wait_durable(&self, position: u64) -> Result<u64, WriterError> {
        self.wait(position, Goal::Durable)
    }

    fn append_goal(&self) -> Goal {
        if self.shared.opts.fsync.append_waits_for_fsync() {
            Goal::Durable
        } else {
            Goal::Written
        }
    }

    fn wait(&self, position: u64, goal: Goal) -> Result<u64, WriterError> {
        let st = self.shared.lock();
        if position > st.end {
            return Err(WriterError::Invalid(format!(
                "position {position} is past the end of the log ({})",
                st.end
            )));
        }
        self.shared.wait_for(st, position, goal)?;
        Ok(position)
    }

    /// The end position of the last appended record (not necessarily
    /// written yet).
    pub fn position(&self) -> u64 {
        self.shared.lock().end
    }

    /// Everything below this position is written to the kernel.
    pub fn written_position(&self) -> u64 {
        self.shared.lock().written
    }

    /// Everything below this position is on stable storage.
    pub fn durable_position(&self) -> u64 {
        self.shared.lock().durable
    }

    /// The start position of the segment appended to.
    pub fn segment_start(&self) -> u64 {
        self.shared.lock().current.start
    }

    /// The segment file and offset in it where the byte just before
    /// `position` lives, i.e. the segment holding the record that ends at
    /// `position` (a record never spans segments).
    pub fn locate(&self, position: u64) -> Result<(PathBuf, u64), WriterError> {
        let st = self.shared.lock();
        if position == 0 || position > st.end {
            return Err(WriterError::Invalid(format!(
                "position {position} is not the end of an appended record (log ends at {})",
                st.end
            )));
        }
        let idx = st.segment_starts.partition_point(|&s| s < position);
        let Some(&start) = idx.checked_sub(1).and_then(|i| st.segment_starts.get(i)) else {
            return Err(WriterError::Invalid(format!(
                "position {position} is not in the log's segments (deleted by compaction?)"
            )));
        };
        Ok((
            self.shared.dir.join(segment_file_name(start)),
            position - start,
        ))
    }

    /// Whether a failed write or fsync stopped it for good.
    pub fn is_failed(&self) -> bool {
        self.shared.lock().failed.is_some()
    }

    /// Why the writer failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failed.clone()
    }

    /// Whether it was closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Its counters and fsync latencies.
    pub fn stats(&self) -> WriterStats {
        self.shared.lock().counters.snapshot()
    }

    /// Starts a new segment at the current end and returns its start.
    ///
    /// Pending appends are written and the old segment fsynced first, then
    /// the new (empty) segment is created and the directory fsynced. A crash
    /// at any point leaves either the old segment last (complete up to what
    /// was written) or, additionally, an empty segment starting at its end:
    /// both read as the same log. If the current segment is empty, it is
    /// kept and its start returned.
    pub fn rotate(&self) -> Result<u64, WriterError> {
        let _change = self.segments_change();
        self.rotate_locked()
    }

    /// [`AofWriter::rotate`], the segments' lock held by the caller.
    fn rotate_locked(&self) -> Result<u64, WriterError> {
        let shared = &*self.shared;
        let st = shared.lock();
        shared.check_usable(&st)?;
        let mut st = shared.take_exclusive(st);
        shared.check_usable(&st)?;
        if st.end == st.current.start {
            return Ok(st.current.start);
        }
        // Write and fsync the old segment as a leader would, whatever the
        // policy: a segment is complete before the next one exists.
        let (guard, wakes) = shared.lead(st, true)?;
        st = guard;
        wakes.now();
        shared.check_usable(&st)?;
        st.leader = true;
        // Appends that arrived during that I/O stay pending: they belong to
        // the new segment, which starts where the written bytes end.
        let new_start = st.written;
        drop(st);
        let path = shared.dir.join(segment_file_name(new_start));
        let mut dir_fsyncs = DirFsyncs::default();
        let created = recover::create_segment(&shared.dir, &path, &mut dir_fsyncs);
        let mut st = shared.lock();
        st.leader = false;
        st.counters.dir_fsyncs += dir_fsyncs.done() as u64;
        let result = match created {
            Ok(file) => {
                st.current = Current {
                    start: new_start,
                    path,
                    file: Arc::new(file),
                };
                st.segment_starts.push(new_start);
                st.counters.rotations += 1;
                Ok(new_start)
            }
            Err(e) => {
                st.failed = Some(e.to_string());
                Err(e)
            }
        };
        shared.publish(&mut st).now();
        result
    }

    /// Writes what is pending, fsyncs (under every policy), stops the
    /// background thread and releases the directory lock. Idempotent. A
    /// failed writer closes without any further I/O.
    pub fn close(&self) -> Result<(), WriterError> {
        self.shared.faults.release_all();
        let _change = self.segments_change();
        let shared = &*self.shared;
        let st = shared.lock();
        let mut st = shared.take_exclusive(st);
        let mut result = Ok(());
        if !st.closed && st.failed.is_none() {
            let needs_io = !st.pending.is_empty() || st.durable < st.written;
            if needs_io {
                match shared.lead(st, true) {
                    Ok((guard, wakes)) => {
                        st = guard;
                        wakes.now();
                    }
                    Err(e) => {
                        result = Err(e);
                        st = shared.lock();
                    }
                }
                st = shared.take_exclusive(st);
            }
        }
        st.closed = true;
        shared.publish(&mut st).now();
        drop(st);
        let handle = self.syncer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            // The thread never panics (no unwrap on its path); if it did,
            // closing still succeeds.
            let _ = handle.join();
        }
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        result
    }

    fn segments_change(&self) -> std::sync::MutexGuard<'_, ()> {
        self.segments_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes, oldest first, the segments whose successor starts at or
    /// before `covered` (so every record in them ends at or before it),
    /// never the segment appended to; returns the segments and bytes
    /// deleted. For compaction, once a snapshot covers `covered`.
    ///
    /// The directory is fsynced after each unlink: unlinks that share one
    /// directory fsync can come back after a crash as any subset of
    /// themselves, leaving a hole in the log; one at a time, a crash leaves
    /// a contiguous suffix of segments. Appends go on meanwhile; rotation
    /// and close wait. A failed writer still deletes (what a snapshot
    /// covers is safe to drop whatever the writer's state); a closed one
    /// no longer owns the directory and refuses.
    pub fn delete_covered(&self, covered: u64) -> Result<(usize, u64), WriterError> {
        let _change = self.segments_change();
        let dir = &self.shared.dir;
        let doomed: Vec<u64> = {
            let st = self.shared.lock();
            if st.closed {
                return Err(WriterError::Closed { dir: dir.clone() });
            }
            let covered_segments = covered_count(&st.segment_starts, covered);
            st.segment_starts[..covered_segments].to_vec()
        };
        let mut bytes = 0;
        for start in &doomed {
            let path = dir.join(segment_file_name(*start));
            bytes += delete_segment_durably(dir, *start)
                .map_err(|e| WriterError::io("delete segment", &path, e))?;
            self.shared.lock().segment_starts.remove(0);
        }
        Ok((doomed.len(), bytes))
    }

    /// Makes the next `count` writes or fsyncs fail (ENOSPC / EIO), as a
    /// failing disk would. For tests of the failure model.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault, count: u32) {
        self.shared.faults.arm(fault, count);
    }

    /// Holds the threads that reach `gate` until it is let go (`held`
    /// false), as a stalled disk would; for tests of the interleavings.
    /// Closing lets every gate go.
    #[doc(hidden)]
    pub fn hold_io(&self, gate: Gate, held: bool) {
        self.shared.faults.hold(gate, held);
    }

    /// How many threads wait at `gate` now (see [`AofWriter::hold_io`]).
    #[doc(hidden)]
    pub fn threads_held(&self, gate: Gate) -> u32 {
        self.shared.faults.waiting_at(gate)
    }

    /// How many threads are parked waiting for a position to be written or
    /// durable; for tests of the interleavings.
    #[doc(hidden)]
    pub fn parked_waiters(&self) -> usize {
        self.shared.lock().waiters.len()
    }
}

impl Drop for AofWriter {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The physical baseline of the benchmarks: `n` times `pwrite(size bytes)`
/// then `fdatasync`, appending to a new file at `path`; returns the elapsed
/// time. The file is removed afterwards. A benchmark helper, not part of the
/// engine's API.
#[doc(hidden)]
pub fn raw_fdatasync_loop(path: &Path, n: u64, size: usize) -> io::Result<Duration> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let elapsed = raw_fdatasync_appends(&file, n, size)?;
    drop(file);
    std::fs::remove_file(path)?;
    Ok(elapsed)
}

/// [`raw_fdatasync_loop`]'s loop, on a file the caller keeps (a test reads
/// what it wrote): `n` records of `size` bytes (`0xa5`) appended from
/// offset 0, each `pwrite` followed by an `fdatasync`; returns the elapsed
/// time.
#[doc(hidden)]
pub fn raw_fdatasync_appends(file: &std::fs::File, n: u64, size: usize) -> io::Result<Duration> {
    let buf = vec![0xa5u8; size];
    let t0 = Instant::now();
    let mut offset = 0u64;
    for _ in 0..n {
        std::os::unix::fs::FileExt::write_all_at(file, &buf, offset)?;
        file.sync_data()?;
        offset += size as u64;
    }
    Ok(t0.elapsed())
}
