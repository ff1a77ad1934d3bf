//! The in-memory state: semantics of each operation, determinism, snapshots,
//! change tracking and the consistency checker.

use chrono::{DateTime, Utc};
use openmatch_aof::codec::encode_frame_into;
use openmatch_aof::state::*;
use openmatch_aof::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

mod common;
use common::*;

use AofOperation as Op;

/// Applies `ops` at positions 0, 100, 200, ...
fn state_of(ops: &[Op]) -> State {
    let mut s = State::new();
    for (i, op) in ops.iter().enumerate() {
        s.apply(op, i as u64 * 100);
    }
    s
}

fn kinds(s: &State) -> Vec<(&'static str, EntityRef, u64)> {
    s.violations()
        .into_iter()
        .map(|v| (v.kind.name(), v.entity, v.position))
        .collect()
}

fn base_stream() -> Vec<Op> {
    vec![
        Op::EpochAdvanced(EpochId(1), EpochPhase::Collect),
        Op::OrderReceived(order(1, "5", 10)),
        Op::OrderReceived(order(2, "3", 11)),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Seal),
        Op::BufferSealed(EpochId(1), [0xab; 32]),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Match),
        Op::TradeExecuted(trade(1, 1, 2, "3", 1, 20)),
        Op::BalanceUpdated(user(1), "BTC".into(), d("2.5"), d("0.5")),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Finalize),
    ]
}

#[test]
fn order_received_inserts_and_a_second_receipt_is_kept_out() {
    let mut s = State::new();
    s.apply(&Op::OrderReceived(order(1, "5", 10)), 0);
    assert_eq!(s.order(&oid(1)), Some(&order(1, "5", 10)));
    let mut again = order(1, "9", 50);
    again.sequence = 99;
    s.apply(&Op::OrderReceived(again), 40);
    assert_eq!(s.order(&oid(1)).unwrap().quantity, d("5"));
    assert_eq!(s.position(), 40);
    assert_eq!(
        kinds(&s),
        vec![("duplicate_order", EntityRef::Order(oid(1)), 40)]
    );
    // The ignored duplicate does not move the logical clock.
    assert_eq!(s.clock(), ts(10));
}

#[test]
fn cancel_sets_status_and_keeps_updated_at() {
    let s = state_of(&[
        Op::OrderReceived(order(1, "5", 10)),
        Op::OrderCancelled(oid(1)),
        Op::OrderCancelled(oid(2)),
    ]);
    assert_eq!(
        s.order(&oid(1)),
        None,
        "a cancelled order leaves the hot state"
    );
    let mut s = s;
    let o = s.take_changes().orders.remove(0);
    assert_eq!(o.status, OrderStatus::Cancelled);
    assert_eq!(o.updated_at, ts(10));
    assert_eq!(
        kinds(&s),
        vec![("unknown_order", EntityRef::Order(oid(2)), 200)]
    );
}

#[test]
fn trade_fills_both_sides_and_counts_in_its_epoch() {
    let s = state_of(&base_stream());
    let taker = s.order(&oid(1)).unwrap();
    assert_eq!(taker.remaining_qty, d("2"));
    assert_eq!(taker.status, OrderStatus::PartiallyFilled);
    assert_eq!(taker.updated_at, ts(20));
    assert_eq!(s.filled(&oid(1)), Some(d("3")));
    // The filled maker and the trade left the hot state: their final rows
    // are in the changes, their ids in the id window.
    assert_eq!(s.order(&oid(2)), None);
    assert_eq!(s.retired(oid(2).0), Some(RetiredKind::Order));
    assert_eq!(s.retired(tid(1).0), Some(RetiredKind::Trade));
    let mut s = s;
    let c = s.take_changes();
    assert_eq!(c.trades, vec![trade(1, 1, 2, "3", 1, 20)]);
    let maker = c.orders.iter().find(|o| o.id == oid(2)).unwrap();
    assert_eq!(maker.remaining_qty, d("0"));
    assert_eq!(maker.status, OrderStatus::Filled);
    let e = s.epoch(EpochId(1)).unwrap();
    assert_eq!(e.trade_count, 1);
    assert_eq!(e.batch_hash, Some([0xab; 32]));
    assert_eq!(e.result_hash, None);
    assert_eq!(e.phase, EpochPhase::Finalize);
    // Started before any timestamp: the clock's origin; completed at the
    // latest timestamp seen (the trade's).
    assert_eq!(e.started_at, DateTime::<Utc>::UNIX_EPOCH);
    assert_eq!(e.completed_at, Some(ts(20)));
    let b = s.balance(user(1), "BTC").unwrap();
    assert_eq!((b.available, b.frozen), (d("2.5"), d("0.5")));
    assert!(s.check().is_ok(), "{:?}", s.violations());
}

