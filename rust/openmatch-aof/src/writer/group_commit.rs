//! Group commit: leader/follower over one mutex and two condition variables.
//!
//! Appends copy their frames into a shared `pending` buffer under the state
//! lock and then wait for the position just past their record to be written
//! (or fsynced). The first waiter that finds no I/O in flight becomes the
//! *leader*: it takes the whole pending buffer, releases the lock, does one
//! `pwrite` and (if anyone needs it) one `fdatasync`, then publishes the new
//! written/durable positions and wakes everyone. While it is in the kernel,
//! the appends of other threads gather in `pending` and ride the next batch.
//!
//! Why not a dedicated flusher thread: with one appender, the leader is the
//! appending thread itself, so a single-threaded caller pays exactly
//! `pwrite + fdatasync` with no thread handoff (the benchmark's 0.9× of raw
//! target); under load it batches just the same. The only extra thread is
//! the `everysec` background fsync, which must run when nobody appends.
//!
//! Invariants (under `state`): `durable <= written <= end`; bytes
//! `[written, end)` are exactly `pending`; only the leader (or a rotation or
//! close, which take the leader role) does I/O on the segment, at offsets it
//! reads under the lock; once `failed` is set no write or fsync is ever
//! issued again (a failed fsync may have dropped dirty pages: retrying it
//! could "succeed" over lost data — PostgreSQL's fsyncgate).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::fault::{Fault, Faults, Gate};
use super::stats::Counters;
use super::{Gather, WriterError, WriterOptions, MAX_ADAPTIVE_WAIT};
use crate::codec::{BoundedFrames, EncodeError, FrameHeader, HEADER_LEN};
use crate::spare::trim_for_reuse;

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct Current {
    pub start: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub pending: Vec<u8>,
    /// The buffer the last leader wrote, kept to be reused.
    pub spare: Vec<u8>,
    pub pending_records: u64,
    /// The position just past the last appended record.
    pub end: u64,
    pub written: u64,
    pub durable: u64,
    /// The highest position some waiter needs durable.
    pub sync_wanted: u64,
    /// Records the gathering leader waits for (`u64::MAX`: none waits).
    pub gather_want: u64,
    /// What past batches tell the next leader's gathering.
    pub pace: Pace,
    /// A leader, rotation or close is doing I/O.
    pub leader: bool,
    pub failed: Option<String>,
    pub closed: bool,
    pub current: Current,
    /// Start positions of the segments, oldest first.
    pub segment_starts: Vec<u64>,
    pub counters: Counters,
    /// Threads parked until their position is reached or a leader is
    /// needed.
    pub waiters: Vec<Waiter>,
    /// Threads waiting on `progress` (rotation, close).
    pub progress_waiters: u32,
}

impl State {
    /// Whether a leader gathering for `want` records has its batch: that
    /// many records, or `max_bytes`, are pending. The gathering loop and
    /// the appends that wake it share this rule.
    fn has_full_batch(&self, want: u64, max_bytes: usize) -> bool {
        self.pending.len() >= max_bytes || self.pending_records >= want
    }
}

/// What past batches tell an adaptive leader: how many appenders there
/// are (the records of the last batch) and how long an fsync takes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Records in the last batch that had any.
    pub last_batch_records: u64,
    /// A moving average of fsync latency; zero until the first fsync.
    pub fsync_ewma: Duration,
}

/// How a leader gathers: for at most `window`, ended sooner once
/// `records` are pending (or the batch's byte bound is reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GatherGoal {
    pub window: Duration,
    pub records: u64,
}

