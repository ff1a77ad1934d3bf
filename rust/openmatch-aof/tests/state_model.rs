//! The state against an independent oracle: a small reference model of
//! `docs/state.md` written here, in the plainest form (hash maps, one
//! `match` per operation), that shares no code with `State`. Arbitrary
//! operations, over ids that collide often (a few small ones), sit at the
//! edges (nil, all ones) or are anywhere in the 128 bits, must get the
//! same verdict (applied, or refused with the same kind and entity) and
//! leave the same orders, fills, balances, epochs, retired ids, clock and
//! closed epochs.
//!
//! Scope: ids that are not UUIDv7 (the id window's expiry, which needs
//! UUIDv7 times, is tested in tests/bounded_state.rs); the model keeps
//! their retirement for the state's life, as the rule does.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use openmatch_aof::state::{clock_origin, EntityRef, Epoch, State, FINALIZED_EPOCHS_KEPT};
use openmatch_aof::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

mod common;
use common::{market, order, trade};

use AofOperation as Op;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retired {
    Order,
    Trade,
}

#[derive(Debug, Default, Clone)]
struct Model {
    /// Open orders and what has been filled of each.
    orders: HashMap<OrderId, (Order, Decimal)>,
    retired: HashMap<Uuid, Retired>,
    balances: HashMap<(UserId, String), (Decimal, Decimal)>,
    epochs: HashMap<EpochId, Epoch>,
    max_finalized: Option<EpochId>,
    closed_through: Option<EpochId>,
    clock: Option<DateTime<Utc>>,
}

