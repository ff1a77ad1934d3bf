//! The durable writer: group commit, rotation, recovery, lock, failures.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openmatch_aof::codec::{encode_run_into, BoundedFrames, EncodeError, HEADER_LEN};
use openmatch_aof::segment::{list_segments, segment_file_name};
use openmatch_aof::writer::{
    AofWriter, Fault, FsyncPolicy, Gate, Gather, WriterError, WriterOptions,
};
use openmatch_aof::{decode_all, encode_frame, AofOperation, EpochId, EpochPhase};

fn op(i: u64) -> AofOperation {
    AofOperation::EpochAdvanced(EpochId(i), EpochPhase::Seal)
}

fn opts(fsync: FsyncPolicy) -> WriterOptions {
    WriterOptions {
        fsync,
        ..WriterOptions::default()
    }
}

/// Every operation in the directory's segments, in log order.
fn read_log(dir: &Path) -> Vec<AofOperation> {
    let mut ops = Vec::new();
    let mut expected_start = 0;
    for seg in list_segments(dir).unwrap() {
        assert_eq!(seg.start, expected_start, "segments are contiguous");
        let data = fs::read(&seg.path).unwrap();
        ops.extend(decode_all(&data, u32::MAX).unwrap());
        expected_start = seg.end();
    }
    ops
}

#[test]
fn appends_return_end_positions_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let frame_len = encode_frame(&op(0)).unwrap().len() as u64;
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(w.position(), 0);
    let p1 = w.append(&op(1)).unwrap();
    assert_eq!(p1, frame_len);
    assert_eq!(w.durable_position(), p1);
    let p2 = w.append_many([op(2), op(3)].iter()).unwrap();
    assert_eq!(p2, 3 * frame_len);
    assert_eq!(w.locate(p2).unwrap().1, p2);
    w.close().unwrap();
    assert!(matches!(w.append(&op(4)), Err(WriterError::Closed { .. })));

    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(w.position(), p2);
    assert_eq!(w.append(&op(4)).unwrap(), 4 * frame_len);
    drop(w);
    assert_eq!(read_log(dir.path()), vec![op(1), op(2), op(3), op(4)]);
}

#[test]
fn group_commit_lands_every_append_exactly_once() {
    for policy in FsyncPolicy::ALL {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(AofWriter::open(dir.path(), opts(policy)).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut positions = Vec::new();
                    for i in 0..100u64 {
                        let p = w.append(&op(t * 1000 + i)).unwrap();
                        assert!(p > last, "positions grow within a thread");
                        last = p;
                        positions.push(p);
                    }
                    positions
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for p in t.join().unwrap() {
                assert!(all.insert(p), "position {p} returned twice");
            }
        }
        assert_eq!(all.len(), 800);
        if policy == FsyncPolicy::Always {
            assert_eq!(w.durable_position(), w.position());
        }
        let stats = w.stats();
        assert_eq!(stats.appends, 800);
        match policy {
            // Every append waited for an fsync that covered it.
            FsyncPolicy::Always => assert_eq!(stats.records_fsynced, 800),
            // Only the background thread fsyncs, each record at most once.
            FsyncPolicy::EverySec => assert!(stats.records_fsynced <= 800),
            // Nothing asked for an fsync yet.
            FsyncPolicy::No => assert_eq!((stats.records_fsynced, stats.fsyncs), (0, 0)),
        }
        w.close().unwrap();
        // Close fsyncs the rest: every record counted once, whatever the policy.
        assert_eq!(w.stats().records_fsynced, 800, "policy {policy}");
        let ops: HashSet<_> = read_log(dir.path())
            .into_iter()
            .map(|o| match o {
                AofOperation::EpochAdvanced(EpochId(i), _) => i,
                _ => unreachable!(),
            })
            .collect();
        let expected: HashSet<u64> = (0..8)
            .flat_map(|t| (0..100).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(ops, expected, "policy {policy}");
    }
}

#[test]
fn gathering_window_batches_and_wait_durable_syncs_under_any_policy() {
    let dir = tempfile::tempdir().unwrap();
    let o = WriterOptions {
        fsync: FsyncPolicy::No,
        gather: Gather::Window(std::time::Duration::from_millis(2)),
        max_batch_bytes: 64,
        ..WriterOptions::default()
    };
    let w = AofWriter::open(dir.path(), o).unwrap();
    let p = w.append(&op(1)).unwrap();
    assert_eq!(w.written_position(), p);
    assert_eq!(w.durable_position(), 0);
    assert_eq!(w.wait_durable(p).unwrap(), p);
    assert_eq!(w.durable_position(), p);
    assert!(matches!(
        w.wait_durable(p + 1),
        Err(WriterError::Invalid(_))
    ));
    let q = w.submit_frames(&encode_frame(&op(2)).unwrap(), 1).unwrap();
    assert_eq!(w.wait_appended(q).unwrap(), q);
}

/// Waits until `cond` holds: the threads it waits for are blocked at a
/// gate or parked, not slow, so it holds soon unless the code is wrong.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// No `wait_durable` returns before an fsync that covers its position, with
/// the interleaving forced (held I/O), not hoped for: a waiter parked
/// behind a leader whose batch is written without an fsync (the leader
/// decided before the waiter asked) is woken once its record is written,
/// and must then fsync itself rather than return.
#[test]
fn no_wait_durable_returns_before_its_fsync() {
    for policy in [FsyncPolicy::EverySec, FsyncPolicy::No] {
        let dir = tempfile::tempdir().unwrap();
        let o = WriterOptions {
            fsync: policy,
            gather: Gather::Off,
            ..WriterOptions::default()
        };
        let w = Arc::new(AofWriter::open(dir.path(), o).unwrap());
        for gate in [Gate::Write, Gate::Fsync, Gate::BackgroundFsync] {
            w.hold_io(gate, true);
        }
        let appender = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.append(&op(1)).unwrap())
        };
        until("the appender leads, held before its write", || {
            w.threads_held(Gate::Write) == 1
        });
        let target = w.position();
        let returned = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (w, returned) = (Arc::clone(&w), Arc::clone(&returned));
            std::thread::spawn(move || {
                let p = w.wait_durable(target).unwrap();
                returned.store(true, Ordering::SeqCst);
                (p, w.durable_position())
            })
        };
        until("the durable waiter parks behind the leader", || {
            w.parked_waiters() == 1
        });
        w.hold_io(Gate::Write, false);
        assert_eq!(appender.join().unwrap(), target, "the append is written");
        until("the waiter returns or reaches an fsync", || {
            returned.load(Ordering::SeqCst) || w.threads_held(Gate::Fsync) == 1
        });
        assert!(
            !returned.load(Ordering::SeqCst),
            "{policy}: wait_durable returned with nothing fsynced"
        );
        assert_eq!(w.written_position(), target);
        assert!(w.durable_position() < target);
        w.hold_io(Gate::Fsync, false);
        let (p, durable_then) = waiter.join().unwrap();
        assert_eq!(p, target);
        assert!(
            durable_then >= target,
            "{policy}: returned at durable {durable_then}"
        );
        assert_eq!(w.stats().fsyncs, 1);
        w.hold_io(Gate::BackgroundFsync, false);
        w.close().unwrap();
    }
}