impl Pace {
    /// The next leader's gathering goal under `gather`.
    pub fn goal(self, gather: Gather) -> GatherGoal {
        match gather {
            Gather::Off => GatherGoal {
                window: Duration::ZERO,
                records: 0,
            },
            Gather::Window(window) => GatherGoal {
                window,
                records: u64::MAX,
            },
            // Half an fsync: the appenders the last fsync woke have time
            // to come back, and a lone appender (whose last batch was
            // itself) finds its batch full at once.
            Gather::Adaptive => GatherGoal {
                window: (self.fsync_ewma / 2).min(MAX_ADAPTIVE_WAIT),
                records: self.last_batch_records,
            },
        }
    }

    /// Learns from a batch done: its records and, if it fsynced, how long
    /// that took. A batch of no records (an fsync alone, for a durable
    /// wait) says nothing about how many appenders there are.
    pub fn learn(&mut self, records: u64, fsync: Option<Duration>) {
        if records > 0 {
            self.last_batch_records = records;
        }
        if let Some(latency) = fsync {
            self.fsync_ewma = if self.fsync_ewma.is_zero() {
                latency
            } else {
                (self.fsync_ewma * 7 + latency) / 8
            };
        }
    }
}

/// The `everysec` thread's schedule: an fsync an interval after it
/// starts, then an interval after each one began.
#[derive(Debug, Clone, Copy)]
struct EverySec {
    interval: Duration,
    due: Instant,
}

/// What the `everysec` thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Nothing before this much time has passed.
    Sleep(Duration),
    /// Fsync what is written (if anything is not yet durable).
    Fsync,
}

impl EverySec {
    fn starting(now: Instant, interval: Duration) -> Self {
        EverySec {
            interval,
            due: now + interval,
        }
    }

    /// What to do at `now`; a due fsync moves the next one an interval on.
    fn tick(&mut self, now: Instant) -> Tick {
        if now < self.due {
            return Tick::Sleep(self.due - now);
        }
        self.due = now + self.interval;
        Tick::Fsync
    }
}

/// A thread parked in [`Shared::wait_for`].
#[derive(Debug)]
pub(crate) struct Waiter {
    target: u64,
    goal: Goal,
    thread: Thread,
    woken: Arc<AtomicBool>,
}

