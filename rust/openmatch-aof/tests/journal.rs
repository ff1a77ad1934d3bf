//! The journal: refusals write nothing, batches are all or nothing, the
//! state follows the log across threads and reopenings, and a log that
//! breaks the invariants anyway stops replay at its first violation.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use openmatch_aof::journal::{replay, replay_with_limit, Journal, JournalError};
use openmatch_aof::segment::list_segments;
use openmatch_aof::state::{RetiredKind, State};
use openmatch_aof::writer::{AofWriter, Fault, FsyncPolicy, WriterOptions};
use openmatch_aof::*;
use proptest::prelude::*;
use uuid::Uuid;

mod common;
use common::*;

use AofOperation as Op;

fn opts(fsync: FsyncPolicy) -> WriterOptions {
    WriterOptions {
        fsync,
        ..WriterOptions::default()
    }
}

fn open(dir: &Path) -> Journal {
    Journal::open(dir, opts(FsyncPolicy::Always), State::new())
        .expect("open")
        .0
}

fn log_bytes(dir: &Path) -> u64 {
    list_segments(dir).unwrap().iter().map(|s| s.len).sum()
}

fn digest(j: &Journal) -> [u8; 32] {
    j.read(State::digest).unwrap()
}

#[test]
fn refused_operations_write_nothing_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    j.append_many(vec![
        Op::EpochAdvanced(EpochId(1), EpochPhase::Collect),
        Op::OrderReceived(order(1, "5", 1)),
        Op::OrderReceived(order(2, "3", 2)),
    ])
    .unwrap();
    let (bytes, before) = (log_bytes(dir.path()), digest(&j));
    let refused = [
        (
            vec![Op::OrderReceived(order(1, "5", 3))],
            0,
            "duplicate_order",
        ),
        (
            vec![Op::TradeExecuted(trade(1, 1, 2, "4", 1, 4))],
            0,
            "remaining_out_of_range",
        ),
        (
            // The first is fine alone; the batch goes as a whole or not at all.
            vec![
                Op::BalanceUpdated(user(1), "BTC".into(), d("1"), d("0")),
                Op::BalanceUpdated(user(1), "BTC".into(), d("-1"), d("0")),
            ],
            1,
            "negative_balance",
        ),
        (vec![Op::OrderCancelled(oid(9))], 0, "unknown_order"),
    ];
    for (ops, index, kind) in refused {
        match j.append_many(ops) {
            Err(JournalError::Refused {
                index: i,
                violation,
            }) => {
                assert_eq!((i, violation.kind.name()), (index, kind));
            }
            other => panic!("expected a refusal ({kind}), got {other:?}"),
        }
        assert_eq!(log_bytes(dir.path()), bytes, "{kind}: bytes were written");
        assert_eq!(digest(&j), before, "{kind}: the state changed");
    }
    // The refusal names the order and what is left of it.
    let Err(JournalError::Refused { violation, .. }) =
        j.append(Op::TradeExecuted(trade(1, 1, 2, "4", 1, 4)))
    else {
        panic!("expected a refusal")
    };
    assert!(
        violation
            .to_string()
            .contains("a trade of 4 would overfill order")
            && violation.to_string().contains("remaining 3"),
        "{violation}"
    );
}

#[test]
fn a_batch_is_judged_with_the_operations_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    let end = j
        .append_many(vec![
            Op::OrderReceived(order(1, "5", 1)),
            Op::OrderReceived(order(2, "5", 2)),
            Op::TradeExecuted(trade(1, 1, 2, "5", 1, 3)),
            Op::EpochAdvanced(EpochId(1), EpochPhase::Finalize),
        ])
        .unwrap();
    assert_eq!(j.position().unwrap(), end);
    // Both orders are filled: they left the hot state.
    let held = j
        .read(|s| (s.order(&oid(1)).is_some(), s.retired(oid(1).0)))
        .unwrap();
    assert_eq!(held, (false, Some(RetiredKind::Order)));
    // Filled orders take no cancel; an earlier epoch may not move now.
    for op in [
        Op::OrderCancelled(oid(1)),
        Op::EpochAdvanced(EpochId(0), EpochPhase::Seal),
    ] {
        assert!(matches!(j.append(op), Err(JournalError::Refused { .. })));
    }
}