/// A leader that waits for durability itself returns only after its fsync.
#[test]
fn a_leading_wait_durable_returns_after_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap());
    let p = w.append(&op(1)).unwrap();
    w.hold_io(Gate::Fsync, true);
    let returned = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (w, returned) = (Arc::clone(&w), Arc::clone(&returned));
        std::thread::spawn(move || {
            w.wait_durable(p).unwrap();
            returned.store(true, Ordering::SeqCst);
            w.durable_position()
        })
    };
    until("the waiter returns or reaches its fsync", || {
        returned.load(Ordering::SeqCst) || w.threads_held(Gate::Fsync) == 1
    });
    assert!(!returned.load(Ordering::SeqCst));
    assert_eq!(w.durable_position(), 0);
    w.hold_io(Gate::Fsync, false);
    assert_eq!(waiter.join().unwrap(), p);
    w.close().unwrap();
}

#[test]
fn everysec_fsyncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::EverySec)).unwrap();
    let durable_in_background = |p: u64| {
        until("a background fsync covers the append", || {
            w.durable_position() >= p
        })
    };
    durable_in_background(w.append(&op(1)).unwrap());
    assert!(w.stats().fsyncs >= 1);
    // The background fsync has an open file description of its own (a
    // writeback error is reported once per description): two for the
    // segment, also after a rotation.
    let segment = |w: &AofWriter| w.locate(w.position()).unwrap().0;
    assert_eq!(descriptors_of(&segment(&w)), 2);
    let rotated_at = w.rotate().unwrap();
    let p = w.append(&op(2)).unwrap();
    assert!(p > rotated_at);
    durable_in_background(p);
    assert_eq!(descriptors_of(&segment(&w)), 2);
    // It opens each segment once, not once per fsync.
    durable_in_background(w.append(&op(3)).unwrap());
    assert_eq!(w.stats().fsync_thread_opens, 2, "two segments");
    w.close().unwrap();
}

#[test]
fn everysec_fails_the_writer_when_its_thread_cannot_open_its_own_descriptor() {
    // Sharing the leader's descriptor instead would let one of two
    // concurrent fsyncs report success over lost pages: the thread must
    // fail the writer, and every appender must hear why.
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::EverySec)).unwrap();
    w.inject_fault(Fault::Reopen, 1);
    let p = w.append(&op(1)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !w.is_failed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background thread went on without its own descriptor (durable at {} of {p})",
            w.durable_position()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let reason = w.failure().unwrap();
    assert!(reason.contains("own descriptor"), "{reason}");
    assert!(
        w.durable_position() < p,
        "nothing was fsynced through a shared descriptor"
    );
    match w.append(&op(2)) {
        Err(WriterError::Failed { reason }) => assert!(reason.contains("own descriptor")),
        other => panic!("append after the failure: {other:?}"),
    }
    w.close().unwrap();
}