type Verdict = Result<(), (&'static str, EntityRef)>;

fn terminal(s: OrderStatus) -> bool {
    matches!(
        s,
        OrderStatus::Filled | OrderStatus::Cancelled | OrderStatus::Rejected | OrderStatus::Expired
    )
}

fn negative(d: Decimal) -> bool {
    d < Decimal::ZERO
}

impl Model {
    fn clock(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(clock_origin)
    }

    fn tick(&mut self, t: DateTime<Utc>) {
        if t > self.clock() {
            self.clock = Some(t);
        }
    }

    fn closed(&self, id: EpochId) -> bool {
        self.closed_through.is_some_and(|c| id <= c) && !self.epochs.contains_key(&id)
    }

    fn epoch(&mut self, id: EpochId) -> &mut Epoch {
        let clock = self.clock();
        self.epochs.entry(id).or_insert_with(|| Epoch {
            epoch_id: id,
            phase: EpochPhase::Collect,
            batch_hash: None,
            result_hash: None,
            trade_count: 0,
            started_at: clock,
            completed_at: None,
        })
    }

    /// Why a trade or cancel may not name order `id`, which is not open.
    fn not_open(&self, id: OrderId, otherwise: EntityRef) -> (&'static str, EntityRef) {
        match self.retired.get(&id.0) {
            Some(Retired::Order) => ("terminal_order", EntityRef::Order(id)),
            _ => ("unknown_order", otherwise),
        }
    }

    fn retire_if_terminal(&mut self, id: OrderId) {
        if self
            .orders
            .get(&id)
            .is_some_and(|(o, _)| terminal(o.status))
        {
            self.orders.remove(&id);
            self.retired.insert(id.0, Retired::Order);
        }
    }

    fn apply(&mut self, op: &Op) -> Verdict {
        match op {
            Op::OrderReceived(o) => {
                let me = || EntityRef::Order(o.id);
                if self.orders.contains_key(&o.id) || self.retired.contains_key(&o.id.0) {
                    return Err(("duplicate_order", me()));
                }
                if negative(o.remaining_qty) || o.remaining_qty > o.quantity {
                    return Err(("remaining_out_of_range", me()));
                }
                if o.remaining_qty != o.quantity {
                    return Err(("fill_mismatch", me()));
                }
                self.tick(o.created_at);
                self.tick(o.updated_at);
                self.orders.insert(o.id, (o.clone(), Decimal::ZERO));
                self.retire_if_terminal(o.id);
            }
            Op::OrderCancelled(id) => {
                let Some((o, _)) = self.orders.get_mut(id) else {
                    return Err(self.not_open(*id, EntityRef::Order(*id)));
                };
                o.status = OrderStatus::Cancelled;
                self.retire_if_terminal(*id);
            }
            Op::TradeExecuted(t) => {
                if self.retired.contains_key(&t.id.0) || self.orders.contains_key(&OrderId(t.id.0))
                {
                    return Err(("duplicate_trade", EntityRef::Trade(t.id)));
                }
                if self.closed(t.epoch_id) {
                    return Err(("closed_epoch", EntityRef::Epoch(t.epoch_id)));
                }
                let self_trade = t.taker_order_id == t.maker_order_id;
                let sides: Vec<(OrderId, Option<Decimal>)> = if self_trade {
                    vec![(t.taker_order_id, t.quantity.checked_mul(Decimal::TWO))]
                } else {
                    vec![
                        (t.taker_order_id, Some(t.quantity)),
                        (t.maker_order_id, Some(t.quantity)),
                    ]
                };
                for &(id, quantity) in &sides {
                    let Some(quantity) = quantity else {
                        return Err(("arithmetic_overflow", EntityRef::Trade(t.id)));
                    };
                    let Some((o, filled)) = self.orders.get(&id) else {
                        return Err(self.not_open(id, EntityRef::Trade(t.id)));
                    };
                    let (Some(remaining), Some(_)) = (
                        o.remaining_qty.checked_sub(quantity),
                        filled.checked_add(quantity),
                    ) else {
                        return Err(("arithmetic_overflow", EntityRef::Order(id)));
                    };
                    if negative(remaining) || remaining > o.quantity {
                        return Err(("remaining_out_of_range", EntityRef::Order(id)));
                    }
                }
                self.tick(t.executed_at);
                for id in [t.taker_order_id, t.maker_order_id] {
                    let (o, filled) = self.orders.get_mut(&id).expect("judged above");
                    o.remaining_qty -= t.quantity;
                    *filled += t.quantity;
                    o.status = if o.remaining_qty.is_zero() {
                        OrderStatus::Filled
                    } else {
                        OrderStatus::PartiallyFilled
                    };
                    o.updated_at = o.updated_at.max(t.executed_at);
                }
                self.epoch(t.epoch_id).trade_count += 1;
                for id in [t.taker_order_id, t.maker_order_id] {
                    self.retire_if_terminal(id);
                }
                self.retired.insert(t.id.0, Retired::Trade);
            }
            Op::BalanceUpdated(user, asset, available, frozen) => {
                if negative(*available) || negative(*frozen) {
                    return Err(("negative_balance", EntityRef::Balance(*user, asset.clone())));
                }
                self.balances
                    .insert((*user, asset.clone()), (*available, *frozen));
            }
            Op::EpochAdvanced(id, phase) => {
                if self.closed(*id) {
                    return Err(("closed_epoch", EntityRef::Epoch(*id)));
                }
                let current = self.epochs.get(id).map(|e| e.phase);
                if current == Some(*phase) {
                    return Ok(());
                }
                let backwards = current.is_some_and(|c| *phase < c);
                let after_later = self.max_finalized.is_some_and(|m| m > *id);
                if backwards || after_later {
                    return Err(("epoch_regression", EntityRef::Epoch(*id)));
                }
                let clock = self.clock();
                let e = self.epoch(*id);
                e.phase = *phase;
                if *phase == EpochPhase::Finalize {
                    e.completed_at.get_or_insert(clock);
                    self.max_finalized = self.max_finalized.max(Some(*id));
                    let mut finalized: Vec<EpochId> = self
                        .epochs
                        .values()
                        .filter(|e| e.phase == EpochPhase::Finalize)
                        .map(|e| e.epoch_id)
                        .collect();
                    finalized.sort();
                    let excess = finalized.len().saturating_sub(FINALIZED_EPOCHS_KEPT);
                    for old in &finalized[..excess] {
                        self.epochs.remove(old);
                        self.closed_through = self.closed_through.max(Some(*old));
                    }
                }
            }
            Op::BufferSealed(id, hash) => {
                if self.closed(*id) {
                    return Err(("closed_epoch", EntityRef::Epoch(*id)));
                }
                self.epoch(*id).batch_hash = Some(*hash);
            }
        }
        Ok(())
    }

    /// The model and the state hold the same things.
    fn assert_same(&self, s: &State, ids: &[Uuid]) {
        assert_eq!(s.order_count(), self.orders.len(), "open orders");
        for (id, (o, filled)) in &self.orders {
            assert_eq!(s.order(id), Some(o), "order {}", id.0);
            assert_eq!(s.filled(id), Some(*filled), "filled of {}", id.0);
        }
        assert_eq!(s.balance_count(), self.balances.len(), "balances");
        for ((user, asset), (available, frozen)) in &self.balances {
            let b = s.balance(*user, asset).expect("balance held");
            assert_eq!((b.available, b.frozen), (*available, *frozen));
        }
        assert_eq!(s.epoch_count(), self.epochs.len(), "epochs");
        for (id, e) in &self.epochs {
            assert_eq!(s.epoch(*id), Some(e), "epoch {}", id.0);
        }
        assert_eq!(s.retired_id_count(), self.retired.len(), "retired ids");
        for id in ids {
            let theirs = s.retired(*id).map(|k| format!("{k:?}"));
            let ours = self.retired.get(id).map(|k| format!("{k:?}"));
            assert_eq!(theirs, ours, "retired {id}");
        }
        assert_eq!(s.clock(), self.clock(), "clock");
        assert_eq!(s.closed_through(), self.closed_through, "closed epochs");
    }
}

/// One generated input: an operation, or "finalize the epoch after the
/// last one finalized", which only the model can resolve (random epoch
/// ids would seldom finalize in order, and the kept-epochs limit would
/// never be reached).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a test input, built once
enum Input {
    Op(Op),
    FinalizeNext,
}

/// Ids that collide often, sit at the edges, or are anywhere (made not
/// UUIDv7: see the module doc).
fn id() -> impl Strategy<Value = Uuid> {
    prop_oneof![
        6 => (1u128..6).prop_map(Uuid::from_u128),
        1 => Just(Uuid::nil()),
        1 => Just(Uuid::max()),
        2 => any::<u128>().prop_map(|n| {
            let u = Uuid::from_u128(n);
            if u.get_version_num() == 7 {
                Uuid::from_u128(n ^ (1 << 76)) // version 6 instead
            } else {
                u
            }
        }),
    ]
}

fn epoch_id() -> impl Strategy<Value = EpochId> {
    prop_oneof![
        6 => (0u64..4).prop_map(EpochId),
        1 => Just(EpochId(u64::MAX)),
        1 => any::<u64>().prop_map(EpochId),
    ]
}

fn quantity() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        6 => (0i64..12).prop_map(|n| Decimal::new(n, 1)),
        1 => (-3i64..0).prop_map(Decimal::from),
        1 => (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        1 => Just(Decimal::MAX),
        1 => Just(Decimal::MIN),
    ]
}