/// One thread's operations: its own orders (ids `thread * 64 + k`) and
/// balances, some of them invalid on purpose.
#[derive(Debug, Clone)]
enum Step {
    Order(u8),
    Trade(u8, u8, u8),
    Cancel(u8),
    Balance(i8),
    /// The same order id a second time.
    Again(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u8..9).prop_map(Step::Order),
        3 => (0u8..6, 0u8..6, 1u8..6).prop_map(|(a, b, q)| Step::Trade(a, b, q)),
        1 => (0u8..6).prop_map(Step::Cancel),
        2 => (-2i8..5).prop_map(Step::Balance),
        1 => (0u8..6).prop_map(Step::Again),
    ]
}

fn thread_oid(thread: usize, round: usize, k: u8) -> OrderId {
    OrderId(Uuid::from_u128(
        ((thread as u128) << 64) | ((round as u128) << 32) | k as u128,
    ))
}

/// Runs `steps` of one thread; returns how many appends were acknowledged.
fn run_thread(j: &Journal, thread: usize, round: usize, steps: &[Step]) -> usize {
    let mut acked = 0;
    let mut received = 0u8;
    let mut next_trade = 0u32;
    for s in steps {
        let op = match *s {
            Step::Order(q) => {
                let mut o = order(1, &q.to_string(), 1);
                o.id = thread_oid(thread, round, received);
                received += 1;
                Op::OrderReceived(o)
            }
            Step::Again(k) => {
                let mut o = order(1, "1", 1);
                o.id = thread_oid(thread, round, k);
                Op::OrderReceived(o)
            }
            Step::Trade(a, b, q) => {
                next_trade += 1;
                let mut t = trade(1, 1, 1, &q.to_string(), 1, 2);
                t.id = TradeId(Uuid::from_u128(
                    (1 << 127)
                        | ((thread as u128) << 64)
                        | ((round as u128) << 32)
                        | next_trade as u128,
                ));
                t.taker_order_id = thread_oid(thread, round, a);
                t.maker_order_id = thread_oid(thread, round, b);
                Op::TradeExecuted(t)
            }
            Step::Cancel(k) => Op::OrderCancelled(thread_oid(thread, round, k)),
            Step::Balance(v) => Op::BalanceUpdated(
                user(thread as u8),
                "USDT".into(),
                rust_decimal::Decimal::from(v),
                d("0"),
            ),
        };
        match j.append(op) {
            Ok(_) => acked += 1,
            Err(JournalError::Refused { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    acked
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Several threads append valid and invalid operations; the journal is
    /// dropped without closing between rounds (as a crashed process leaves
    /// it: every acknowledged append is written). Every reopening recovers
    /// the digest the live journal had, every acknowledged operation is in
    /// the log and every refused one left no byte.
    #[test]
    fn every_acknowledged_sequence_recovers_and_refusals_leave_no_byte(
        rounds in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(step(), 0..24), 1..4),
            1..4,
        ),
        policy in prop_oneof![Just(FsyncPolicy::Always), Just(FsyncPolicy::No)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut expected_digest = State::new().digest();
        let mut acked_total = 0u64;
        for (round, threads) in rounds.iter().enumerate() {
            let (j, replayed) = Journal::open(dir.path(), opts(policy), State::new()).unwrap();
            prop_assert_eq!(replayed.operations, acked_total);
            prop_assert_eq!(digest(&j), expected_digest);
            let j = Arc::new(j);
            let acked: usize = std::thread::scope(|scope| {
                let handles: Vec<_> = threads
                    .iter()
                    .enumerate()
                    .map(|(t, steps)| {
                        let j = Arc::clone(&j);
                        scope.spawn(move || run_thread(&j, t, round, steps))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            acked_total += acked as u64;
            expected_digest = digest(&j);
            prop_assert!(j.read(|s| s.violations().is_empty()).unwrap());
            drop(j); // no close
        }
        let (j, replayed) = Journal::open(dir.path(), opts(policy), State::new()).unwrap();
        prop_assert_eq!(replayed.operations, acked_total);
        prop_assert_eq!(digest(&j), expected_digest);
        prop_assert_eq!(log_bytes(dir.path()), j.writer().position());
    }
}

/// A log written by another program: the second trade overfills order 1.
fn poisoned_log(dir: &Path) -> Vec<u64> {
    let w = AofWriter::open(dir, opts(FsyncPolicy::Always)).unwrap();
    let ops = [
        Op::OrderReceived(order(1, "5", 1)),
        Op::OrderReceived(order(2, "9", 2)),
        Op::TradeExecuted(trade(1, 1, 2, "4", 1, 3)),
        Op::TradeExecuted(trade(2, 1, 2, "4", 1, 4)),
        Op::BalanceUpdated(user(1), "BTC".into(), d("1"), d("0")),
    ];
    let ends: Vec<u64> = ops.iter().map(|op| w.append(op).unwrap()).collect();
    w.close().unwrap();
    ends
}

#[test]
fn a_poisoned_log_stops_replay_at_its_first_violation_and_until_stops_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let ends = poisoned_log(dir.path());
    let err = Journal::open(dir.path(), opts(FsyncPolicy::Always), State::new()).unwrap_err();
    let JournalError::Violation(v) = err else {
        panic!("expected a violation, got {err}")
    };
    assert_eq!(v.violation.position, ends[3]);
    assert_eq!(v.frame_start, ends[2]);
    assert_eq!(v.violation.kind.name(), "remaining_out_of_range");
    assert!(
        v.to_string().contains(&format!("--until {}", ends[3])),
        "{v}"
    );

    let mut state = State::new();
    let r = replay(dir.path(), &mut state, Some(ends[3])).unwrap();
    assert_eq!((r.position, r.operations), (ends[2], 3));
    assert_eq!(state.position(), ends[2]);
    // A position inside a frame is no operation's.
    for bad in [ends[3] - 1, ends[0] - 1] {
        let mut state = State::new();
        let e = replay(dir.path(), &mut state, Some(bad)).unwrap_err();
        assert!(matches!(e, JournalError::Unrecoverable { .. }), "{e}");
    }
}

#[test]
fn replay_reads_frames_up_to_the_limit_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    for i in 1..=3 {
        j.append(Op::OrderReceived(order(i, "5", 1))).unwrap();
    }
    j.close().unwrap();
    // Under a limit shorter than its frames, the log stops at its first one
    // as oversized, nothing applied; with the default it replays whole.
    let mut state = State::new();
    let r = replay_with_limit(dir.path(), &mut state, None, 16).unwrap();
    assert_eq!(r.outcome.kind, scanner::OutcomeKind::Oversized);
    assert_eq!((r.operations, state.position()), (0, 0));
    let r = replay(dir.path(), &mut state, None).unwrap();
    assert_eq!(r.outcome.kind, scanner::OutcomeKind::Clean);
    assert_eq!((r.operations, state.position()), (3, log_bytes(dir.path())));
}

#[test]
fn once_the_writer_failed_nothing_is_shown_or_appended() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    j.append(Op::OrderReceived(order(1, "5", 1))).unwrap();
    j.writer().inject_fault(Fault::Fsync, 1);
    let e = j.append(Op::OrderReceived(order(2, "5", 2))).unwrap_err();
    assert!(matches!(e, JournalError::Writer(_)), "{e}");
    // The state holds the failed append, which may not be durable: it is
    // never shown, nor handed to the database.
    assert!(j.read(State::order_count).is_err());
    assert!(j.take_changes().is_err());
    assert!(j.image().is_err());
    assert!(j.append(Op::OrderReceived(order(3, "5", 3))).is_err());
    drop(j);
    let j = open(dir.path());
    assert!(j.read(|s| s.order(&oid(1)).is_some()).unwrap());
}

#[test]
fn a_snapshot_past_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ends = poisoned_log(dir.path());
    let mut ahead = State::new();
    ahead
        .try_apply(&Op::OrderReceived(order(7, "1", 1)), ends[4] + 100)
        .unwrap();
    let err = Journal::open(dir.path(), opts(FsyncPolicy::Always), ahead).unwrap_err();
    assert!(err.to_string().contains("past the AOF's end"), "{err}");
}

/// Close writes and fsyncs what is queued under a lazy policy (nothing is
/// lost by closing), and the journal's counters are the writer's.
#[test]
fn close_makes_everything_durable_and_stats_count_the_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), opts(FsyncPolicy::No), State::new()).unwrap();
    let end = j
        .append_many(vec![
            Op::EpochAdvanced(EpochId(1), EpochPhase::Collect),
            Op::OrderReceived(order(1, "5", 10)),
        ])
        .unwrap();
    let stats = j.stats();
    assert_eq!((stats.appends, stats.fsyncs), (2, 0));
    assert_eq!(j.writer().durable_position(), 0);
    j.close().unwrap();
    assert_eq!(j.writer().durable_position(), end);
    assert_eq!(j.stats().records_fsynced, 2);
    assert!(j.append(Op::OrderCancelled(oid(1))).is_err(), "closed");
    drop(j);
    let (again, replayed) = Journal::open(dir.path(), opts(FsyncPolicy::No), State::new()).unwrap();
    assert_eq!((replayed.operations, replayed.position), (2, end));
    again.close().unwrap();
}

