//! Counters of the writer, readable while it runs.

use std::time::Duration;

/// How many recent fsync latencies the percentiles are computed over.
pub const LATENCY_WINDOW: usize = 4096;

/// The upper bounds, in microseconds, of the fsync duration histogram's
/// buckets (a Prometheus histogram's `le`), from 50 us to 2.5 s.
pub const FSYNC_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    2_500_000,
];

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriterStats {
    /// Records appended (accepted into the log).
    pub appends: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// `pwrite` calls (each writes one gathered batch).
    pub writes: u64,
    /// Successful fdatasyncs.
    pub fsyncs: u64,
    /// Records made durable by those fsyncs.
    pub records_fsynced: u64,
    /// The most records one fsync made durable.
    pub max_records_per_fsync: u64,
    /// Segments created by rotation.
    pub rotations: u64,
    /// Segment files the `everysec` thread opened for its fsyncs: one
    /// per segment it fsynced, not one per fsync.
    pub fsync_thread_opens: u64,
    /// Directory fsyncs that made a segment file's creation durable (at
    /// open and at each rotation), or a torn tail's backup before its cut.
    /// Not counted: those of creating the directory, and of
    /// [`super::AofWriter::delete_covered`]'s deletions.
    pub dir_fsyncs: u64,
    /// Bytes of torn tail cut from the last segment when the writer opened.
    pub truncated_on_open: u64,
    /// Fsync latency percentiles over the last [`LATENCY_WINDOW`] fsyncs.
    pub fsync_p50: Duration,
    /// The 90th percentile.
    pub fsync_p90: Duration,
    /// The 99th percentile.
    pub fsync_p99: Duration,
    /// The longest.
    pub fsync_max: Duration,
    /// Fsyncs that took at most each bound of [`FSYNC_BUCKETS_US`]
    /// (cumulative, as a histogram's buckets), over every fsync.
    pub fsync_buckets: [u64; FSYNC_BUCKETS_US.len()],
    /// The total duration of every fsync.
    pub fsync_total: Duration,
}

impl WriterStats {
    /// Mean records per fsync: the group-commit factor.
    pub fn records_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 {
            0.0
        } else {
            self.records_fsynced as f64 / self.fsyncs as f64
        }
    }
}

/// The live counters, kept under the writer's state lock (every update
/// happens where that lock is already held).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appends: u64,
    pub bytes: u64,
    pub writes: u64,
    pub fsyncs: u64,
    pub records_fsynced: u64,
    pub max_records_per_fsync: u64,
    pub rotations: u64,
    pub fsync_thread_opens: u64,
    pub dir_fsyncs: u64,
    pub truncated_on_open: u64,
    /// Records written since the last fsync: what the next one covers.
    pub unsynced_records: u64,
    latencies: Vec<u32>,
    next: usize,
    /// Fsyncs per bucket of [`FSYNC_BUCKETS_US`] (not cumulative).
    buckets: [u64; FSYNC_BUCKETS_US.len()],
    total: Duration,
}

impl Counters {
    pub fn record_fsync(&mut self, latency: Duration) {
        let records = std::mem::take(&mut self.unsynced_records);
        self.fsyncs += 1;
        self.records_fsynced += records;
        self.max_records_per_fsync = self.max_records_per_fsync.max(records);
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if let Some(i) = FSYNC_BUCKETS_US
            .iter()
            .position(|&b| u64::from(micros) <= b)
        {
            self.buckets[i] += 1;
        }
        self.total = self.total.saturating_add(latency);
        if self.latencies.len() < LATENCY_WINDOW {
            self.latencies.push(micros);
        } else {
            self.latencies[self.next] = micros;
        }
        self.next = (self.next + 1) % LATENCY_WINDOW;
    }

    pub fn snapshot(&self) -> WriterStats {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> Duration {
            if sorted.is_empty() {
                return Duration::ZERO;
            }
            let i = ((sorted.len() - 1) as f64 * p).round() as usize;
            Duration::from_micros(u64::from(sorted[i]))
        };
        let mut cumulative = [0u64; FSYNC_BUCKETS_US.len()];
        let mut sum = 0;
        for (c, n) in cumulative.iter_mut().zip(self.buckets) {
            sum += n;
            *c = sum;
        }
        WriterStats {
            appends: self.appends,
            bytes: self.bytes,
            writes: self.writes,
            fsyncs: self.fsyncs,
            records_fsynced: self.records_fsynced,
            max_records_per_fsync: self.max_records_per_fsync,
            rotations: self.rotations,
            fsync_thread_opens: self.fsync_thread_opens,
            dir_fsyncs: self.dir_fsyncs,
            truncated_on_open: self.truncated_on_open,
            fsync_p50: pct(0.50),
            fsync_p90: pct(0.90),
            fsync_p99: pct(0.99),
            fsync_max: pct(1.0),
            fsync_buckets: cumulative,
            fsync_total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_counts_each_fsync_in_the_first_bucket_that_holds_it() {
        let mut c = Counters::default();
        for us in [40, 50, 3_000, 10_000_000] {
            c.record_fsync(Duration::from_micros(us));
        }
        let s = c.snapshot();
        // <= 50 us: two; <= 5 ms: three; past 2.5 s: only in +Inf (fsyncs).
        assert_eq!(s.fsync_buckets[0], 2);
        assert_eq!(s.fsync_buckets[6], 3);
        assert_eq!(*s.fsync_buckets.last().unwrap(), 3);
        assert_eq!(s.fsyncs, 4);
        assert_eq!(s.fsync_total, Duration::from_micros(10_003_090));
    }
}