impl Waiter {
    fn wake(self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Waiters to wake. The leader wakes them after releasing the lock, so
/// that the threads it wakes (and the next leader) do not find it held.
#[must_use = "waiters must be woken"]
#[derive(Debug, Default)]
pub(crate) struct Wakes(Vec<Waiter>);

impl Wakes {
    pub fn now(self) {
        for w in self.0 {
            w.wake();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: WriterOptions,
    pub state: Mutex<State>,
    /// A leader finished (rotation and close wait for this).
    pub progress: Condvar,
    /// Failure or close (the background fsync thread waits for this).
    pub halt: Condvar,
    /// Mirrors of `written`/`durable`, so that a woken waiter whose
    /// position was reached returns without taking the lock.
    pub written_at: AtomicU64,
    pub durable_at: AtomicU64,
    /// Wakes a leader in its gathering window once the batch is full.
    pub batch_full: Condvar,
    pub faults: Faults,
}

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    Written,
    Durable,
}

/// The outcome of one batch of I/O, done without the lock.
struct BatchIo {
    wrote: usize,
    fsync: Option<Duration>,
}

impl Shared {
    /// Locks the state. A panic while holding it cannot leave it torn (no
    /// code path panics between updates of related fields), so a poisoned
    /// lock is used as is rather than turned into a panic across the FFI.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.progress_waiters += 1;
        let mut st = self.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        st.progress_waiters -= 1;
        st
    }

    pub fn check_usable(&self, st: &State) -> Result<(), WriterError> {
        if let Some(reason) = &st.failed {
            return Err(WriterError::Failed {
                reason: reason.clone(),
            });
        }
        if st.closed {
            return Err(WriterError::Closed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Queues whole frames; returns the position just past them.
    pub fn enqueue(&self, st: &mut State, frames: &[u8], records: u64) -> Result<u64, WriterError> {
        self.check_usable(st)?;
        check_payloads(frames, self.opts.max_payload)?;
        st.pending.extend_from_slice(frames);
        Ok(self.queued(st, frames.len(), records))
    }

    /// As [`Shared::enqueue`], for frames the caller hands over: when
    /// nothing is pending, their buffer becomes the pending one (a batch of
    /// megabytes is not copied), and `frames` is given the empty one it
    /// replaces, to reuse. Either way `frames` returns empty. Frames
    /// encoded within this writer's bound are not read again.
    pub fn enqueue_owned(
        &self,
        st: &mut State,
        frames: &mut BoundedFrames,
        records: u64,
    ) -> Result<u64, WriterError> {
        self.check_usable(st)?;
        if frames.bound() > self.opts.max_payload {
            check_payloads(frames.as_bytes(), self.opts.max_payload)?;
        }
        let bytes = frames.len();
        if !frames.swap_out(&mut st.pending) {
            st.pending.extend_from_slice(frames.as_bytes());
        }
        frames.clear();
        Ok(self.queued(st, bytes, records))
    }

    /// Counts `bytes` of `records` just added to `pending`; returns the
    /// position past them.
    fn queued(&self, st: &mut State, bytes: usize, records: u64) -> u64 {
        st.pending_records += records;
        st.end += bytes as u64;
        st.counters.appends += records;
        st.counters.bytes += bytes as u64;
        if st.leader && st.has_full_batch(st.gather_want, self.opts.max_batch_bytes) {
            self.batch_full.notify_one();
        }
        st.end
    }

    /// Blocks until `target` is written (or durable), leading batches of
    /// I/O as needed.
    pub fn wait_for<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
        goal: Goal,
    ) -> Result<(), WriterError> {
        if goal == Goal::Durable && st.sync_wanted < target {
            st.sync_wanted = target;
        }
        loop {
            let reached = match goal {
                Goal::Written => st.written >= target,
                Goal::Durable => st.durable >= target,
            };
            if reached {
                return Ok(());
            }
            if let Some(reason) = &st.failed {
                return Err(WriterError::Failed {
                    reason: reason.clone(),
                });
            }
            if st.closed {
                // Close flushes and fsyncs everything; reaching here means
                // the target was never appended to this writer.
                return Err(WriterError::Closed {
                    dir: self.dir.clone(),
                });
            }
            if !st.leader {
                let (guard, wakes) = self.lead(st, false)?;
                let at = match goal {
                    Goal::Written => guard.written,
                    Goal::Durable => guard.durable,
                };
                if at >= target {
                    drop(guard);
                    wakes.now();
                    return Ok(());
                }
                st = guard;
                wakes.now();
                continue;
            }
            // Park until a leader publishes our position or asks us to
            // lead. Parking (not a condition variable) lets each woken
            // thread return without re-taking the lock: a broadcast on a
            // condvar would make every waiter queue on the mutex in turn.
            let woken = Arc::new(AtomicBool::new(false));
            st.waiters.push(Waiter {
                target,
                goal,
                thread: std::thread::current(),
                woken: Arc::clone(&woken),
            });
            drop(st);
            while !woken.load(Ordering::Acquire) {
                std::thread::park();
            }
            let at = match goal {
                Goal::Written => self.written_at.load(Ordering::Acquire),
                Goal::Durable => self.durable_at.load(Ordering::Acquire),
            };
            if at >= target {
                return Ok(());
            }
            st = self.lock();
        }
    }

    /// Publishes the positions and wakes who can go: waiters whose goal is
    /// reached (all of them on failure or close) and, if there is work and
    /// no leader, one more waiter to lead it.
    pub fn publish(&self, st: &mut State) -> Wakes {
        self.written_at.store(st.written, Ordering::Release);
        self.durable_at.store(st.durable, Ordering::Release);
        let halted = st.failed.is_some() || st.closed;
        let (written, durable) = (st.written, st.durable);
        let mut kept = Vec::with_capacity(st.waiters.len());
        let mut wake = Vec::new();
        for w in st.waiters.drain(..) {
            let done = halted
                || match w.goal {
                    Goal::Written => written >= w.target,
                    Goal::Durable => durable >= w.target,
                };
            if done {
                wake.push(w);
            } else {
                kept.push(w);
            }
        }
        st.waiters = kept;
        let work = !st.pending.is_empty() || st.sync_wanted > st.durable;
        if !st.leader && work {
            // The next leader first: it has a batch to start.
            if let Some(w) = st.waiters.pop() {
                wake.insert(0, w);
            }
        }
        // A notify is a futex syscall even with nobody waiting: one per
        // append on the single-thread path. Waiters count themselves under
        // the lock before they wait, so none is missed.
        if st.progress_waiters > 0 {
            self.progress.notify_all();
        }
        if halted {
            self.halt.notify_all();
        }
        Wakes(wake)
    }

    /// Takes the leader role: gathers, writes `pending`, fsyncs if anyone
    /// needs it (or `force_sync`), publishes. Returns with the lock held and
    /// the role released; an I/O error fails the writer.
    pub fn lead<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        force_sync: bool,
    ) -> Result<(MutexGuard<'a, State>, Wakes), WriterError> {
        st.leader = true;
        let goal = st.pace.goal(self.opts.gather);
        // A leader with nothing pending leads for an fsync alone (a close,
        // a rotation, a `wait_durable`): gathering would only delay it.
        if !goal.window.is_zero() && st.pending_records > 0 {
            st.gather_want = goal.records;
            // The clock is read only once the batch is seen short: a
            // leader whose batch is already full writes it at once.
            let mut deadline = None;
            while !st.has_full_batch(goal.records, self.opts.max_batch_bytes) {
                let now = Instant::now();
                let deadline = *deadline.get_or_insert(now + goal.window);
                if now >= deadline {
                    break;
                }
                st = self
                    .batch_full
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            st.gather_want = u64::MAX;
        }
        let spare = std::mem::take(&mut st.spare);
        let buf = std::mem::replace(&mut st.pending, spare);
        let records = std::mem::take(&mut st.pending_records);
        let batch_end = st.written + buf.len() as u64;
        if batch_end != st.end {
            // Everything queued is in the buffer taken: a queue that lost
            // or gained bytes would leave its waiters waiting for a
            // position no write reaches. A bug: fail loudly instead.
            let reason = format!(
                "group commit invariant broken (a bug, please report it): the queue ends at \
                 {batch_end}, the appends at {}",
                st.end
            );
            st.leader = false;
            st.failed = Some(reason.clone());
            let wakes = self.publish(&mut st);
            drop(st);
            wakes.now();
            return Err(WriterError::Failed { reason });
        }
        let sync = force_sync || st.sync_wanted > st.durable;
        let offset = st.written - st.current.start;
        let file = Arc::clone(&st.current.file);
        let path = st.current.path.clone();
        drop(st);

        let result = self.batch_io(&file, &buf, offset, sync);

        let mut st = self.lock();
        st.leader = false;
        let outcome = match result {
            Ok(io) => {
                st.written = batch_end;
                st.counters.unsynced_records += records;
                if io.wrote > 0 {
                    st.counters.writes += 1;
                }
                st.pace.learn(records, io.fsync);
                if let Some(latency) = io.fsync {
                    st.durable = batch_end;
                    st.counters.record_fsync(latency);
                }
                Ok(())
            }
            Err((op, e)) => {
                let reason = format!("{op} {} failed: {e}", path.display());
                st.failed = Some(reason.clone());
                Err(WriterError::Failed { reason })
            }
        };
        let mut buf = buf;
        trim_for_reuse(&mut buf);
        st.spare = buf;
        let wakes = self.publish(&mut st);
        match outcome {
            Ok(()) => Ok((st, wakes)),
            Err(e) => {
                wakes.now();
                Err(e)
            }
        }
    }

    fn batch_io(
        &self,
        file: &File,
        buf: &[u8],
        offset: u64,
        sync: bool,
    ) -> Result<BatchIo, (&'static str, std::io::Error)> {
        if !buf.is_empty() {
            self.faults.pass(Gate::Write);
            self.faults.check(Fault::Write).map_err(|e| ("write", e))?;
            file.write_all_at(buf, offset).map_err(|e| ("write", e))?;
        }
        let fsync = if sync {
            self.faults.pass(Gate::Fsync);
            let t0 = Instant::now();
            self.faults
                .check(Fault::Fsync)
                .map_err(|e| ("fdatasync", e))?;
            file.sync_data().map_err(|e| ("fdatasync", e))?;
            Some(t0.elapsed())
        } else {
            None
        };
        Ok(BatchIo {
            wrote: buf.len(),
            fsync,
        })
    }

    /// Waits until no leader is active and takes the role for an exclusive
    /// operation (rotation, close).
    pub fn take_exclusive<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while st.leader {
            st = self.wait(st);
        }
        st
    }

    /// The `everysec` thread: fsync what is written, at least every
    /// `interval`, until close or failure. It fsyncs beside a leader's
    /// `pwrite` (the kernel allows it) and covers only what was written
    /// before it started, so appends never wait for it.
    ///
    /// It fsyncs through its own open file description of the segment, not
    /// the leader's. Linux reports a writeback error once per open file
    /// description (errseq): sharing one, whichever of two concurrent
    /// fsyncs came second would return 0 over the lost pages, and a leader
    /// could then acknowledge them as durable. With one each, both see it.
    pub fn background_fsync(self: Arc<Self>, interval: Duration) {
        let mut st = self.lock();
        let mut schedule = EverySec::starting(Instant::now(), interval);
        let mut own: Option<(PathBuf, Arc<File>)> = None;
        loop {
            if st.closed || st.failed.is_some() {
                return;
            }
            if let Tick::Sleep(pause) = schedule.tick(Instant::now()) {
                st = self
                    .halt
                    .wait_timeout(st, pause)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            if st.durable >= st.written {
                continue;
            }
            let target = st.written;
            let path = st.current.path.clone();
            let file = match &own {
                Some((p, f)) if *p == path => Arc::clone(f),
                _ => {
                    // Opened under the lock, where the path is the current
                    // segment's and exists. Read-only is enough for
                    // fdatasync. There is no fallback to the leader's
                    // descriptor: sharing one would hide a writeback error
                    // from one of the two fsyncs (see above), so failing to
                    // open one fails the writer, loudly, for every appender.
                    let opened = self
                        .faults
                        .check(Fault::Reopen)
                        .and_then(|()| File::open(&path));
                    match opened {
                        Ok(f) => {
                            st.counters.fsync_thread_opens += 1;
                            let f = Arc::new(f);
                            own = Some((path.clone(), Arc::clone(&f)));
                            f
                        }
                        Err(e) => {
                            st.failed = Some(format!(
                                "the background fsync thread cannot open its own descriptor of {}: {e}",
                                path.display()
                            ));
                            self.publish(&mut st).now();
                            return;
                        }
                    }
                }
            };
            drop(st);
            self.faults.pass(Gate::BackgroundFsync);
            let t0 = Instant::now();
            let result = self
                .faults
                .check(Fault::Fsync)
                .and_then(|()| file.sync_data());
            let latency = t0.elapsed();
            st = self.lock();
            match result {
                Ok(()) => {
                    if target > st.durable {
                        st.durable = target;
                        st.counters.record_fsync(latency);
                    }
                }
                Err(e) => {
                    if st.failed.is_none() {
                        st.failed = Some(format!(
                            "background fdatasync {} failed: {e}",
                            path.display()
                        ));
                    }
                }
            }
            self.publish(&mut st).now();
        }
    }
}

/// Refuses a run of whole frames that holds a payload over `max`, the
/// writer's own bound: its reopening reads the last segment with that bound
/// and would stop at such a frame as oversized. What a writer queues, its
/// reopening reads (every append passes here, whoever encoded it).
fn check_payloads(frames: &[u8], max: u32) -> Result<(), WriterError> {
    let mut at = 0usize;
    while let Some(length) = frames.get(at..).and_then(FrameHeader::read_length) {
        if length > max {
            return Err(WriterError::Encode(EncodeError::TooLarge {
                length: length as usize,
                max,
            }));
        }
        at += HEADER_LEN + length as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Batches of five records, fsyncs of 3 ms.
    const BUSY: Pace = Pace {
        last_batch_records: 5,
        fsync_ewma: Duration::from_millis(3),
    };

    #[test]
    fn an_adaptive_leader_gathers_for_half_an_fsync_and_the_last_batchs_records() {
        let pace = BUSY;
        assert_eq!(
            pace.goal(Gather::Adaptive),
            GatherGoal {
                window: 1500 * Duration::from_micros(1),
                records: 5
            }
        );
        // A slow disk's half-fsync is capped.
        let slow = Pace {
            fsync_ewma: 10 * MS,
            ..pace
        };
        assert_eq!(slow.goal(Gather::Adaptive).window, MAX_ADAPTIVE_WAIT);
        // Before any fsync there is nothing to wait for.
        assert_eq!(
            Pace::default().goal(Gather::Adaptive).window,
            Duration::ZERO
        );
    }

    #[test]
    fn the_other_gathering_modes_ignore_the_pace() {
        let pace = BUSY;
        assert_eq!(
            pace.goal(Gather::Off),
            GatherGoal {
                window: Duration::ZERO,
                records: 0
            }
        );
        assert_eq!(
            pace.goal(Gather::Window(7 * MS)),
            GatherGoal {
                window: 7 * MS,
                records: u64::MAX
            }
        );
    }

    #[test]
    fn the_pace_follows_the_last_batch_with_records() {
        let mut pace = Pace::default();
        pace.learn(4, None);
        assert_eq!(pace.last_batch_records, 4);
        pace.learn(0, Some(MS));
        assert_eq!(pace.last_batch_records, 4, "an fsync alone");
        pace.learn(1, None);
        assert_eq!(pace.last_batch_records, 1);
    }

    #[test]
    fn the_fsync_average_starts_at_the_first_fsync_then_moves_an_eighth() {
        let mut pace = Pace::default();
        pace.learn(1, None);
        assert_eq!(pace.fsync_ewma, Duration::ZERO, "no fsync, no latency");
        pace.learn(1, Some(8 * MS));
        assert_eq!(pace.fsync_ewma, 8 * MS);
        pace.learn(1, Some(16 * MS));
        assert_eq!(pace.fsync_ewma, 9 * MS, "(7 x 8 + 16) / 8");
        pace.learn(1, Some(MS));
        assert_eq!(pace.fsync_ewma, 8 * MS, "(7 x 9 + 1) / 8");
    }

    #[test]
    fn everysec_fsyncs_an_interval_after_it_starts_then_after_each_fsync() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut schedule = EverySec::starting(t0, second);
        assert_eq!(schedule.tick(t0), Tick::Sleep(second));
        assert_eq!(schedule.tick(t0 + 400 * MS), Tick::Sleep(600 * MS));
        assert_eq!(schedule.tick(t0 + second), Tick::Fsync, "due exactly");
        assert_eq!(schedule.tick(t0 + second), Tick::Sleep(second));
        // Late (a long fsync, a busy machine): the next one counts from now.
        assert_eq!(schedule.tick(t0 + 2500 * MS), Tick::Fsync);
        assert_eq!(schedule.tick(t0 + 3 * second), Tick::Sleep(500 * MS));
    }
}