/// How many of this process's file descriptors are open on `path`.
fn descriptors_of(path: &Path) -> usize {
    let path = fs::canonicalize(path).unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| *target == path)
        .count()
}

#[test]
fn rotation_starts_a_segment_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(w.rotate().unwrap(), 0, "an empty segment is kept");
    let p1 = w.append(&op(1)).unwrap();
    assert_eq!(w.rotate().unwrap(), p1);
    assert_eq!(w.durable_position(), p1, "rotation fsyncs the old segment");
    let p2 = w.append(&op(2)).unwrap();
    let (path, offset) = w.locate(p2).unwrap();
    assert_eq!(path, dir.path().join(segment_file_name(p1)));
    assert_eq!(offset, p2 - p1);
    assert_eq!(
        w.locate(p1).unwrap().0,
        dir.path().join(segment_file_name(0))
    );
    let p3 = w.rotate().unwrap();
    assert_eq!(p3, p2);
    w.close().unwrap();
    let starts: Vec<u64> = list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|s| s.start)
        .collect();
    assert_eq!(starts, vec![0, p1, p2]);

    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(w.segment_start(), p2);
    w.append(&op(3)).unwrap();
    drop(w);
    assert_eq!(read_log(dir.path()), vec![op(1), op(2), op(3)]);
}

#[test]
fn torn_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    let p = w.append_many([op(1), op(2)].iter()).unwrap();
    drop(w);
    let seg = dir.path().join(segment_file_name(0));
    let frame = encode_frame(&op(3)).unwrap();
    for cut in [1, 7, 8, frame.len() - 1] {
        fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&frame[..cut])
            .unwrap();
        let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
        assert_eq!(w.open_report().truncated_bytes, cut as u64);
        assert_eq!(w.stats().truncated_on_open, cut as u64);
        assert_eq!(w.position(), p);
        drop(w);
        assert_eq!(fs::metadata(&seg).unwrap().len(), p);
    }
    // A zero-filled tail (a grown file whose data never reached the disk).
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0u8; 100])
        .unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(w.open_report().truncated_bytes, 100);
    assert_eq!(w.append(&op(3)).unwrap(), p + frame.len() as u64);
    drop(w);
    assert_eq!(read_log(dir.path()), vec![op(1), op(2), op(3)]);
}

#[test]
fn corruption_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    let p1 = w.append(&op(1)).unwrap();
    w.append(&op(2)).unwrap();
    drop(w);
    let seg = dir.path().join(segment_file_name(0));
    let mut data = fs::read(&seg).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x40;
    fs::write(&seg, &data).unwrap();
    match AofWriter::open(dir.path(), opts(FsyncPolicy::Always)) {
        Err(WriterError::Corrupt {
            path,
            offset,
            cause,
        }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, p1);
            assert_eq!(cause.name(), "checksum_mismatch");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), data, "nothing was cut");
}

#[test]
fn damaged_length_in_the_middle_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    w.append_many([op(1), op(2), op(3)].iter()).unwrap();
    drop(w);
    let seg = dir.path().join(segment_file_name(0));
    let mut data = fs::read(&seg).unwrap();
    data[2] = 0x01; // frame 1's length becomes 65,560: past the end of the file
    fs::write(&seg, &data).unwrap();
    match AofWriter::open(dir.path(), opts(FsyncPolicy::Always)) {
        Err(WriterError::Corrupt { offset, cause, .. }) => {
            assert_eq!(offset, 0);
            assert_eq!(cause.name(), "length_past_end");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), data, "nothing was cut");
}

#[test]
fn one_writer_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert!(matches!(
        AofWriter::open(dir.path(), opts(FsyncPolicy::Always)),
        Err(WriterError::Locked { .. })
    ));
    w.close().unwrap();
    let again = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    drop(again);
}