/// An order the database's NUMERIC(28,8) cannot hold (nine places).
fn unfit_order(id: u128) -> Op {
    let mut o = order(1, "5", 1);
    o.id = OrderId(Uuid::from_u128((1 << 64) + id));
    o.quantity = d("0.123456789");
    o.remaining_qty = o.quantity;
    Op::OrderReceived(o)
}

fn segment_bytes(dir: &Path) -> Vec<u8> {
    list_segments(dir)
        .unwrap()
        .iter()
        .flat_map(|s| std::fs::read(&s.path).unwrap())
        .collect()
}

/// A large batch is encoded on a thread of its own, a chunk at a time,
/// while the chunks before are judged: its log and state are those of the
/// same operations appended in small batches.
#[test]
fn a_large_batch_writes_and_applies_what_small_batches_do() {
    let (large, small) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ops = new_orders(0, 10_000);
    let j = open(large.path());
    let end = j.append_many(ops.clone()).unwrap();
    let k = open(small.path());
    for batch in ops.chunks(100) {
        k.append_many(batch.to_vec()).unwrap();
    }
    assert_eq!(k.position().unwrap(), end);
    assert_eq!(segment_bytes(large.path()), segment_bytes(small.path()));
    assert_eq!(digest(&j), digest(&k));
    // Taken out of items the caller keeps (the binding's way), the same.
    let borrowed = tempfile::tempdir().unwrap();
    let b = open(borrowed.path());
    assert_eq!(b.append_many_with(&ops, Op::clone).unwrap(), end);
    assert_eq!(segment_bytes(borrowed.path()), segment_bytes(small.path()));
    assert_eq!(digest(&b), digest(&k));
    assert_eq!(j.read(State::order_count).unwrap(), 10_000);
    assert_eq!(j.stats().appends, 10_000);
    // The large batches took the overlapped path (on two cores or more);
    // the small ones did not.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let overlapped = u64::from(cores > 1);
    assert_eq!(
        (j.overlapped_batches(), b.overlapped_batches()),
        (overlapped, overlapped)
    );
    assert_eq!(k.overlapped_batches(), 0);
}

