//! `GroupCommit`: the appends of every task of one asyncio event loop,
//! committed through the journal by one Rust thread, with one wake-up of
//! the loop per completed group commit.
//!
//! Why a Rust thread, not a Python worker: a Python thread needs the GIL
//! to start each batch and to hand its results back, and the loop holds
//! the GIL for as long as it runs tasks (a waiting thread gets it when the
//! loop goes idle, or after the 5 ms switch interval). The fsync of one
//! batch could then never overlap the loop running the tasks of the
//! previous one. This thread never takes the GIL: operations are taken
//! out of their Python objects by `submit` (on the loop), the thread
//! judges, writes and fsyncs them (`Journal::append_many`), queues the
//! outcomes and writes one byte to a socket the loop watches
//! (`loop.add_reader`); `drain`, on the loop, resolves every future of the
//! batch in one callback.
//!
//! The journal keeps its judgement per call: when it refuses an operation
//! of a merged batch (it writes nothing then, and names the operation's
//! index), only the call that submitted that operation fails, with the
//! error its own batch would have had; the others are submitted again, in
//! the same order. The log's order is the order of `submit` calls.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openmatch_aof::codec::encode_frame_into;
use openmatch_aof::journal::{self as core, JournalError};
use openmatch_aof::AofOperation;
use pyo3::intern;
use pyo3::prelude::*;

use crate::journal::{journal_error, Journal};
use crate::state::State;
use crate::writer::take_ops;

pyo3::import_exception!(openmatch_persistence.errors, WriterClosedError);

/// One `submit`: a contiguous, all-or-nothing run, and its future.
struct Entry {
    ops: Vec<AofOperation>,
    future: Py<PyAny>,
}

/// What the thread hands back to the loop.
enum Done {
    /// Written and acknowledged: the run starts at `start`, operation `i`
    /// ends at `ends[i]`.
    Committed {
        entry: Entry,
        start: u64,
        ends: Vec<u64>,
    },
    /// Refused by the journal (nothing of it written); the error counts
    /// in the entry's own operations.
    Refused {
        future: Py<PyAny>,
        error: JournalError,
    },
    /// The writer failed or closed: none of these was acknowledged.
    Failed {
        futures: Vec<Py<PyAny>>,
        error: JournalError,
    },
}

#[derive(Default)]
struct Queues {
    pending: Vec<Entry>,
    done: Vec<Done>,
    /// A byte is on its way to the loop for `done`: no need for another.
    signalled: bool,
    /// Set by `close`: why submissions are refused from now on.
    closing: Option<String>,
    /// The thread waits for work: only then does `submit` wake it (a
    /// futex syscall per operation otherwise, while the thread is busy
    /// committing and will find the queue anyway).
    idle: bool,
    /// The thread gathers a batch until this many are queued (0: not
    /// gathering); `submit` wakes it when they are.
    gathering: usize,
    /// Test hook (`_hold`): the thread takes nothing until released (or
    /// closed), so that tests can build a group of their choosing.
    held: bool,
}