#[test]
fn files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("aof");
    let w = AofWriter::open(&sub, opts(FsyncPolicy::Always)).unwrap();
    w.append(&op(1)).unwrap();
    w.rotate().unwrap();
    drop(w);
    assert_eq!(
        fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in fs::read_dir(&sub).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn failed_fsync_is_never_acknowledged_nor_retried() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap());
    let p1 = w.append(&op(1)).unwrap();
    w.inject_fault(Fault::Fsync, 1);
    match w.append(&op(2)) {
        Err(WriterError::Failed { reason }) => assert!(reason.contains("fdatasync"), "{reason}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert!(w.is_failed());
    assert_eq!(w.durable_position(), p1);
    let fsyncs = w.stats().fsyncs;
    // Later appends and waits fail at once; nothing is fsynced again.
    assert!(matches!(w.append(&op(3)), Err(WriterError::Failed { .. })));
    assert!(w.wait_durable(p1).is_ok(), "what was durable stays so");
    assert!(matches!(w.rotate(), Err(WriterError::Failed { .. })));
    w.close().unwrap();
    assert_eq!(w.stats().fsyncs, fsyncs);
    drop(w);
    // Reopening re-reads the disk: op(2) was written (not acknowledged).
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert!(!w.is_failed());
    w.append(&op(4)).unwrap();
    drop(w);
    assert_eq!(read_log(dir.path()), vec![op(1), op(2), op(4)]);
}

#[test]
fn failed_write_fails_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap());
    w.inject_fault(Fault::Write, 1);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.append(&op(t)))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // The first batch fails; any append that got in before it succeeded
    // durably, every other one failed — none is acknowledged without fsync.
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(WriterError::Failed { .. }))));
    for p in results.iter().flatten() {
        assert!(*p <= w.durable_position());
    }
    assert!(matches!(w.append(&op(9)), Err(WriterError::Failed { .. })));
}

#[test]
fn appends_rotations_and_durable_waits_interleave_without_loss() {
    for policy in FsyncPolicy::ALL {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(AofWriter::open(dir.path(), opts(policy)).unwrap());
        let appenders: Vec<_> = (0..6u64)
            .map(|t| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..60u64 {
                        let p = w.append(&op(t * 1000 + i)).unwrap();
                        if i % 7 == 0 {
                            assert!(w.wait_durable(p).unwrap() <= w.durable_position());
                        }
                        acked.push(p);
                    }
                    acked
                })
            })
            .collect();
        let rotator = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    w.rotate().unwrap();
                    std::thread::yield_now();
                }
            })
        };
        rotator.join().unwrap();
        let mut acked: Vec<u64> = appenders
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        w.close().unwrap();
        acked.sort_unstable();
        let log = read_log(dir.path());
        assert_eq!(log.len(), 360, "policy {policy}");
        // Every returned position is the end of a record in the log.
        let mut ends = Vec::new();
        let mut pos = 0u64;
        for seg in list_segments(dir.path()).unwrap() {
            let data = fs::read(&seg.path).unwrap();
            for o in decode_all(&data, u32::MAX).unwrap() {
                pos += encode_frame(&o).unwrap().len() as u64;
                ends.push(pos);
            }
        }
        assert_eq!(acked, ends, "policy {policy}");
    }
}

/// A writer with `n` segments, one record each but the last (empty);
/// returns it and the segments' start positions.
fn writer_with_segments(dir: &Path, n: usize) -> (AofWriter, Vec<u64>) {
    let w = AofWriter::open(dir, opts(FsyncPolicy::Always)).unwrap();
    let mut starts = vec![0];
    for i in 1..n {
        w.append(&op(i as u64)).unwrap();
        starts.push(w.rotate().unwrap());
    }
    (w, starts)
}

fn segment_starts(dir: &Path) -> Vec<u64> {
    list_segments(dir)
        .unwrap()
        .iter()
        .map(|s| s.start)
        .collect()
}

#[test]
fn delete_covered_deletes_only_covered_segments_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (w, starts) = writer_with_segments(dir.path(), 4);
    let frame_len = starts[1];
    // A segment is covered only once its successor starts at or before `covered`.
    assert_eq!(w.delete_covered(0).unwrap(), (0, 0));
    assert_eq!(w.delete_covered(starts[1] - 1).unwrap(), (0, 0));
    assert_eq!(w.delete_covered(starts[2] - 1).unwrap(), (1, frame_len));
    assert_eq!(segment_starts(dir.path()), starts[1..]);
    assert!(matches!(w.locate(starts[1]), Err(WriterError::Invalid(_))));
    assert_eq!(w.locate(starts[2]).unwrap().1, frame_len);
    // Never the segment appended to, however far `covered` reaches.
    assert_eq!(w.delete_covered(u64::MAX).unwrap(), (2, 2 * frame_len));
    assert_eq!(segment_starts(dir.path()), vec![starts[3]]);
    assert_eq!(w.delete_covered(u64::MAX).unwrap(), (0, 0));
    let end = w.append(&op(9)).unwrap();
    w.close().unwrap();
    assert!(matches!(
        w.delete_covered(u64::MAX),
        Err(WriterError::Closed { .. })
    ));
    let again = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    assert_eq!(again.position(), end);
}

#[test]
fn delete_covered_never_deletes_the_only_segment() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    let end = w.append(&op(1)).unwrap();
    assert_eq!(w.delete_covered(u64::MAX).unwrap(), (0, 0));
    assert_eq!(w.delete_covered(end).unwrap(), (0, 0));
    assert_eq!(segment_starts(dir.path()), vec![0]);
}

