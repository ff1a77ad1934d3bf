//! The three fsync policies, each decided here and nowhere else (as Redis
//! keeps `appendfsync` in one place of aof.c).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When an append's bytes reach stable storage; the names of Redis'
/// `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsyncPolicy {
    /// An append returns after an fdatasync that covers its record. Nothing
    /// acknowledged is lost by a crash of the process or of the machine.
    Always,
    /// An append returns after its record is written to the kernel; a
    /// background thread fdatasyncs at least every [`EVERYSEC_INTERVAL`].
    /// A machine crash loses at most the appends of the last interval plus
    /// the duration of one fsync; a process crash loses nothing.
    EverySec,
    /// An append returns after its record is written to the kernel; the
    /// kernel flushes when it likes (Linux: about 30 s). The writer fsyncs
    /// on rotation and close only.
    No,
}

/// How often [`FsyncPolicy::EverySec`] fsyncs.
pub const EVERYSEC_INTERVAL: Duration = Duration::from_secs(1);

impl FsyncPolicy {
    /// Every policy, strongest first.
    pub const ALL: [FsyncPolicy; 3] = [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No];

    /// The name used by the Python API and Redis' configuration.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }

    /// Whether an append waits for an fsync (else only for its write).
    pub fn append_waits_for_fsync(self) -> bool {
        matches!(self, FsyncPolicy::Always)
    }

    /// The period of the background fsync thread, if the policy has one.
    pub fn background_interval(self) -> Option<Duration> {
        match self {
            FsyncPolicy::EverySec => Some(EVERYSEC_INTERVAL),
            FsyncPolicy::Always | FsyncPolicy::No => None,
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FsyncPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("fsync must be 'always', 'everysec' or 'no', not {s:?}"))
    }
}