#[test]
fn a_trade_or_seal_for_an_unknown_epoch_creates_it_in_collect() {
    let s = state_of(&[
        Op::OrderReceived(order(1, "5", 10)),
        Op::OrderReceived(order(2, "5", 12)),
        Op::TradeExecuted(trade(1, 1, 2, "1", 4, 30)),
        Op::BufferSealed(EpochId(6), [1; 32]),
    ]);
    let e4 = s.epoch(EpochId(4)).unwrap();
    assert_eq!(
        (e4.phase, e4.trade_count, e4.started_at),
        (EpochPhase::Collect, 1, ts(30))
    );
    let e6 = s.epoch(EpochId(6)).unwrap();
    assert_eq!(
        (e6.phase, e6.batch_hash),
        (EpochPhase::Collect, Some([1; 32]))
    );
    assert!(s.check().is_ok());
}

#[test]
fn epochs_never_go_backwards() {
    let s = state_of(&[
        Op::EpochAdvanced(EpochId(1), EpochPhase::Collect),
        Op::EpochAdvanced(EpochId(2), EpochPhase::Collect),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Match),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Match), // a repeat: fine
        Op::EpochAdvanced(EpochId(1), EpochPhase::Seal),  // 400: backwards
        Op::EpochAdvanced(EpochId(2), EpochPhase::Finalize),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Finalize), // 600: after 2 finalized
        Op::EpochAdvanced(EpochId(0), EpochPhase::Collect),  // 700: after 2 finalized
        Op::EpochAdvanced(EpochId(3), EpochPhase::Collect),  // fine
    ]);
    assert_eq!(
        kinds(&s),
        vec![
            ("epoch_regression", EntityRef::Epoch(EpochId(1)), 400),
            ("epoch_regression", EntityRef::Epoch(EpochId(1)), 600),
            ("epoch_regression", EntityRef::Epoch(EpochId(0)), 700),
        ]
    );
    // A backwards step is not applied.
    assert_eq!(s.epoch(EpochId(1)).unwrap().phase, EpochPhase::Match);
    assert!(s.epoch(EpochId(0)).is_none());
    assert_eq!(s.epoch(EpochId(3)).unwrap().phase, EpochPhase::Collect);
}

#[test]
fn each_invariant_names_its_entity_and_position() {
    let mut big = order(3, "79228162514264337593543950335", 1);
    big.remaining_qty = Decimal::MAX;
    let mut short = order(4, "5", 1);
    short.remaining_qty = d("4"); // received with a fill no trade explains
    let s = state_of(&[
        Op::OrderReceived(order(1, "5", 10)),          // 0
        Op::OrderReceived(order(2, "3", 11)),          // 100
        Op::TradeExecuted(trade(1, 1, 2, "4", 1, 20)), // 200: maker overfilled
        Op::TradeExecuted(trade(2, 1, 9, "1", 1, 21)), // 300: maker unknown
        Op::BalanceUpdated(user(1), "ETH".into(), d("-0.1"), d("0")), // 400
        Op::OrderReceived(big),                        // 500
        Op::TradeExecuted(trade(3, 3, 1, "-1", 1, 22)), // 600: overflows order 3
        Op::OrderReceived(short),                      // 700
        Op::TradeExecuted(trade(1, 1, 2, "1", 1, 23)), // 800: applied (the first trade 1 was refused)
    ]);
    let v = kinds(&s);
    assert_eq!(
        v,
        vec![
            ("remaining_out_of_range", EntityRef::Order(oid(2)), 200),
            ("unknown_order", EntityRef::Trade(tid(2)), 300),
            (
                "negative_balance",
                EntityRef::Balance(user(1), "ETH".into()),
                400
            ),
            ("arithmetic_overflow", EntityRef::Order(oid(3)), 600),
            // Refused operations change nothing: orders 1 and 2 are only
            // filled by the trade at 800.
            ("fill_mismatch", EntityRef::Order(oid(4)), 700),
        ]
    );
    let first = &s.check().unwrap_err()[0];
    assert!(first
        .to_string()
        .starts_with("remaining_out_of_range at position 200: order "));
}