#[test]
fn delete_covered_beside_rotations_leaves_a_contiguous_log() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap());
    let rotator = {
        let w = Arc::clone(&w);
        std::thread::spawn(move || {
            for i in 0..200 {
                w.append(&op(i)).unwrap();
                w.rotate().unwrap();
            }
        })
    };
    let mut deleted = 0;
    while !rotator.is_finished() {
        deleted += w.delete_covered(w.position()).unwrap().0;
    }
    rotator.join().unwrap();
    deleted += w.delete_covered(u64::MAX).unwrap().0;
    assert_eq!(deleted, 200);
    assert_eq!(segment_starts(dir.path()), vec![w.segment_start()]);
    w.append(&op(1000)).unwrap();
    w.close().unwrap();
    let last = &list_segments(dir.path()).unwrap()[0];
    assert_eq!(
        decode_all(&fs::read(&last.path).unwrap(), u32::MAX).unwrap(),
        vec![op(1000)]
    );
}

#[test]
fn segments_close_on_their_own_at_rotate_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let frame_len = encode_frame(&op(0)).unwrap().len() as u64;
    let o = WriterOptions {
        fsync: FsyncPolicy::No,
        rotate_bytes: Some(10 * frame_len),
        ..WriterOptions::default()
    };
    let w = Arc::new(AofWriter::open(dir.path(), o).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                for i in 0..50 {
                    w.append(&op(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let segments = list_segments(dir.path()).unwrap();
    let (last, closed) = segments.split_last().unwrap();
    assert!(closed.len() >= 10, "{} closed segments", closed.len());
    for s in closed {
        assert!(fs::metadata(&s.path).unwrap().len() >= 10 * frame_len);
    }
    assert!(fs::metadata(&last.path).unwrap().len() < 10 * frame_len);
    assert_eq!(read_log(dir.path()).len(), 200);
    assert!(matches!(
        AofWriter::open(
            dir.path(),
            WriterOptions {
                rotate_bytes: Some(0),
                ..WriterOptions::default()
            }
        ),
        Err(WriterError::Invalid(_))
    ));
}

#[test]
fn any_serde_value_is_framed_as_the_operation_it_mirrors() {
    #[derive(serde::Serialize)]
    enum EngineOp {
        _OrderReceived,
        _OrderCancelled,
        _BufferSealed,
        _TradeExecuted,
        _BalanceUpdated,
        EpochAdvanced(u64, EpochPhase),
    }
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    w.append_value(&EngineOp::EpochAdvanced(9, EpochPhase::Seal))
        .unwrap();
    w.append_value(&op(10)).unwrap();
    drop(w);
    assert_eq!(read_log(dir.path()), vec![op(9), op(10)]);
}

/// The policies' names are Redis' `appendfsync` values, and parse back.
#[test]
fn policy_names_are_redis_names_and_parse_back() {
    let names: Vec<&str> = FsyncPolicy::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["always", "everysec", "no"]);
    for policy in FsyncPolicy::ALL {
        assert_eq!(policy.name().parse::<FsyncPolicy>(), Ok(policy));
        assert_eq!(policy.to_string(), policy.name());
    }
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
    assert!(FsyncPolicy::Always.append_waits_for_fsync());
    assert!(!FsyncPolicy::EverySec.append_waits_for_fsync());
    assert!(!FsyncPolicy::No.append_waits_for_fsync());
    assert_eq!(
        FsyncPolicy::EverySec.background_interval(),
        Some(openmatch_aof::writer::EVERYSEC_INTERVAL)
    );
    assert_eq!(FsyncPolicy::Always.background_interval(), None);
    assert_eq!(FsyncPolicy::No.background_interval(), None);
}

/// Opening checks the tail with the writer's own frame limit: a frame
/// whose payload is past it is refused as oversized (naming the limit, not
/// as corruption), not a frame to keep appending after nor one to cut.
#[test]
fn opening_checks_frames_against_the_writers_own_payload_limit() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    w.append(&op(1)).unwrap();
    w.close().unwrap();
    drop(w);
    let payload = encode_frame(&op(1)).unwrap().len() as u32 - 8;
    let small = WriterOptions {
        max_payload: payload - 1,
        ..opts(FsyncPolicy::Always)
    };
    let seg = dir.path().join(segment_file_name(0));
    let before = fs::read(&seg).unwrap();
    match AofWriter::open(dir.path(), small) {
        Err(WriterError::Oversized { offset, limit, .. }) => {
            assert_eq!((offset, limit), (0, payload - 1));
        }
        other => panic!("expected an oversized refusal, got {other:?}"),
    }
    assert_eq!(fs::read(&seg).unwrap(), before, "nothing was cut");
    let exact = WriterOptions {
        max_payload: payload,
        ..opts(FsyncPolicy::Always)
    };
    assert_eq!(
        AofWriter::open(dir.path(), exact).unwrap().position(),
        payload as u64 + 8
    );
}

/// A gathering leader writes as soon as its batch is full, not at the end
/// of its window: with a window longer than any test, the append that
/// fills the batch must end the wait, and both records ride one write.
#[test]
fn a_full_batch_ends_the_gathering_window() {
    let dir = tempfile::tempdir().unwrap();
    let frame = |i| encode_frame(&op(i)).unwrap();
    let o = WriterOptions {
        fsync: FsyncPolicy::No,
        gather: Gather::Window(Duration::from_secs(3600)),
        max_batch_bytes: 2 * frame(0).len(),
        ..WriterOptions::default()
    };
    let w = Arc::new(AofWriter::open(dir.path(), o).unwrap());
    // Never dropped, even when an assertion fails: a close with a record
    // still pending would gather for the whole window (an hour).
    let _never_closed = std::mem::ManuallyDrop::new(Arc::clone(&w));
    let p1 = w.submit_frames(&frame(1), 1).unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.wait_appended(p1).unwrap())
        })
        .collect();
    until("one waiter gathers as the leader, the other parks", || {
        w.parked_waiters() == 1
    });
    assert_eq!(w.written_position(), 0, "the leader is still gathering");
    let p2 = w.submit_frames(&frame(2), 1).unwrap();
    until("the full batch is written", || w.written_position() == p2);
    for t in waiters {
        assert_eq!(t.join().unwrap(), p1);
    }
    assert_eq!(w.stats().writes, 1, "one write for the whole batch");
    assert_eq!(read_log(dir.path()), vec![op(1), op(2)]);
}