/// A batch fails at its first refused operation by index, whichever rule
/// refuses it (the schema or an invariant) and in whichever chunk of a
/// large batch, and leaves nothing: no byte, no change of the state.
#[test]
fn a_batch_fails_at_its_first_refusal_whichever_the_rule_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    j.append_many(new_orders(0, 10)).unwrap();
    let (bytes, before) = (log_bytes(dir.path()), digest(&j));
    let duplicate = new_orders(3, 1).remove(0); // an order already held
                                                // (batch size, index of the duplicate, index of the unfit order)
    for (n, dup_at, unfit_at) in [
        (10_000, 9_000, 9_500),
        (10_000, 9_500, 5_000),
        (10_000, 1_500, 0),
        (9_999, 9_000, 9_500),
        (9_999, 9_500, 5_000),
        (100, 50, 80),
        (100, 60, 30),
        (99, 50, 80),
        (99, 60, 30),
    ] {
        let mut ops = new_orders(1_000_000, n);
        ops[dup_at] = duplicate.clone();
        ops[unfit_at] = unfit_order(2_000_000);
        // Owned, or taken out of items the caller keeps, alike.
        let result = if n % 3 == 0 {
            j.append_many_with(&ops, Op::clone)
        } else {
            j.append_many(ops)
        };
        match (result, dup_at < unfit_at) {
            (Err(JournalError::Refused { index, violation }), true) => {
                assert_eq!((index, violation.kind.name()), (dup_at, "duplicate_order"));
            }
            (Err(JournalError::Unfit { index, reason }), false) => {
                assert_eq!(index, unfit_at);
                assert!(reason.contains("decimal places"), "{reason}");
            }
            (other, _) => panic!("{n} ops, duplicate at {dup_at}, unfit at {unfit_at}: {other:?}"),
        }
        assert_eq!(log_bytes(dir.path()), bytes, "bytes were written");
        assert_eq!(digest(&j), before, "the state changed");
    }
    // Five of the batches were large; the threshold is 4,096 operations.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(j.overlapped_batches(), if cores > 1 { 5 } else { 0 });
    j.append_many(new_orders(4_000_000, 4_095)).unwrap();
    assert_eq!(j.overlapped_batches(), if cores > 1 { 5 } else { 0 });
    j.append_many(new_orders(5_000_000, 4_096)).unwrap();
    assert_eq!(j.overlapped_batches(), if cores > 1 { 6 } else { 0 });
    // And the journal goes on.
    j.append_many(new_orders(3_000_000, 5_000)).unwrap();
    assert_eq!(j.read(State::order_count).unwrap(), 13_201);
    // Buffers are reused across batches: no frame of a refused batch may
    // ride a later one. The log replays to exactly the live state.
    let live = digest(&j);
    j.close().unwrap();
    assert_eq!(digest(&open(dir.path())), live);
}