#[test]
fn same_operations_give_the_same_digest_whatever_the_insertion_order() {
    let ops = base_stream();
    assert_eq!(state_of(&ops).digest(), state_of(&ops).digest());

    let mut a = State::new();
    let mut b = State::new();
    let orders: Vec<Op> = (1..=50)
        .map(|n| Op::OrderReceived(order(n, "2", n as i64)))
        .collect();
    let balances: Vec<Op> = (1..=50)
        .map(|n| Op::BalanceUpdated(user(n), format!("A{n}"), d("1"), d("0")))
        .collect();
    for op in orders.iter().chain(&balances) {
        a.apply(op, 7);
    }
    for op in orders.iter().rev().chain(balances.iter().rev()) {
        b.apply(op, 7);
    }
    assert_eq!(a.digest(), b.digest());
    b.apply(
        &Op::BalanceUpdated(user(1), "A1".into(), d("1.0"), d("0")),
        7,
    );
    assert_ne!(a.digest(), b.digest(), "1.0 is not the same text as 1");
}

#[test]
fn export_and_import_round_trip_exactly_and_replay_continues_identically() {
    let ops = base_stream();
    let s = state_of(&ops[..7]);
    let restored = State::from_snapshot(s.export()).unwrap();
    assert_eq!(restored.digest(), s.digest());
    assert_eq!(restored.export(), s.export());
    assert_eq!(restored.clock(), s.clock());
    assert!(!restored.has_changes());

    // Replaying the rest on top of the restored state equals replaying all.
    let mut resumed = restored;
    for (i, op) in ops.iter().enumerate().skip(7) {
        resumed.apply(op, i as u64 * 100);
    }
    assert_eq!(resumed.digest(), state_of(&ops).digest());
    assert_eq!(resumed.export(), state_of(&ops).export());

    let mut dup = s.export();
    dup.orders.push(dup.orders[0].clone());
    assert_eq!(
        State::from_snapshot(dup).unwrap_err(),
        SnapshotError::DuplicateOrder(oid(1))
    );
}

#[test]
fn import_takes_fills_from_the_order_and_reports_at_the_snapshot_position() {
    let mut snap = state_of(&base_stream()).export();
    assert_eq!(
        State::from_snapshot(snap.clone()).unwrap().filled(&oid(1)),
        Some(d("3"))
    );
    snap.orders[0].remaining_qty = d("6"); // above its quantity of 5
    snap.position = 5000;
    let s = State::from_snapshot(snap).unwrap();
    assert_eq!(
        kinds(&s),
        vec![("remaining_out_of_range", EntityRef::Order(oid(1)), 5000)]
    );
}

#[test]
fn take_changes_gives_each_changed_entity_once_in_key_order() {
    let mut s = State::new();
    assert_eq!(s.take_changes(), Changes::default());
    let ops = base_stream();
    for (i, op) in ops.iter().enumerate() {
        s.apply(op, i as u64 * 100);
    }
    let c = s.take_changes();
    assert_eq!(c.position, 800);
    assert_eq!(
        c.orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![oid(1), oid(2)]
    );
    assert_eq!(c.orders[0].remaining_qty, d("2"), "current values");
    assert_eq!(c.trades.len(), 1);
    assert_eq!(c.balances.len(), 1);
    assert_eq!(c.epochs.len(), 1);
    assert_eq!(c.epochs[0].phase, EpochPhase::Finalize);

    let again = s.take_changes();
    assert!(again.is_empty());
    assert_eq!(again.position, 800);

    s.apply(&Op::OrderCancelled(oid(1)), 900);
    s.apply(&Op::OrderCancelled(oid(1)), 901);
    let c = s.take_changes();
    assert_eq!(c.orders.len(), 1);
    assert!(c.trades.is_empty() && c.balances.is_empty() && c.epochs.is_empty());
    assert_eq!(c.position, 901);
}

