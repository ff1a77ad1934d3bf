//! Group-commit scaling without Python: threads appending with `always`.
//! A measurement, not a test of behaviour; run it by hand:
//!
//!     cargo test --release -p openmatch-aof --test writer_scaling -- --ignored --nocapture

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openmatch_aof::writer::{AofWriter, WriterOptions};
use openmatch_aof::{encode_frame, AofOperation, EpochId, EpochPhase};

#[test]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
fn always_scales_with_threads() {
    // About the size of an encoded Order.
    let frame = encode_frame(&AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Seal))
        .unwrap()
        .repeat(11);
    for round in 0..2 {
        for threads in [1usize, 4, 16, 64] {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let w = Arc::new(AofWriter::open(dir.path(), WriterOptions::default()).unwrap());
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (w, stop, count) = (w.clone(), stop.clone(), count.clone());
                    let frame = frame.clone();
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            w.append_frames(&frame, 1).unwrap();
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_millis(700));
            stop.store(true, Ordering::Relaxed);
            for h in handles {
                h.join().unwrap();
            }
            let rate = count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
            let s = w.stats();
            eprintln!(
                "round {round}, {threads:2} threads: {rate:8.0} appends/s, {:5.1} records/fsync, fsync p50 {:?}",
                s.records_per_fsync(),
                s.fsync_p50
            );
        }
    }
}
