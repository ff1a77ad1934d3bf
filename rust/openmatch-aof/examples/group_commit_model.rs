//! A minimal group commit, to measure what the shape of group commit allows
//! on a machine, apart from this crate's writer: `threads` appenders, each
//! with one append in flight; whoever finds the queue idle writes it and
//! fsyncs; up to `in_flight` fsyncs at once, each through a descriptor of
//! its own. With `sleep_us` the fsync is replaced by a sleep of that long,
//! which shows the ceiling with no disk at all (docs/fsync-benchmark.md,
//! "What group commit allows here").
//!
//! ```text
//! cargo run --release -p openmatch-aof --example group_commit_model -- \
//!     DIR IN_FLIGHT THREADS [SECONDS] [SLEEP_US]
//! ```
//!
//! A measuring tool, not a writer: it ignores write-back errors and never
//! recovers anything.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct Queue {
    pending: Vec<u8>,
    end: u64,
    written: u64,
    durable: u64,
    writing: bool,
    syncing: usize,
    free: Vec<usize>,
    fsyncs: u64,
}

struct Model {
    queue: Mutex<Queue>,
    changed: Condvar,
    files: Vec<File>,
    in_flight: usize,
    sleep: Option<Duration>,
}

impl Model {
    fn append(&self, record: &[u8]) -> std::io::Result<()> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.pending.extend_from_slice(record);
        q.end += record.len() as u64;
        let target = q.end;
        while q.durable < target {
            if q.writing || q.pending.is_empty() || q.syncing >= self.in_flight {
                q = self.changed.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.writing = true;
            let batch = std::mem::take(&mut q.pending);
            let at = q.written;
            drop(q);
            self.files[0].write_all_at(&batch, at)?;
            q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.written = at + batch.len() as u64;
            q.writing = false;
            let covers = q.written;
            q.syncing += 1;
            let file = q.free.pop().unwrap_or(0);
            drop(q);
            self.changed.notify_all();
            match self.sleep {
                Some(pause) => std::thread::sleep(pause),
                None => self.files[file].sync_data()?,
            }
            q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.syncing -= 1;
            q.free.push(file);
            q.fsyncs += 1;
            q.durable = q.durable.max(covers);
            self.changed.notify_all();
        }
        Ok(())
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> T {
    match args.get(i).map(|a| a.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => default.unwrap_or_else(|| {
            eprintln!("usage: group_commit_model DIR IN_FLIGHT THREADS [SECONDS] [SLEEP_US]");
            std::process::exit(2)
        }),
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir: PathBuf = arg(&args, 1, None);
    let in_flight: usize = arg::<usize>(&args, 2, None).max(1);
    let threads: usize = arg::<usize>(&args, 3, None).max(1);
    let seconds: f64 = arg(&args, 4, Some(3.0));
    let sleep = args
        .get(5)
        .map(|_| Duration::from_micros(arg(&args, 5, None)));
    let path = dir.join(format!("group-commit-model-{}", std::process::id()));
    let first = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let mut files = vec![first];
    for _ in 1..in_flight {
        files.push(File::open(&path)?);
    }
    let model = Arc::new(Model {
        queue: Mutex::new(Queue {
            pending: Vec::new(),
            end: 0,
            written: 0,
            durable: 0,
            writing: false,
            syncing: 0,
            free: (0..in_flight).collect(),
            fsyncs: 0,
        }),
        changed: Condvar::new(),
        files,
        in_flight,
        sleep,
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let appenders: Vec<_> = (0..threads)
        .map(|_| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || -> std::io::Result<u64> {
                let record = [0xa5u8; 66];
                let mut n = 0;
                while Instant::now() < deadline {
                    model.append(&record)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut appends = 0;
    for a in appenders {
        appends += a.join().expect("an appender panicked")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fsyncs = model.queue.lock().unwrap_or_else(|p| p.into_inner()).fsyncs;
    std::fs::remove_file(&path)?;
    println!(
        "in_flight={in_flight} threads={threads} fsync={} appends/s={:.0} records/fsync={:.1}",
        sleep.map_or("disk".to_string(), |s| format!(
            "sleep {} us",
            s.as_micros()
        )),
        appends as f64 / elapsed,
        appends as f64 / fsyncs.max(1) as f64
    );
    Ok(())
}