/// On the overlapped path the encoding stops at the operation the schema
/// refuses: the chunks after it are not taken out of the caller's items,
/// nor encoded.
#[test]
fn a_large_batch_stops_taking_operations_at_an_unfit_one() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return; // one core: a batch is taken whole before it is judged
    }
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    let mut ops = new_orders(0, 10_000);
    ops[10] = unfit_order(2_000_000);
    let taken = AtomicUsize::new(0);
    let result = j.append_many_with(&ops, |op| {
        taken.fetch_add(1, Ordering::Relaxed);
        op.clone()
    });
    assert!(
        matches!(result, Err(JournalError::Unfit { index: 10, .. })),
        "{result:?}"
    );
    assert_eq!(j.overlapped_batches(), 1);
    // The first chunk (1,024 operations) holds the unfit one.
    assert_eq!(
        taken.load(Ordering::Relaxed),
        1_024,
        "only its chunk is taken"
    );
    assert_eq!(j.position().unwrap(), 0);
}

/// A journal replays with its writer's own frame bound: a log holding a
/// frame past the default bound (16 MiB, written by an engine with a higher
/// one) opens with that bound, and is refused as oversized without it.
#[test]
fn a_journal_replays_with_its_writers_frame_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 2 * codec::DEFAULT_MAX_PAYLOAD_LEN;
    let o = WriterOptions {
        max_payload: bound,
        ..opts(FsyncPolicy::Always)
    };
    let long = Op::BalanceUpdated(user(1), "X".repeat(17 << 20), d("1"), d("0"));
    let mut frame = Vec::new();
    codec::encode_frame_into_bounded(&long, &mut frame, bound).unwrap();
    let w = AofWriter::open(dir.path(), o.clone()).unwrap();
    let end = w.append_frames(&frame, 1).unwrap();
    w.close().unwrap();
    let (j, replayed) = Journal::open(dir.path(), o, State::new()).unwrap();
    assert_eq!((replayed.operations, j.position().unwrap()), (1, end));
    j.close().unwrap();
    match Journal::open(dir.path(), opts(FsyncPolicy::Always), State::new()) {
        Err(e) => assert!(e.to_string().contains("oversized"), "{e}"),
        Ok(_) => panic!("a default bound read a frame past it"),
    }
}