/// A leader with nothing to write does not gather: with everything
/// written but not yet durable, `wait_durable` and `close` lead for an
/// fsync alone, and return without waiting out the window (an hour here;
/// the test gives up after two minutes and says why).
#[test]
fn a_leader_with_nothing_pending_does_not_gather() {
    let dir = tempfile::tempdir().unwrap();
    let o = WriterOptions {
        fsync: FsyncPolicy::No,
        gather: Gather::Window(Duration::from_secs(3600)),
        max_batch_bytes: 1, // any record fills a batch: appends never gather
        ..WriterOptions::default()
    };
    let w = AofWriter::open(dir.path(), o).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let p = w.append(&op(1)).unwrap();
        assert_eq!(w.durable_position(), 0, "fsync=no: written, not durable");
        w.wait_durable(p).unwrap();
        let p = w.append(&op(2)).unwrap();
        w.close().unwrap();
        let _ = done.send((p, w.durable_position(), w.stats().fsyncs));
    });
    let (end, durable, fsyncs) = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("wait_durable or close gathered for the window with nothing pending");
    assert_eq!((durable, fsyncs), (end, 2));
    assert_eq!(read_log(dir.path()), vec![op(1), op(2)]);
}

/// The counters count the I/O done: a write only for bytes written, an
/// fsync only when something written is not yet durable, and each record
/// fsynced once.
#[test]
fn stats_count_the_writes_and_fsyncs_done() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    let p1 = w.append(&op(1)).unwrap();
    let p2 = w.append_many([op(2), op(3)].iter()).unwrap();
    let s = w.stats();
    assert_eq!((s.appends, s.bytes), (3, p2));
    assert_eq!((s.writes, s.fsyncs, s.records_fsynced), (2, 0, 0));
    // Nothing to write: an fsync alone, which is not a write.
    assert_eq!(w.wait_durable(p1).unwrap(), p1);
    let s = w.stats();
    assert_eq!((s.writes, s.fsyncs, s.records_fsynced), (2, 1, 3));
    assert_eq!(s.max_records_per_fsync, 3);
    assert_eq!(w.durable_position(), p2, "the fsync covers all written");
    // Already durable: no I/O at all, nor at close.
    assert_eq!(w.wait_durable(p2).unwrap(), p2);
    w.close().unwrap();
    let s = w.stats();
    assert_eq!((s.writes, s.fsyncs, s.records_fsynced), (2, 1, 3));
}

/// What a writer reports about itself: its directory, options and state,
/// the rotations it did, and which positions `locate` refuses.
#[test]
fn a_writer_reports_its_directory_options_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let o = WriterOptions {
        fsync: FsyncPolicy::No,
        max_batch_bytes: 12345,
        ..WriterOptions::default()
    };
    let w = AofWriter::open(dir.path(), o).unwrap();
    assert_eq!(w.directory(), dir.path());
    assert_eq!(w.policy(), FsyncPolicy::No);
    assert_eq!(w.options().max_batch_bytes, 12345);
    let p1 = w.append(&op(1)).unwrap();
    assert_eq!(w.rotate().unwrap(), p1);
    let p2 = w.append(&op(2)).unwrap();
    assert_eq!(w.stats().rotations, 1);
    // Only the end of an appended record is located: not 0, not past the end.
    assert!(matches!(w.locate(0), Err(WriterError::Invalid(_))));
    assert!(matches!(w.locate(p2 + 1), Err(WriterError::Invalid(_))));
    assert_eq!(w.locate(p2).unwrap().1, p2 - p1);
    assert!(!w.is_closed());
    w.close().unwrap();
    assert!(w.is_closed());
    assert!(!w.is_failed());
}

