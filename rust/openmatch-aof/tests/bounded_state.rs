//! The hot state does not grow with history: terminal orders, trades and
//! old epochs leave it as the log ends them, and the duplicate checks keep
//! working through the id window (`docs/state.md`).

use chrono::{DateTime, Duration, Utc};
use openmatch_aof::state::*;
use openmatch_aof::*;
use uuid::Uuid;

mod common;
use common::*;

use AofOperation as Op;

/// A UUIDv7 made at `at` (its first 48 bits are the Unix time in ms).
fn v7(at: DateTime<Utc>, n: u64) -> Uuid {
    let ms = at.timestamp_millis() as u128;
    Uuid::from_u128((ms << 80) | (0x7 << 76) | (0b10 << 62) | u128::from(n))
}

fn t0() -> DateTime<Utc> {
    ts(0)
}

/// One epoch of an engine: `n` orders at `at`, pairs crossed in full, the
/// odd one out cancelled, the epoch finalized.
fn epoch_ops(epoch: u64, at: DateTime<Utc>, n: u64) -> Vec<Op> {
    let mut ops = vec![Op::EpochAdvanced(EpochId(epoch), EpochPhase::Collect)];
    let mut ids = Vec::new();
    for k in 0..n {
        let mut o = order(1, "5", 0);
        o.id = OrderId(v7(at, epoch * 1000 + k));
        o.created_at = at;
        o.updated_at = at;
        ids.push(o.id);
        ops.push(Op::OrderReceived(o));
    }
    ops.push(Op::EpochAdvanced(EpochId(epoch), EpochPhase::Match));
    for (k, pair) in ids.chunks(2).enumerate() {
        if let [a, b] = pair {
            let mut t = trade(1, 1, 2, "5", epoch, 0);
            t.id = TradeId(v7(at, epoch * 1000 + 500 + k as u64));
            t.taker_order_id = *a;
            t.maker_order_id = *b;
            t.executed_at = at;
            ops.push(Op::TradeExecuted(t));
        } else {
            ops.push(Op::OrderCancelled(pair[0]));
        }
    }
    ops.push(Op::EpochAdvanced(EpochId(epoch), EpochPhase::Finalize));
    ops
}

fn apply_all(s: &mut State, ops: Vec<Op>, position: &mut u64) {
    for op in ops {
        *position += 100;
        s.try_apply_owned(op, *position).unwrap();
    }
}

#[test]
fn the_hot_state_stays_flat_over_a_long_history() {
    let mut s = State::new();
    let mut position = 0;
    let mut sizes = Vec::new();
    for epoch in 1..=3000u64 {
        // One epoch a second: the id window holds ~600 epochs of ids.
        let at = t0() + Duration::seconds(epoch as i64);
        apply_all(&mut s, epoch_ops(epoch, at, 11), &mut position);
        let changes = s.take_changes();
        assert!(!changes.trades.is_empty());
        if epoch % 1000 == 0 {
            let image = state_image::encode_image(&s.export());
            sizes.push((
                s.order_count(),
                s.epoch_count(),
                s.retired_id_count(),
                image.len(),
            ));
        }
    }
    assert_eq!(s.order_count(), 0, "every order ended");
    assert_eq!(s.epoch_count(), FINALIZED_EPOCHS_KEPT);
    assert_eq!(
        s.closed_through(),
        Some(EpochId(3000 - FINALIZED_EPOCHS_KEPT as u64))
    );
    // After the window filled (at 600 s), nothing grows any more.
    assert_eq!(sizes[1], sizes[2], "{sizes:?}");
    assert!(sizes[2].2 <= 601 * 17, "{sizes:?}");
    assert!(s.check().is_ok());
}

#[test]
fn ids_that_left_are_still_refused_and_stale_ids_are_refused() {
    let mut s = State::new();
    let mut position = 0;
    let at = t0() + Duration::seconds(1);
    let ops = epoch_ops(1, at, 3);
    let (first, trade_id) = match (&ops[1], &ops[5]) {
        (Op::OrderReceived(o), Op::TradeExecuted(t)) => (o.clone(), t.id),
        other => panic!("{other:?}"),
    };
    apply_all(&mut s, ops, &mut position);
    let kind = |s: &mut State, op: Op| s.try_apply_owned(op, 1).unwrap_err().kind;

    // A filled order's id, received again: a duplicate. A trade on it:
    // terminal. The trade's id again: a duplicate.
    assert_eq!(
        kind(&mut s, Op::OrderReceived(first.clone())),
        ViolationKind::DuplicateOrder
    );
    assert_eq!(
        kind(&mut s, Op::OrderCancelled(first.id)),
        ViolationKind::TerminalOrder
    );
    let mut again = trade(9, 1, 2, "1", 2, 0);
    again.id = trade_id;
    again.executed_at = at;
    assert_eq!(
        kind(&mut s, Op::TradeExecuted(again)),
        ViolationKind::DuplicateTrade
    );

    // Once the clock is past the window, the id is forgotten, and a new
    // operation with an id that old is refused as stale, not accepted.
    let later = at + Duration::milliseconds(ID_WINDOW_MS as i64 + 1000);
    apply_all(&mut s, epoch_ops(2, later, 2), &mut position);
    assert_eq!(s.retired(first.id.0), None);
    let violation = s.try_apply_owned(Op::OrderReceived(first), 1).unwrap_err();
    assert_eq!(violation.kind, ViolationKind::StaleId);
    assert!(violation.detail.contains("id window"), "{violation}");
    // Ids that are not UUIDv7 carry no time: kept, never stale.
    let plain = order(1, "5", 0);
    apply_all(
        &mut s,
        vec![
            Op::OrderReceived(plain.clone()),
            Op::OrderCancelled(plain.id),
        ],
        &mut position,
    );
    assert_eq!(
        kind(&mut s, Op::OrderReceived(plain)),
        ViolationKind::DuplicateOrder
    );
}