/// A frame above the journal's bound in a segment before the last is the
/// same typed refusal as one in the last (which the writer finds): an
/// oversized frame naming its segment, offset, length and bound, never
/// "cannot recover" (damage); the log opens whole with the bound raised.
#[test]
fn a_frame_past_the_bound_in_an_older_segment_is_refused_as_oversized() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), opts(FsyncPolicy::Always), State::new()).unwrap();
    let long = Op::OrderReceived(order(1, "1", 0));
    j.append(long.clone()).unwrap();
    j.writer().rotate().unwrap();
    let end = j
        .append(Op::EpochAdvanced(EpochId(1), EpochPhase::Seal))
        .unwrap();
    j.close().unwrap();
    let length = (codec::encode_frame(&long).unwrap().len() - codec::HEADER_LEN) as u32;
    let low = WriterOptions {
        max_payload: length - 1,
        ..opts(FsyncPolicy::Always)
    };
    match Journal::open(dir.path(), low, State::new()) {
        Err(JournalError::Writer(WriterError::Oversized {
            path,
            offset,
            length: l,
            limit,
        })) => {
            assert_eq!((offset, l, limit), (0, length, length - 1));
            assert_eq!(path, list_segments(dir.path()).unwrap()[0].path);
        }
        Err(e) => panic!("not refused as oversized: {e}"),
        Ok(_) => panic!("a bound below a frame read it"),
    }
    // `recover --until` past that frame says why it cannot get there.
    match replay_with_limit(dir.path(), &mut State::new(), Some(end), length - 1) {
        Err(JournalError::Writer(WriterError::Oversized { offset: 0, .. })) => {}
        other => panic!("not refused as oversized: {other:?}"),
    }
    let exact = WriterOptions {
        max_payload: length,
        ..opts(FsyncPolicy::Always)
    };
    let (j, replayed) = Journal::open(dir.path(), exact, State::new()).unwrap();
    assert_eq!((replayed.operations, j.position().unwrap()), (2, end));
}

/// Threads appending large batches (encoded on a thread of their own, into
/// kept buffers, handed to the writer whole when nothing is queued ahead)
/// beside small ones (copied behind them), some refused halfway: the log
/// holds every acknowledged batch whole, nothing of a refused one, and
/// replays to the live state.
#[test]
fn large_and_small_batches_from_several_threads_share_the_queue_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let j = Arc::new(open(dir.path()));
    let sizes = [5_000usize, 1, 4_500, 300, 4_096, 7, 6_000, 2];
    let acked: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u128)
            .map(|t| {
                let j = Arc::clone(&j);
                scope.spawn(move || {
                    let mut acked = 0;
                    for (b, &n) in sizes.iter().enumerate() {
                        let first = (t << 32) + ((b as u128) << 20);
                        let mut ops = new_orders(first, n);
                        // Every third batch of some size is refused at its
                        // last operation, an order its own batch holds.
                        let refused = n > 2 && (b + t as usize) % 3 == 0;
                        if refused {
                            ops[n - 1] = ops[0].clone();
                        }
                        let result = if b % 2 == 0 {
                            j.append_many(ops)
                        } else {
                            j.append_many_with(&ops, Op::clone)
                        };
                        match (result, refused) {
                            (Ok(_), false) => acked += n,
                            (Err(JournalError::Refused { index, .. }), true) => {
                                assert_eq!(index, n - 1)
                            }
                            (other, _) => panic!("batch {b} of thread {t}: {other:?}"),
                        }
                    }
                    acked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(j.read(State::order_count).unwrap(), acked);
    let live = digest(&j);
    j.close().unwrap();
    drop(j);
    let (again, replayed) =
        Journal::open(dir.path(), opts(FsyncPolicy::Always), State::new()).unwrap();
    assert_eq!(replayed.operations, acked as u64);
    assert_eq!(digest(&again), live);
}