struct Shared {
    journal: Arc<core::Journal>,
    queues: Mutex<Queues>,
    work: Condvar,
    wake: UnixStream,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // Nothing under this lock can panic halfway through a change that
        // matters (pushes and takes of whole vectors).
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Group commit for the tasks of one event loop (`AsyncPersistence`).
#[pyclass(frozen, module = "openmatch_persistence._core", name = "GroupCommit")]
pub struct GroupCommit {
    shared: Arc<Shared>,
    readable: UnixStream,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[pymethods]
impl GroupCommit {
    /// Starts the committing thread on `journal`.
    #[new]
    fn new(journal: &Bound<'_, Journal>) -> PyResult<Self> {
        let (readable, wake) = UnixStream::pair()?;
        readable.set_nonblocking(true)?;
        // Never blocks: at most one byte is ever unread (`signalled`).
        wake.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            journal: Arc::clone(&journal.get().inner),
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
            wake,
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("om-group-commit".into())
            .spawn(move || run(&for_thread))?;
        Ok(GroupCommit {
            shared,
            readable,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The descriptor that turns readable when outcomes wait for `drain`
    /// (for `loop.add_reader`).
    fn fileno(&self) -> i32 {
        self.readable.as_raw_fd()
    }

    /// Queues `ops` as one contiguous, all-or-nothing run; `future` (an
    /// asyncio future of the loop that calls `drain`) gets the position
    /// after its last operation, or the error that refused it. Raises at
    /// once for an object that is no operation, and `WriterClosedError`
    /// after `close`.
    fn submit(&self, ops: &Bound<'_, PyAny>, future: Py<PyAny>) -> PyResult<()> {
        let ops = take_ops(ops)?;
        let mut q = self.shared.lock();
        if let Some(reason) = &q.closing {
            return Err(WriterClosedError::new_err(reason.clone()));
        }
        q.pending.push(Entry { ops, future });
        let gathered = q.gathering > 0 && q.pending.len() >= q.gathering;
        if gathered {
            q.gathering = 0;
        }
        let idle = std::mem::replace(&mut q.idle, false);
        drop(q);
        if idle || gathered {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Resolves the futures of every completed batch (on the loop); the
    /// committed operations are applied to `acknowledged` first, in log
    /// order, so that a read of it shows exactly what is acknowledged.
    /// Returns the end of the last committed run, or None. A future that
    /// is done already (its task was cancelled) is left alone: its
    /// operations were written all the same.
    #[pyo3(signature = (acknowledged = None))]
    fn drain(
        &self,
        py: Python<'_>,
        acknowledged: Option<&Bound<'_, State>>,
    ) -> PyResult<Option<u64>> {
        let mut buf = [0u8; 64];
        loop {
            match (&self.readable).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: nothing more to read
            }
        }
        let done = {
            let mut q = self.shared.lock();
            q.signalled = false;
            std::mem::take(&mut q.done)
        };
        let mut last = None;
        let mut first_error: Option<PyErr> = None;
        let mut settle = |future: &Py<PyAny>, outcome: Result<Py<PyAny>, Py<PyAny>>| {
            let r = (|| -> PyResult<()> {
                let f = future.bind(py);
                if f.call_method0(intern!(py, "done"))?.is_truthy()? {
                    return Ok(());
                }
                match outcome {
                    Ok(v) => f.call_method1(intern!(py, "set_result"), (v,))?,
                    Err(e) => f.call_method1(intern!(py, "set_exception"), (e,))?,
                };
                Ok(())
            })();
            // Every future is settled even if one could not be.
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        for d in done {
            match d {
                Done::Committed { entry, start, ends } => {
                    let end = ends.last().copied().unwrap_or(start);
                    if let Some(state) = acknowledged {
                        let mut state = state.borrow_mut();
                        let target = state.owned_mut()?;
                        for (op, at) in entry.ops.into_iter().zip(ends) {
                            target.apply_owned(op, at);
                        }
                    }
                    last = Some(last.map_or(end, |l: u64| l.max(end)));
                    settle(
                        &entry.future,
                        Ok(end.into_pyobject(py)?.into_any().unbind()),
                    );
                }
                Done::Refused { future, error } => {
                    let err = journal_error(py, error).into_value(py).into_any();
                    settle(&future, Err(err));
                }
                Done::Failed { futures, error } => {
                    let err = journal_error(py, error).into_value(py).into_any();
                    for future in &futures {
                        settle(future, Err(err.clone_ref(py)));
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }

    /// Test hook: while held, the thread commits nothing (what is
    /// submitted gathers into one group); `close` overrides it.
    fn _hold(&self, held: bool) {
        self.shared.lock().held = held;
        self.shared.work.notify_all();
    }

    /// Refuses submissions from now on (`WriterClosedError` naming
    /// `reason`); what is queued is still committed. Does not wait.
    fn close(&self, reason: String) {
        let mut q = self.shared.lock();
        q.closing.get_or_insert(reason);
        drop(q);
        self.shared.work.notify_all();
    }

    /// Waits (without the GIL) until the thread has committed everything
    /// queued before `close` and ended; `drain` then has every outcome.
    fn join(&self, py: Python<'_>) {
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            // A panic of the thread would have left futures unresolved;
            // there is nothing more to do for them here.
            let _ = py.detach(|| handle.join());
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Dropped without close(): let the thread end after what is queued.
        let mut q = self.shared.lock();
        q.closing.get_or_insert_with(|| "closed".into());
        drop(q);
        self.shared.work.notify_all();
    }
}

/// The longest a batch waits to gather more submissions.
const MAX_GATHER: Duration = Duration::from_millis(2);

/// The committing thread: one merged batch at a time, until closed and
/// empty.
///
/// Gathering, as the writer's adaptive window (docs/fsync-policies.md):
/// a batch waits for as many submissions as the previous batch had, for
/// at most half the time the previous batch took (bounded by 2 ms). Tasks
/// come back in a burst when their batch completes, one every few
/// microseconds as the loop runs them; taking only the first of them would
/// split the tasks into a large batch and a small one committed back to
/// back, and the loop would wait for the fsync of each in turn. A lone
/// task never waits (its previous batch had one submission).
fn run(shared: &Shared) {
    let mut last_len = 0usize;
    let mut last_took = Duration::ZERO;
    loop {
        let batch = {
            let mut q = shared.lock();
            loop {
                if !q.pending.is_empty() && (!q.held || q.closing.is_some()) {
                    break;
                }
                if q.closing.is_some() {
                    return;
                }
                // Held with work queued: `_hold(false)` wakes us, not submit.
                q.idle = q.pending.is_empty();
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
                q.idle = false;
            }
            if q.pending.len() < last_len && q.closing.is_none() {
                let deadline = Instant::now() + (last_took / 2).min(MAX_GATHER);
                while q.pending.len() < last_len && q.closing.is_none() {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    // `submit` wakes us once this many are queued.
                    q.gathering = last_len;
                    q = shared
                        .work
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                q.gathering = 0;
            }
            std::mem::take(&mut q.pending)
        };
        let started = Instant::now();
        last_len = batch.len();
        let done = commit(&shared.journal, batch);
        last_took = started.elapsed();
        let mut q = shared.lock();
        q.done.extend(done);
        let signal = !std::mem::replace(&mut q.signalled, true);
        drop(q);
        if signal {
            // Cannot block (non-blocking, at most one byte unread); should
            // it fail, the loop still drains at close.
            let _ = (&shared.wake).write(&[1]);
        }
    }
}

/// Appends `entries` as one run of the log; an entry the journal refuses
/// is taken out (failing alone) and the rest appended again.
fn commit(journal: &core::Journal, mut entries: Vec<Entry>) -> Vec<Done> {
    let mut done = Vec::with_capacity(entries.len());
    let mut scratch = Vec::with_capacity(512);
    while !entries.is_empty() {
        let merged: Vec<AofOperation> =
            entries.iter().flat_map(|e| e.ops.iter().cloned()).collect();
        // Each frame's length, for each entry's positions (a frame's
        // length does not depend on where it lies). One that cannot be
        // encoded is refused by append_many with its index: its 0 is
        // never used.
        let lengths: Vec<u64> = merged
            .iter()
            .map(|op| {
                scratch.clear();
                encode_frame_into(op, &mut scratch).unwrap_or(0) as u64
            })
            .collect();
        let error = match journal.append_many(merged) {
            Ok(end) => {
                let mut at = end - lengths.iter().sum::<u64>();
                let mut lengths = lengths.into_iter();
                for entry in entries {
                    let start = at;
                    let ends = (0..entry.ops.len())
                        .map(|_| {
                            at += lengths.next().unwrap_or(0);
                            at
                        })
                        .collect();
                    done.push(Done::Committed { entry, start, ends });
                }
                return done;
            }
            Err(e) => e,
        };
        let (index, relocate): (usize, fn(JournalError, usize) -> JournalError) = match &error {
            JournalError::Refused { index, .. } => (*index, |e, local| match e {
                JournalError::Refused { violation, .. } => JournalError::Refused {
                    index: local,
                    violation,
                },
                e => e,
            }),
            JournalError::Unfit { index, .. } => (*index, |e, local| match e {
                JournalError::Unfit { reason, .. } => JournalError::Unfit {
                    index: local,
                    reason,
                },
                e => e,
            }),
            JournalError::Encode { index, .. } => (*index, |e, local| match e {
                JournalError::Encode { source, .. } => JournalError::Encode {
                    index: local,
                    source,
                },
                e => e,
            }),
            _ => {
                // The writer failed or closed: nothing of the batch is
                // acknowledged, and nothing later can be.
                let futures = entries.into_iter().map(|e| e.future).collect();
                done.push(Done::Failed { futures, error });
                return done;
            }
        };
        let Some((owner, local)) = owner_of(&entries, index) else {
            // An index outside the batch: a bug; fail them all rather than loop.
            let futures = entries.into_iter().map(|e| e.future).collect();
            done.push(Done::Failed {
                futures,
                error: JournalError::Broken(format!(
                    "the journal named operation {index} of a batch that has fewer"
                )),
            });
            return done;
        };
        let refused = entries.remove(owner);
        done.push(Done::Refused {
            future: refused.future,
            error: relocate(error, local),
        });
    }
    done
}

/// The entry that holds operation `index` of the merged batch, and the
/// operation's index within it.
fn owner_of(entries: &[Entry], index: usize) -> Option<(usize, usize)> {
    let mut at = 0;
    for (i, e) in entries.iter().enumerate() {
        if index < at + e.ops.len() {
            return Some((i, index - at));
        }
        at += e.ops.len();
    }
    None
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<GroupCommit>()?;
    Ok(())
}
