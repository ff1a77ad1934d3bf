//! Injected I/O failures, for tests of the failure model only.
//!
//! Always compiled (one relaxed atomic load per write or fsync) so that the
//! Python tests can use the same build as production; the binding exposes it
//! as a private method.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Faults {
    writes: AtomicU32,
    fsyncs: AtomicU32,
    reopens: AtomicU32,
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

impl Faults {
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
}
