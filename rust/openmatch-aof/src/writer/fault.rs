//! Injected I/O failures and held I/O, for tests of the failure model and
//! of group commit's interleavings only.
//!
//! Always compiled (one relaxed atomic load per write or fsync for each)
//! so that the Python tests can use the same build as production; the
//! binding exposes it as private methods.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(crate) struct Faults {
    writes: AtomicU32,
    fsyncs: AtomicU32,
    reopens: AtomicU32,
    /// Whether any gate is held: the fast path of [`Faults::pass`].
    any_held: AtomicBool,
    gates: Mutex<Gates>,
    gate_changed: Condvar,
}

/// Which operation an injected failure hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `pwrite` fails with ENOSPC.
    Write,
    /// `fdatasync` fails with EIO.
    Fsync,
    /// The `everysec` thread's open of its own descriptor fails with
    /// EMFILE.
    Reopen,
}

/// A point just before the writer's I/O where a test can hold the threads
/// that reach it until it lets them go: an interleaving forced, not hoped
/// for (a slow disk, seen from the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A leader's `pwrite` of a batch.
    Write,
    /// A leader's `fdatasync` (also rotation's and close's).
    Fsync,
    /// The `everysec` thread's `fdatasync`.
    BackgroundFsync,
}

impl Gate {
    fn index(self) -> usize {
        match self {
            Gate::Write => 0,
            Gate::Fsync => 1,
            Gate::BackgroundFsync => 2,
        }
    }
}

#[derive(Debug, Default)]
struct Gates {
    held: [bool; 3],
    /// Threads waiting at each gate.
    waiting: [u32; 3],
}

impl Faults {
    fn gates(&self) -> std::sync::MutexGuard<'_, Gates> {
        // Nothing panics under this lock: a poisoned one is used as is.
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn arm(&self, fault: Fault, count: u32) {
        match fault {
            Fault::Write => self.writes.store(count, Ordering::SeqCst),
            Fault::Fsync => self.fsyncs.store(count, Ordering::SeqCst),
            Fault::Reopen => self.reopens.store(count, Ordering::SeqCst),
        }
    }

    /// An error if a failure of this kind is armed; consumes one.
    pub(crate) fn check(&self, fault: Fault) -> io::Result<()> {
        let (counter, errno) = match fault {
            Fault::Write => (&self.writes, 28),   // ENOSPC
            Fault::Fsync => (&self.fsyncs, 5),    // EIO
            Fault::Reopen => (&self.reopens, 24), // EMFILE
        };
        if counter.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let took = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match took {
            Ok(_) => Err(io::Error::from_raw_os_error(errno)),
            Err(_) => Ok(()),
        }
    }

    /// Holds (or lets go) the threads that reach `gate`.
    pub(crate) fn hold(&self, gate: Gate, held: bool) {
        let mut g = self.gates();
        g.held[gate.index()] = held;
        self.any_held
            .store(g.held.iter().any(|&h| h), Ordering::SeqCst);
        self.gate_changed.notify_all();
    }

    /// Lets every gate go (a writer closing: its close and its Drop must
    /// not wait forever for I/O a test held and forgot, e.g. on a panic).
    pub(crate) fn release_all(&self) {
        for gate in [Gate::Write, Gate::Fsync, Gate::BackgroundFsync] {
            self.hold(gate, false);
        }
    }

    /// How many threads wait at `gate` now.
    pub(crate) fn waiting_at(&self, gate: Gate) -> u32 {
        self.gates().waiting[gate.index()]
    }

    /// Returns at once unless `gate` is held; then waits until it is let go.
    pub(crate) fn pass(&self, gate: Gate) {
        if !self.any_held.load(Ordering::Relaxed) {
            return;
        }
        let i = gate.index();
        let mut g = self.gates();
        if !g.held[i] {
            return;
        }
        g.waiting[i] += 1;
        self.gate_changed.notify_all();
        while g.held[i] {
            g = self.gate_changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.waiting[i] -= 1;
    }
}