/// Dropping a writer closes it: what was submitted but never waited for
/// is written, and the directory can be opened again.
#[test]
fn dropping_a_writer_writes_what_was_submitted() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    let p = w.submit_frames(&encode_frame(&op(1)).unwrap(), 1).unwrap();
    assert_eq!(w.written_position(), 0);
    drop(w);
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(w.position(), p);
    drop(w);
    assert_eq!(read_log(dir.path()), vec![op(1)]);
}

/// A failed write wakes every parked appender with the failure, with the
/// interleaving forced: two appenders are parked behind a leader held
/// before its write when the write fails.
#[test]
fn a_failed_write_wakes_every_parked_appender() {
    let dir = tempfile::tempdir().unwrap();
    let o = WriterOptions {
        gather: Gather::Off,
        ..opts(FsyncPolicy::Always)
    };
    let w = Arc::new(AofWriter::open(dir.path(), o).unwrap());
    w.hold_io(Gate::Write, true);
    let append = |i| {
        let w = Arc::clone(&w);
        std::thread::spawn(move || w.append(&op(i)))
    };
    let leader = append(1);
    until("the leader is held before its write", || {
        w.threads_held(Gate::Write) == 1
    });
    let parked: Vec<_> = (2..4).map(append).collect();
    until("two appenders park behind it", || w.parked_waiters() == 2);
    w.inject_fault(Fault::Write, 1);
    w.hold_io(Gate::Write, false);
    until("every parked appender is woken", || w.parked_waiters() == 0);
    for t in std::iter::once(leader).chain(parked) {
        assert!(matches!(t.join().unwrap(), Err(WriterError::Failed { .. })));
    }
    assert_eq!(w.written_position(), 0);
    // Closing a failed writer does no I/O: the parked appenders' frames,
    // still pending, are not written now.
    w.close().unwrap();
    assert_eq!((w.stats().writes, w.stats().fsyncs), (0, 0));
    assert_eq!(
        fs::metadata(dir.path().join(segment_file_name(0)))
            .unwrap()
            .len(),
        0
    );
}

/// An `everysec` fsync that a leader's fsync overtook made nothing durable
/// and is not counted: the background thread is held at its fsync while
/// a `wait_durable` fsyncs the same bytes.
#[test]
fn an_overtaken_background_fsync_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::EverySec)).unwrap();
    w.hold_io(Gate::BackgroundFsync, true);
    let p = w.append(&op(1)).unwrap();
    until("the background thread reaches its fsync", || {
        w.threads_held(Gate::BackgroundFsync) == 1
    });
    assert_eq!(w.wait_durable(p).unwrap(), p);
    assert_eq!(w.stats().fsyncs, 1);
    // Closing lets the held fsync go and waits for the thread to end.
    w.close().unwrap();
    let s = w.stats();
    assert_eq!((s.fsyncs, s.records_fsynced), (1, 1));
}

/// Each new segment's name, and a torn tail's backup before the cut, are
/// made durable by a directory fsync (a power loss could otherwise lose
/// the file, or keep the cut and lose the backup). A directory fsync
/// changes nothing a process can read back, so the writer counts them.
#[test]
fn new_segments_and_torn_tail_backups_fsync_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(w.stats().dir_fsyncs, 1, "the first segment");
    let p = w.append(&op(1)).unwrap();
    assert_eq!(w.rotate().unwrap(), p);
    assert_eq!(w.stats().dir_fsyncs, 2, "the rotated segment");
    assert_eq!(w.rotate().unwrap(), p, "an empty segment is kept");
    assert_eq!(w.stats().dir_fsyncs, 2);
    w.close().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(w.stats().dir_fsyncs, 0, "a clean reopen creates nothing");
    drop(w);
    let frame = encode_frame(&op(2)).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(segment_file_name(p)))
        .unwrap()
        .write_all(&frame[..5])
        .unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::No)).unwrap();
    assert_eq!(w.open_report().truncated_bytes, 5);
    assert!(w.open_report().torn_tail_backup.is_some());
    assert_eq!(w.stats().dir_fsyncs, 1, "the backup, before the cut");
    w.close().unwrap();
}

/// The benchmarks' baseline appends: each record after the last, so the
/// file ends as long as all of them (rewriting one block in place would
/// measure fsyncs that change no file size).
#[test]
fn the_raw_fdatasync_baseline_appends_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw");
    let file = fs::File::create(&path).unwrap();
    openmatch_aof::writer::raw_fdatasync_appends(&file, 3, 100).unwrap();
    drop(file);
    assert_eq!(fs::read(&path).unwrap(), vec![0xa5u8; 300]);
}

/// The benchmarks' physical baseline does its writes and fsyncs, reports
/// the time they took and leaves no file behind.
#[test]
fn the_raw_fdatasync_baseline_cleans_up_after_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw");
    let elapsed = openmatch_aof::writer::raw_fdatasync_loop(&path, 3, 100).unwrap();
    assert!(elapsed > Duration::ZERO, "three fdatasyncs took no time");
    assert!(!path.exists());
}