#[test]
fn apply_frames_applies_at_frame_positions_all_or_nothing() {
    let ops = base_stream();
    let mut data = Vec::new();
    let mut positions = Vec::new();
    let mut starts = Vec::new();
    for op in &ops {
        starts.push(1000 + data.len() as u64);
        encode_frame_into(op, &mut data).unwrap();
        positions.push(1000 + data.len() as u64); // just past the frame
    }
    let mut s = State::new();
    assert_eq!(
        s.apply_frames(&data, 1000, DEFAULT_MAX_PAYLOAD_LEN)
            .unwrap(),
        ops.len()
    );
    let mut expected = State::new();
    for (op, at) in ops.iter().zip(&positions) {
        expected.apply(op, *at);
    }
    assert_eq!(s.digest(), expected.digest());
    assert_eq!(s.position(), 1000 + data.len() as u64);

    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut t = State::new();
    let e = t
        .apply_frames(&bad, 1000, DEFAULT_MAX_PAYLOAD_LEN)
        .unwrap_err();
    assert_eq!(
        e.offset,
        *starts.last().unwrap(),
        "errors name the frame's start"
    );
    assert_eq!(t.digest(), State::new().digest(), "nothing applied");
}

// --- properties ---------------------------------------------------------------------

/// One step of a generated stream; the builder turns it into a valid
/// operation (or none) given what it has produced so far.
#[derive(Debug, Clone)]
enum Step {
    Order(u32, u32),
    Trade(usize, usize, u32),
    Cancel(usize),
    Balance(u8, u8, u32, u32),
    Advance,
    Seal(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u32..100_000, 0u32..4).prop_map(|(q, s)| Step::Order(q, s)),
        (any::<usize>(), any::<usize>(), 1u32..=100).prop_map(|(a, b, p)| Step::Trade(a, b, p)),
        any::<usize>().prop_map(Step::Cancel),
        (0u8..5, 0u8..3, any::<u32>(), any::<u32>())
            .prop_map(|(u, a, x, y)| Step::Balance(u, a, x, y)),
        Just(Step::Advance),
        any::<u8>().prop_map(Step::Seal),
    ]
}

fn valid_stream(steps: &[Step]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut remaining: Vec<Decimal> = Vec::new();
    // Cancelled orders take no more trades or cancels (filled ones have no
    // remaining quantity, so no trade picks them).
    let mut cancelled: Vec<bool> = Vec::new();
    let mut epoch = 0u64;
    let mut phase = EpochPhase::Collect;
    ops.push(Op::EpochAdvanced(EpochId(epoch), phase));
    let phases = [
        EpochPhase::Collect,
        EpochPhase::Seal,
        EpochPhase::Match,
        EpochPhase::Finalize,
    ];
    for (i, s) in steps.iter().enumerate() {
        let at = i as i64;
        match *s {
            Step::Order(q, scale) => {
                let n = remaining.len();
                let mut o = order(0, "1", at);
                o.id = OrderId(Uuid::from_u128(n as u128 + 1));
                o.quantity = Decimal::new(q as i64, scale);
                o.remaining_qty = o.quantity;
                remaining.push(o.quantity);
                cancelled.push(false);
                ops.push(Op::OrderReceived(o));
            }
            Step::Trade(a, b, pct) if !remaining.is_empty() => {
                let (a, b) = (a % remaining.len(), b % remaining.len());
                let room = remaining[a].min(remaining[b]);
                let qty = (room * Decimal::new(pct as i64, 2)).round_dp(4).min(room);
                if a == b || qty.is_zero() || cancelled[a] || cancelled[b] {
                    continue;
                }
                remaining[a] -= qty;
                remaining[b] -= qty;
                let mut t = trade(0, 0, 0, "1", epoch, at);
                t.id = TradeId(Uuid::from_u128(i as u128 + (1 << 64)));
                t.taker_order_id = OrderId(Uuid::from_u128(a as u128 + 1));
                t.maker_order_id = OrderId(Uuid::from_u128(b as u128 + 1));
                t.quantity = qty;
                ops.push(Op::TradeExecuted(t));
            }
            Step::Cancel(a) if !remaining.is_empty() => {
                let a = a % remaining.len();
                if cancelled[a] || remaining[a].is_zero() {
                    continue;
                }
                cancelled[a] = true;
                ops.push(Op::OrderCancelled(OrderId(Uuid::from_u128(a as u128 + 1))));
            }
            Step::Balance(u, a, x, y) => ops.push(Op::BalanceUpdated(
                user(u),
                format!("A{a}"),
                Decimal::new(x as i64, 3),
                Decimal::new(y as i64, 3),
            )),
            Step::Advance => {
                if phase == EpochPhase::Finalize {
                    epoch += 1;
                    phase = EpochPhase::Collect;
                } else {
                    phase = phases[phase as usize + 1];
                }
                ops.push(Op::EpochAdvanced(EpochId(epoch), phase));
            }
            Step::Seal(h) => ops.push(Op::BufferSealed(EpochId(epoch), [h; 32])),
            _ => {}
        }
    }
    ops
}