fn status() -> impl Strategy<Value = OrderStatus> {
    prop_oneof![
        6 => Just(OrderStatus::Active),
        1 => Just(OrderStatus::PendingEscrow),
        1 => Just(OrderStatus::PartiallyFilled),
        1 => Just(OrderStatus::Filled),
        1 => Just(OrderStatus::Cancelled),
        1 => Just(OrderStatus::Rejected),
        1 => Just(OrderStatus::Expired),
    ]
}

fn when() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        8 => (-10i64..10).prop_map(|s| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

fn phase() -> impl Strategy<Value = EpochPhase> {
    prop_oneof![
        Just(EpochPhase::Collect),
        Just(EpochPhase::Seal),
        Just(EpochPhase::Match),
        Just(EpochPhase::Finalize),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let receive = (id(), quantity(), quantity(), status(), when(), when()).prop_map(
        |(id, q, r, status, created, updated)| {
            let mut o = order(1, "1", 0);
            o.id = OrderId(id);
            o.quantity = q;
            o.remaining_qty = r;
            o.status = status;
            o.created_at = created;
            o.updated_at = updated;
            o.market = market();
            Op::OrderReceived(o)
        },
    );
    // Most receipts are well formed, so that trades find open orders.
    let open = (id(), 1i64..20).prop_map(|(id, q)| {
        let mut o = order(1, "1", 0);
        o.id = OrderId(id);
        o.quantity = Decimal::new(q, 1);
        o.remaining_qty = o.quantity;
        Op::OrderReceived(o)
    });
    let execute = (id(), id(), id(), quantity(), epoch_id(), when()).prop_map(
        |(t, taker, maker, q, e, at)| {
            let mut tr = trade(1, 1, 2, "1", 0, 0);
            tr.id = TradeId(t);
            tr.taker_order_id = OrderId(taker);
            tr.maker_order_id = OrderId(maker);
            tr.quantity = q;
            tr.epoch_id = e;
            tr.executed_at = at;
            Op::TradeExecuted(tr)
        },
    );
    prop_oneof![
        2 => receive.prop_map(Input::Op),
        3 => open.prop_map(Input::Op),
        2 => id().prop_map(|i| Input::Op(Op::OrderCancelled(OrderId(i)))),
        4 => execute.prop_map(Input::Op),
        2 => (id(), prop_oneof![Just("X"), Just("Y")], quantity(), quantity()).prop_map(
            |(u, a, x, f)| Input::Op(Op::BalanceUpdated(UserId(u), a.into(), x, f))
        ),
        2 => (epoch_id(), phase()).prop_map(|(e, p)| Input::Op(Op::EpochAdvanced(e, p))),
        1 => (epoch_id(), any::<u8>())
            .prop_map(|(e, h)| Input::Op(Op::BufferSealed(e, [h; 32]))),
        2 => Just(Input::FinalizeNext),
    ]
}

/// Every id an input names (for the retired-id comparison).
fn ids_of(op: &Op) -> Vec<Uuid> {
    match op {
        Op::OrderReceived(o) => vec![o.id.0],
        Op::OrderCancelled(id) => vec![id.0],
        Op::TradeExecuted(t) => vec![t.id.0, t.taker_order_id.0, t.maker_order_id.0],
        _ => vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_state_agrees_with_the_reference_model(inputs in prop::collection::vec(input(), 0..160)) {
        let mut model = Model::default();
        let mut state = State::new();
        let mut ids = vec![];
        for (i, input) in inputs.into_iter().enumerate() {
            let op = match input {
                Input::Op(op) => op,
                Input::FinalizeNext => {
                    let next = model.max_finalized.map_or(0, |e| e.0.saturating_add(1));
                    Op::EpochAdvanced(EpochId(next), EpochPhase::Finalize)
                }
            };
            ids.extend(ids_of(&op));
            let position = (i as u64 + 1) * 100;
            let expected = model.apply(&op);
            let got = state
                .try_apply(&op, position)
                .map_err(|v| (v.kind.name(), v.entity));
            prop_assert_eq!(&got, &expected, "operation {} {:?}", i, op);
        }
        model.assert_same(&state, &ids);
        // A snapshot holds the same (but see the ignored test below: a
        // trade id that is an open order's id is accepted, and then the
        // snapshot is refused).
        let shared = model.orders.keys().any(|o| model.retired.get(&o.0) == Some(&Retired::Trade));
        // ...and a fill that rust_decimal's rounding took out of the
        // remaining quantity (28 significant digits) comes back as 0.
        let rounded = model
            .orders
            .values()
            .any(|(o, filled)| o.quantity.checked_sub(o.remaining_qty) != Some(*filled));
        if !shared && !rounded {
            model.assert_same(&State::from_snapshot(state.export()).unwrap(), &ids);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The journal applies each batch under a savepoint and takes it back
    /// whole when it is refused: batches of any length (receipts, fills,
    /// cancels and retirements of orders of earlier batches and of the
    /// same one), each kept or rolled back at random, leave the state as
    /// the model that applied only the kept ones. Savepoint after savepoint
    /// on one state, as the journal runs them.
    #[test]
    fn a_rolled_back_batch_leaves_the_state_as_the_model_without_it(
        inputs in prop::collection::vec(input(), 0..160),
        ends in prop::collection::vec(any::<bool>(), 160),
        kept in prop::collection::vec(any::<bool>(), 160),
    ) {
        let mut model = Model::default();
        let mut batch = model.clone();
        let mut state = State::new();
        state.savepoint();
        let mut ids = vec![];
        let mut batches = 0;
        for (i, input) in inputs.into_iter().enumerate() {
            let op = match input {
                Input::Op(op) => op,
                Input::FinalizeNext => {
                    let next = batch.max_finalized.map_or(0, |e| e.0.saturating_add(1));
                    Op::EpochAdvanced(EpochId(next), EpochPhase::Finalize)
                }
            };
            ids.extend(ids_of(&op));
            let expected = batch.apply(&op);
            let got = state
                .try_apply(&op, (i as u64 + 1) * 100)
                .map_err(|v| (v.kind.name(), v.entity));
            prop_assert_eq!(&got, &expected, "operation {} {:?}", i, op);
            if ends[i] {
                if kept[batches] {
                    state.release();
                    model = batch.clone();
                } else {
                    state.rollback();
                    batch = model.clone();
                }
                model.assert_same(&state, &ids);
                batches += 1;
                state.savepoint();
            }
        }
        state.rollback();
        model.assert_same(&state, &ids);
    }
}

/// Found by the model's edge quantities: a fill of 0.1 on an order of
/// `Decimal::MAX` is applied, but `MAX - 0.1` rounds back to `MAX`, so the
/// remaining quantity does not move; the state counts the fill, and its
/// snapshot (which derives fills as quantity - remaining) loses it. The
/// journal refuses such quantities (`store_fit`: NUMERIC(28,8)), so only a
/// foreign log can reach it; the rule could refuse a trade whose
/// subtraction is inexact.
#[test]
#[ignore = "a known gap in the rule, see the doc comment"]
fn a_fill_lost_to_decimal_rounding_survives_a_snapshot() {
    let mut s = State::new();
    let mut big = order(3, "1", 0);
    big.quantity = Decimal::MAX;
    big.remaining_qty = Decimal::MAX;
    s.try_apply(&Op::OrderReceived(big), 100).unwrap();
    s.try_apply(&Op::OrderReceived(order(4, "1", 0)), 200)
        .unwrap();
    if s.try_apply(&Op::TradeExecuted(trade(1, 3, 4, "0.1", 1, 1)), 300)
        .is_ok()
    {
        let restored = State::from_snapshot(s.export()).unwrap();
        assert_eq!(
            restored.filled(&order(3, "1", 0).id),
            s.filled(&order(3, "1", 0).id)
        );
    }
}

/// Found by the model's colliding ids: a trade whose id was the id of an
/// open order was applied (the rule checked a trade id against retired ids
/// only), and the state's own snapshot of the result was then refused as a
/// duplicate order, so recovery from that snapshot failed where replay of
/// the same log succeeded. Ids are unique across kinds now, as they already
/// were for an order received with a trade's id.
#[test]
fn a_trade_id_equal_to_an_open_order_id_is_refused() {
    let mut s = State::new();
    s.try_apply(&Op::OrderReceived(order(3, "1", 0)), 100)
        .unwrap();
    s.try_apply(&Op::OrderReceived(order(4, "1", 0)), 200)
        .unwrap();
    let mut t = trade(1, 4, 4, "0.1", 1, 1);
    t.id = TradeId(order(3, "1", 0).id.0);
    let refused = s.try_apply(&Op::TradeExecuted(t), 300).unwrap_err();
    assert_eq!(
        refused.kind,
        openmatch_aof::state::ViolationKind::DuplicateTrade
    );
    assert!(State::from_snapshot(s.export()).is_ok());
}