/// What a writer accepts, its reopening reads: a frame over the writer's
/// own payload bound is refused before anything is queued, by every way in
/// (encoded by the writer or by the caller), and the log reopens with the
/// same bound.
#[test]
fn a_frame_over_the_writers_own_bound_is_refused_and_the_log_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let big = AofOperation::BufferSealed(EpochId(1), [7; 32]);
    let frame = encode_frame(&big).unwrap();
    let payload = frame.len() - HEADER_LEN;
    let small = AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Seal);
    let bound = (encode_frame(&small).unwrap().len() - HEADER_LEN) as u32;
    assert!(payload > bound as usize);
    let o = WriterOptions {
        max_payload: bound,
        ..opts(FsyncPolicy::Always)
    };
    let w = AofWriter::open(dir.path(), o.clone()).unwrap();
    let refused = |r: Result<u64, WriterError>| match r {
        Err(WriterError::Encode(EncodeError::TooLarge { length, max })) => {
            assert_eq!((length, max), (payload, bound));
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    refused(w.append(&big));
    refused(w.append_many([&small, &big]));
    refused(w.append_frames(&frame, 1));
    refused(w.submit_frames(&frame, 1));
    assert_eq!(w.position(), 0, "nothing was queued");
    let end = w.append(&small).unwrap();
    w.close().unwrap();
    let w = AofWriter::open(dir.path(), o).unwrap();
    assert_eq!(w.position(), end);
    w.close().unwrap();
    assert_eq!(read_log(dir.path()), vec![small]);
}

/// Frames of `ops`, encoded within `bound`.
fn bounded(ops: &[AofOperation], bound: u32) -> BoundedFrames {
    let mut frames = BoundedFrames::in_buffer(Vec::new(), bound);
    let mut lengths = Vec::new();
    encode_run_into(ops, |_| Ok::<(), ()>(()), &mut frames, &mut lengths).unwrap();
    frames
}

#[test]
fn handed_over_frames_are_queued_in_order_and_an_empty_buffer_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let w = AofWriter::open(dir.path(), opts(FsyncPolicy::Always)).unwrap();
    let frame_len = encode_frame(&op(0)).unwrap().len() as u64;
    // The first is taken whole (nothing pending), the second is copied
    // behind it (the first still pending): both paths, one log.
    let mut first = bounded(&[op(1), op(2)], u32::MAX);
    let mut second = bounded(&[op(3)], u32::MAX);
    let end1 = w.submit_frames_owned(&mut first, 2).unwrap();
    let end2 = w.submit_frames_owned(&mut second, 1).unwrap();
    assert_eq!((end1, end2), (2 * frame_len, 3 * frame_len));
    assert!(
        first.is_empty() && second.is_empty(),
        "both come back empty"
    );
    w.wait_appended(end2).unwrap();
    assert_eq!(w.durable_position(), end2);
    // Memory given back is reused, not holding old frames.
    let mut again = BoundedFrames::in_buffer(first.into_buffer(), u32::MAX);
    let mut lengths = Vec::new();
    encode_run_into(&[op(4)], |_| Ok::<(), ()>(()), &mut again, &mut lengths).unwrap();
    assert_eq!(again.as_bytes(), encode_frame(&op(4)).unwrap());
    w.append_frames(again.as_bytes(), 1).unwrap();
    w.close().unwrap();
    assert_eq!(read_log(dir.path()), vec![op(1), op(2), op(3), op(4)]);
}

#[test]
fn frames_bounded_past_the_writers_bound_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let small = WriterOptions {
        max_payload: 8,
        ..opts(FsyncPolicy::Always)
    };
    let w = AofWriter::open(dir.path(), small).unwrap();
    // Encoded within a bound the writer does not share: each frame is
    // checked against the writer's own.
    let mut frames = bounded(&[op(1)], u32::MAX);
    let err = w.submit_frames_owned(&mut frames, 1).unwrap_err();
    assert!(
        matches!(
            err,
            WriterError::Encode(EncodeError::TooLarge { max: 8, .. })
        ),
        "{err:?}"
    );
    assert_eq!(w.position(), 0, "nothing queued");
    assert_eq!(frames.len(), encode_frame(&op(1)).unwrap().len(), "kept");
    // Within the writer's bound: taken.
    let payload = encode_frame(&op(1)).unwrap().len() - HEADER_LEN;
    let fits = WriterOptions {
        max_payload: payload as u32,
        ..opts(FsyncPolicy::Always)
    };
    w.close().unwrap();
    let w = AofWriter::open(dir.path(), fits).unwrap();
    let mut frames = bounded(&[op(1)], payload as u32);
    let end = w.submit_frames_owned(&mut frames, 1).unwrap();
    w.wait_appended(end).unwrap();
    w.close().unwrap();
    assert_eq!(read_log(dir.path()), vec![op(1)]);
}