fn small_decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        (-5i64..10).prop_map(Decimal::from),
        Just(Decimal::MAX),
        Just(Decimal::MIN),
    ]
}

fn arbitrary_op() -> impl Strategy<Value = Op> {
    let id = 0u8..6;
    prop_oneof![
        (id.clone(), small_decimal(), small_decimal(), -10i64..10).prop_map(|(n, q, r, at)| {
            let mut o = order(n, "1", at);
            o.quantity = q;
            o.remaining_qty = r;
            Op::OrderReceived(o)
        }),
        id.clone().prop_map(|n| Op::OrderCancelled(oid(n))),
        (0u64..4, any::<u8>()).prop_map(|(e, h)| Op::BufferSealed(EpochId(e), [h; 32])),
        (
            id.clone(),
            id.clone(),
            id.clone(),
            small_decimal(),
            0u64..4,
            -10i64..10
        )
            .prop_map(|(n, a, b, q, e, at)| {
                let mut t = trade(n, a, b, "1", e, at);
                t.quantity = q;
                Op::TradeExecuted(t)
            }),
        (id.clone(), small_decimal(), small_decimal()).prop_map(|(u, a, f)| Op::BalanceUpdated(
            user(u),
            "X".into(),
            a,
            f
        )),
        (0u64..4, 0usize..4).prop_map(|(e, p)| Op::EpochAdvanced(
            EpochId(e),
            [
                EpochPhase::Collect,
                EpochPhase::Seal,
                EpochPhase::Match,
                EpochPhase::Finalize
            ][p]
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn valid_streams_never_violate(steps in prop::collection::vec(step(), 0..200)) {
        let ops = valid_stream(&steps);
        let s = state_of(&ops);
        prop_assert_eq!(s.violations(), vec![]);
        // ...and survive a snapshot at any point.
        let cut = ops.len() / 2;
        let mut resumed = State::from_snapshot(state_of(&ops[..cut]).export()).unwrap();
        for (i, op) in ops.iter().enumerate().skip(cut) {
            resumed.apply(op, i as u64 * 100);
        }
        prop_assert_eq!(resumed.digest(), s.digest());
    }

    /// The flusher folds each take into its pending set: the changes of a
    /// stream taken in parts and absorbed in order are those of one take
    /// at the end (the latest row per key, every trade once, in order).
    #[test]
    fn changes_taken_in_parts_absorb_into_one_take(
        steps in prop::collection::vec(step(), 0..200),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let ops = valid_stream(&steps);
        let cut_after: std::collections::BTreeSet<usize> =
            cuts.iter().map(|i| i.index(ops.len() + 1)).collect();
        let (mut whole, mut parts) = (State::new(), State::new());
        let mut merged = Changes::default();
        for (i, op) in ops.iter().enumerate() {
            let at = (i as u64 + 1) * 100;
            whole.apply(op, at);
            parts.apply(op, at);
            if cut_after.contains(&(i + 1)) {
                merged.absorb(parts.take_changes());
            }
        }
        merged.absorb(parts.take_changes());
        prop_assert_eq!(merged, whole.take_changes());
    }

    #[test]
    fn arbitrary_operations_never_panic(ops in prop::collection::vec(arbitrary_op(), 0..60)) {
        let mut s = state_of(&ops);
        let _ = s.violations();
        let digest = s.digest();
        let restored = State::from_snapshot(s.export()).unwrap();
        prop_assert_eq!(restored.digest(), digest);
        let _ = restored.violations();
        let _ = s.take_changes();
    }
}

#[test]
fn apply_time_violations_are_bounded() {
    let mut s = State::new();
    let n = MAX_RECORDED_VIOLATIONS as u64 + 10;
    for i in 0..n {
        s.apply(&Op::OrderCancelled(oid(1)), i);
    }
    assert_eq!(s.violations().len(), MAX_RECORDED_VIOLATIONS);
    assert_eq!(s.violations_dropped(), 10);
}

/// Every refusal names its kind, entity and position, and changes nothing:
/// not the content, not the position, not the pending changes.
#[test]
fn try_apply_refuses_without_changing_anything() {
    let mut s = state_of(&base_stream());
    let _ = s.take_changes();
    let mut filled = order(7, "2", 30);
    filled.remaining_qty = d("2");
    s.try_apply_owned(Op::OrderReceived(filled), 5000).unwrap();
    let before = (s.digest(), s.position());
    let _ = s.take_changes();
    let mut bad_receipt = order(8, "5", 40);
    bad_receipt.remaining_qty = d("4");
    let cases: Vec<(Op, &str, EntityRef)> = vec![
        (
            Op::OrderReceived(order(1, "1", 40)),
            "duplicate_order",
            EntityRef::Order(oid(1)),
        ),
        (
            Op::OrderReceived(bad_receipt),
            "fill_mismatch",
            EntityRef::Order(oid(8)),
        ),
        (
            Op::OrderCancelled(oid(9)),
            "unknown_order",
            EntityRef::Order(oid(9)),
        ),
        (
            Op::TradeExecuted(trade(8, 1, 9, "1", 1, 41)),
            "unknown_order",
            EntityRef::Trade(tid(8)),
        ),
        (
            Op::TradeExecuted(trade(9, 7, 2, "3", 1, 41)),
            "remaining_out_of_range",
            EntityRef::Order(oid(7)),
        ),
        (
            Op::BalanceUpdated(user(1), "ETH".into(), d("1"), d("-1")),
            "negative_balance",
            EntityRef::Balance(user(1), "ETH".into()),
        ),
        (
            Op::EpochAdvanced(EpochId(1), EpochPhase::Collect),
            "epoch_regression",
            EntityRef::Epoch(EpochId(1)),
        ),
    ];
    for (op, kind, entity) in cases {
        let v = s.try_apply_owned(op.clone(), 6000).expect_err(kind);
        assert_eq!(
            (v.kind.name(), &v.entity, v.position),
            (kind, &entity, 6000)
        );
        assert_eq!(
            (s.digest(), s.position()),
            before,
            "{op:?} changed the state"
        );
        assert!(!s.has_changes(), "{op:?} left a pending change");
    }
    // A cancelled order takes no trade and no second cancel.
    s.try_apply_owned(Op::OrderCancelled(oid(7)), 6100).unwrap();
    for op in [
        Op::OrderCancelled(oid(7)),
        Op::TradeExecuted(trade(9, 7, 2, "1", 1, 42)),
    ] {
        let v = s.try_apply_owned(op, 6200).unwrap_err();
        assert_eq!(
            (v.kind.name(), v.entity),
            ("terminal_order", EntityRef::Order(oid(7)))
        );
    }
}

/// A rollback gives back the state at the savepoint: content, position,
/// pending changes and recorded violations, whatever was applied since.
#[test]
fn rollback_restores_the_state_at_the_savepoint() {
    let ops = base_stream();
    let (head, tail) = ops.split_at(ops.len() / 2);
    let mut expected = state_of(head);
    let mut s = state_of(head);
    s.savepoint();
    for (i, op) in tail.iter().enumerate() {
        s.apply(op, 10_000 + i as u64);
    }
    s.apply(&Op::OrderCancelled(oid(200)), 20_000); // recorded, then undone
    s.apply(
        &Op::BalanceUpdated(user(9), "NEW".into(), d("1"), d("0")),
        20_100,
    );
    s.rollback();
    assert_eq!(s.digest(), expected.digest());
    assert_eq!(s.violations(), expected.violations());
    assert_eq!(s.take_changes(), expected.take_changes());
    // And it goes on exactly as the state that never saw the tail.
    for (i, op) in tail.iter().enumerate() {
        s.try_apply(op, 30_000 + i as u64).unwrap();
        expected.try_apply(op, 30_000 + i as u64).unwrap();
    }
    assert_eq!(s.digest(), expected.digest());
    assert_eq!(s.take_changes(), expected.take_changes());
}

// --- what the journal and the binding read of a state's changes -------------
// (mutants of state/mod.rs that no test reached: docs/mutation-testing.md)

#[test]
fn entity_refs_name_their_kind() {
    assert_eq!(EntityRef::Order(oid(1)).kind(), "order");
    assert_eq!(EntityRef::Trade(tid(1)).kind(), "trade");
    assert_eq!(EntityRef::Balance(user(1), "BTC".into()).kind(), "balance");
    assert_eq!(EntityRef::Epoch(EpochId(1)).kind(), "epoch");
}

#[test]
fn changes_count_each_kind_of_entity() {
    let c = Changes::default();
    assert!(c.is_empty());
    assert_eq!(c.len(), 0);
    let c = state_of(&base_stream()).take_changes();
    // Two orders, one trade, one balance, one epoch.
    assert!(!c.is_empty());
    assert_eq!(c.len(), 5);
    let only = |keep: &str| {
        let mut c = c.clone();
        if keep != "orders" {
            c.orders.clear();
        }
        if keep != "trades" {
            c.trades.clear();
        }
        if keep != "balances" {
            c.balances.clear();
        }
        if keep != "epochs" {
            c.epochs.clear();
        }
        c
    };
    for (kind, n) in [("orders", 2), ("trades", 1), ("balances", 1), ("epochs", 1)] {
        let c = only(kind);
        assert!(!c.is_empty(), "{kind}");
        assert_eq!(c.len(), n, "{kind}");
    }
}

#[test]
fn has_changes_holds_for_each_kind_until_they_are_taken() {
    let mut s = State::new();
    assert!(!s.has_changes());
    let steps: Vec<Op> = vec![
        Op::EpochAdvanced(EpochId(1), EpochPhase::Collect), // a dirty epoch
        Op::OrderReceived(order(1, "5", 10)),               // a dirty order
        Op::BalanceUpdated(user(1), "BTC".into(), d("1"), d("0")), // a dirty balance
        Op::OrderCancelled(oid(1)),                         // a departed order
    ];
    for (i, op) in steps.iter().enumerate() {
        s.apply(op, 100 * (i as u64 + 1));
        assert!(s.has_changes(), "after {op:?}");
        s.take_changes();
        assert!(!s.has_changes(), "after taking {op:?}");
    }
    // A trade departs as it applies (its row goes to the changes), and a
    // finalized epoch past the kept ones departs too.
    let mut s = state_of(&base_stream());
    assert!(s.has_changes());
    let c = s.take_changes();
    assert_eq!(c.trades.len(), 1);
    assert!(!s.has_changes());
}

#[test]
fn a_state_without_change_tracking_keeps_no_departed_rows() {
    let mut s = State::new().without_change_tracking();
    for (i, op) in base_stream().iter().enumerate() {
        s.apply(op, i as u64 * 100);
    }
    s.apply(&Op::OrderCancelled(oid(1)), 900);
    s.apply(&Op::OrderCancelled(oid(2)), 901);
    let c = s.take_changes();
    // Cancelled orders and the applied trade left the hot state; without
    // tracking, their final rows are not kept for a flusher.
    assert!(c.trades.is_empty(), "{:?}", c.trades);
    assert!(c.orders.iter().all(|o| o.id != oid(1) && o.id != oid(2)));
    assert_eq!(s.order_count(), 0);
}

/// Without change tracking the rows that leave are dropped, but
/// `has_changes` still says that something changed: a cancel of an order
/// whose changes were taken marks it, as every other change does. A
/// rollback takes the mark back with the cancel.
#[test]
fn a_cancel_is_a_change_also_without_change_tracking() {
    let mut s = State::new().without_change_tracking();
    s.apply(&Op::OrderReceived(order(1, "5", 10)), 100);
    s.take_changes();
    assert!(!s.has_changes());
    s.savepoint();
    s.apply(&Op::OrderCancelled(oid(1)), 200);
    assert!(s.has_changes(), "the cancel changed the state");
    s.rollback();
    assert!(!s.has_changes(), "the cancel was rolled back");
    assert_eq!(s.order_count(), 1);
    s.apply(&Op::OrderCancelled(oid(1)), 200);
    assert!(s.has_changes(), "the cancel changed the state");
    assert_eq!(s.order_count(), 0);
}

fn finalized_epoch(id: u64) -> Epoch {
    Epoch {
        epoch_id: EpochId(id),
        phase: EpochPhase::Finalize,
        batch_hash: None,
        result_hash: None,
        trade_count: 0,
        started_at: ts(id as i64),
        completed_at: Some(ts(id as i64)),
    }
}

fn import_epochs(epochs: Vec<Epoch>) -> State {
    let snap = Snapshot::from_history(vec![], vec![], vec![], epochs, 1_000, None, None);
    State::from_snapshot(snap).unwrap()
}

/// A history holding more finalized epochs than a state keeps (a database
/// keeps them all) imports as its last [`FINALIZED_EPOCHS_KEPT`]: the
/// older ones are closed.
#[test]
fn importing_more_finalized_epochs_than_kept_closes_the_oldest() {
    let s = import_epochs((1..=20).map(finalized_epoch).collect());
    assert_eq!(FINALIZED_EPOCHS_KEPT, 16);
    assert_eq!(s.epoch_count(), 16);
    assert_eq!(s.closed_through(), Some(EpochId(4)));
    assert!(s.epoch(EpochId(4)).is_none());
    assert!(s.epoch(EpochId(5)).is_some());
}

/// Epochs finalize in id order: once the highest finalized epoch of an
/// imported history is 5, epoch 4 may not move, in whatever order the
/// history lists its epochs.
#[test]
fn an_imported_history_bars_epochs_below_its_highest_finalized_one() {
    for ids in [[5, 3], [3, 5]] {
        let mut s = import_epochs(ids.into_iter().map(finalized_epoch).collect());
        let v = s
            .try_apply(&Op::EpochAdvanced(EpochId(4), EpochPhase::Seal), 2_000)
            .unwrap_err();
        assert_eq!(
            (v.kind.name(), v.entity),
            ("epoch_regression", EntityRef::Epoch(EpochId(4))),
            "{ids:?}"
        );
        s.try_apply(&Op::EpochAdvanced(EpochId(6), EpochPhase::Seal), 2_000)
            .unwrap();
    }
}

/// After a release the savepoint is gone: a rollback then changes nothing.
#[test]
fn a_released_savepoint_cannot_be_rolled_back() {
    let mut s = State::new();
    s.savepoint();
    s.try_apply(&Op::OrderReceived(order(1, "5", 1)), 100)
        .unwrap();
    s.release();
    s.rollback();
    assert_eq!(s.order_count(), 1);
    assert_eq!(s.position(), 100);
}

/// A savepoint's log keeps its room for the next savepoint, up to
/// `KEPT_UNDO_ENTRIES` entries: a batch that needed more gives it back,
/// whether it was kept or rolled back.
#[test]
fn a_savepoint_log_keeps_its_room_up_to_a_bound() {
    let mut s = State::new();
    assert_eq!(s.kept_undo_entries(), 0);
    let mut at = 0;
    let mut batch = |s: &mut State, first: u128, n: usize, keep: bool| {
        s.savepoint();
        for op in new_orders(first, n) {
            at += 100;
            s.try_apply(&op, at).unwrap();
        }
        if keep {
            s.release();
        } else {
            s.rollback();
        }
    };
    batch(&mut s, 0, 10, true);
    let small = s.kept_undo_entries();
    assert!((10..=KEPT_UNDO_ENTRIES).contains(&small), "{small}");
    // Exactly the bound (a vector's room doubles: 65,536 orders, 65,536
    // entries) is kept; one more order needs twice the room, given back.
    batch(&mut s, 1_000, KEPT_UNDO_ENTRIES, false);
    assert_eq!(s.kept_undo_entries(), KEPT_UNDO_ENTRIES);
    batch(&mut s, 100_000, KEPT_UNDO_ENTRIES + 1, true);
    assert_eq!(s.kept_undo_entries(), 0);
    assert_eq!(s.order_count(), 10 + KEPT_UNDO_ENTRIES + 1);
    batch(&mut s, 200_000_000, 3, false);
    assert!(s.kept_undo_entries() >= 3);
}