#[test]
fn a_closed_epoch_takes_no_more_operations() {
    let mut s = State::new();
    let mut position = 0;
    for epoch in 1..=(FINALIZED_EPOCHS_KEPT as u64 + 2) {
        apply_all(
            &mut s,
            epoch_ops(epoch, t0() + Duration::seconds(epoch as i64), 2),
            &mut position,
        );
    }
    assert_eq!(s.closed_through(), Some(EpochId(2)));
    assert_eq!(s.epoch(EpochId(2)), None);
    assert!(s.epoch(EpochId(3)).is_some());
    for op in [
        Op::BufferSealed(EpochId(2), [0; 32]),
        Op::EpochAdvanced(EpochId(1), EpochPhase::Finalize),
    ] {
        let v = s.try_apply(&op, 1).unwrap_err();
        assert_eq!(v.kind, ViolationKind::ClosedEpoch, "{v}");
    }
    // A repeat of a kept epoch's phase is still a no-op.
    assert!(s
        .try_apply(&Op::EpochAdvanced(EpochId(3), EpochPhase::Finalize), 1)
        .is_ok());
}

#[test]
fn the_changes_carry_every_row_that_left_once() {
    let mut s = State::new();
    let mut position = 0;
    apply_all(&mut s, epoch_ops(1, t0(), 3), &mut position);
    let c = s.take_changes();
    assert_eq!(c.orders.len(), 3);
    assert!(c.orders.iter().all(|o| is_terminal(o.status)));
    assert_eq!(c.trades.len(), 1);
    assert_eq!(c.clock, t0());
    assert!(!s.has_changes());
    assert_eq!(s.take_changes().orders.len(), 0);
}

#[test]
fn a_rollback_brings_back_what_left_and_what_the_window_forgot() {
    let mut s = State::new();
    let mut position = 0;
    apply_all(
        &mut s,
        epoch_ops(1, t0() + Duration::seconds(1), 3),
        &mut position,
    );
    for epoch in 2..=(FINALIZED_EPOCHS_KEPT as u64) {
        apply_all(
            &mut s,
            epoch_ops(epoch, t0() + Duration::seconds(epoch as i64), 2),
            &mut position,
        );
    }
    let before = (s.digest(), s.export());
    s.savepoint();
    // Far enough ahead that the window forgets every id, and one more
    // finalized epoch closes epoch 1.
    let later = t0() + Duration::milliseconds(ID_WINDOW_MS as i64 * 3);
    apply_all(&mut s, epoch_ops(99, later, 3), &mut position);
    assert_eq!(s.closed_through(), Some(EpochId(1)));
    s.rollback();
    assert_eq!((s.digest(), s.export()), before);
}

#[test]
fn importing_history_keeps_its_hot_part() {
    let mut s = State::new();
    let mut position = 0;
    let mut rows = State::new();
    let mut history: (Vec<Order>, Vec<Trade>, Vec<Epoch>) = Default::default();
    for epoch in 1..=(FINALIZED_EPOCHS_KEPT as u64 + 3) {
        let ops = epoch_ops(epoch, t0() + Duration::seconds(epoch as i64), 3);
        apply_all(&mut s, ops.clone(), &mut 0);
        for op in ops {
            position += 100;
            rows.apply_owned(op, position);
        }
        let c = rows.take_changes();
        history.0.extend(c.orders);
        history.1.extend(c.trades);
        history
            .2
            .retain(|e| !c.epochs.iter().any(|n| n.epoch_id == e.epoch_id));
        history.2.extend(c.epochs);
    }
    let snap = Snapshot::from_history(
        history.0,
        history.1,
        Vec::new(),
        history.2,
        rows.position(),
        Some(rows.clock()),
        None,
    );
    let imported = State::from_snapshot(snap).unwrap();
    assert_eq!(imported.export(), rows.export());
    assert_eq!(imported.digest(), rows.digest());
}
