//! Snapshots of the hot state (export and import) and its digest.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    clock_origin, is_terminal, Balance, BalanceEntry, Departed, EntityRef, Epoch, EpochEntry,
    NoneOrLt, OrderEntry, RetiredKind, SnapshotError, State, Violation, ViolationKind,
};
use crate::types::*;

/// The version of [`Snapshot`]'s layout (the state image's body).
pub const SNAPSHOT_VERSION: u32 = 2;

/// The hot state as plain values: what a snapshot stores. Orders, balances
/// and epochs sorted by key; the retired ids sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The position the state covers (see [`State::position`]).
    pub position: u64,
    /// The logical clock (see [`State::clock`]).
    pub clock: DateTime<Utc>,
    /// See [`State::closed_through`].
    pub closed_through: Option<EpochId>,
    /// Open orders.
    pub orders: Vec<Order>,
    /// Every balance.
    pub balances: Vec<Balance>,
    /// Epochs not finalized, and the last finalized ones.
    pub epochs: Vec<Epoch>,
    /// Ids of terminal orders inside the id window (and untimed ones).
    pub retired_orders: Vec<OrderId>,
    /// Ids of applied trades inside the id window (and untimed ones).
    pub retired_trades: Vec<TradeId>,
}

impl Snapshot {
    /// A snapshot from a history of entities (rows of a database, or a
    /// test's): open orders are held, terminal ones and the trades give
    /// their ids to the id window (those inside it), and epochs past the
    /// kept finalized ones are closed. `clock` defaults to the latest
    /// timestamp of the entities.
    pub fn from_history(
        orders: Vec<Order>,
        trades: Vec<Trade>,
        balances: Vec<Balance>,
        epochs: Vec<Epoch>,
        position: u64,
        clock: Option<DateTime<Utc>>,
        closed_through: Option<EpochId>,
    ) -> Snapshot {
        let clock = clock.unwrap_or_else(|| {
            let times = orders
                .iter()
                .flat_map(|o| [o.created_at, o.updated_at])
                .chain(trades.iter().map(|t| t.executed_at))
                .chain(
                    epochs
                        .iter()
                        .flat_map(|e| std::iter::once(e.started_at).chain(e.completed_at)),
                );
            times.fold(clock_origin(), DateTime::max)
        });
        let retired_trades = trades.iter().map(|t| t.id).collect();
        Snapshot {
            position,
            clock,
            closed_through,
            orders,
            balances,
            epochs,
            retired_orders: Vec::new(),
            retired_trades,
        }
    }
}

impl State {
    /// The hot state as plain values.
    pub fn export(&self) -> Snapshot {
        Snapshot {
            position: self.position,
            clock: self.clock,
            closed_through: self.closed_through,
            orders: self.orders_sorted().into_iter().cloned().collect(),
            balances: self.balances_sorted().into_iter().cloned().collect(),
            epochs: self.epochs_sorted().into_iter().cloned().collect(),
            retired_orders: self
                .retired
                .sorted(RetiredKind::Order)
                .into_iter()
                .map(OrderId)
                .collect(),
            retired_trades: self
                .retired
                .sorted(RetiredKind::Trade)
                .into_iter()
                .map(TradeId)
                .collect(),
        }
    }

    /// A state from a snapshot. A terminal order in `orders` is not held
    /// (its id joins the window), epochs past the kept finalized ones are
    /// closed, ids past the window are dropped: importing an export gives
    /// the same state, and importing more history gives its hot part.
    /// Each held order's fills are its quantity − remaining; every entity
    /// counts as last changed at the snapshot's position. The state starts
    /// with no pending changes and no recorded violations.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<State, SnapshotError> {
        let Snapshot {
            position,
            clock,
            closed_through,
            orders,
            balances,
            epochs,
            retired_orders,
            retired_trades,
        } = snapshot;
        let at = position;
        // Nothing imported is a change: the database already holds it.
        let mut s = State::new().without_change_tracking();
        s.position = position;
        s.clock = clock;
        s.closed_through = closed_through;
        let window_start = super::window_start_ms(clock);
        for id in retired_trades {
            s.retired.insert(id.0, RetiredKind::Trade, window_start);
        }
        for id in retired_orders {
            s.retired.insert(id.0, RetiredKind::Order, window_start);
        }
        s.orders.reserve(orders.len());
        for order in orders {
            let id = order.id;
            if is_terminal(order.status) {
                if s.retired.get(id.0).is_some() {
                    return Err(SnapshotError::DuplicateOrder(id));
                }
                s.retired.insert(id.0, RetiredKind::Order, window_start);
                continue;
            }
            let filled = match order.quantity.checked_sub(order.remaining_qty) {
                Some(f) => f,
                None => {
                    s.recorded.push(Violation {
                        kind: ViolationKind::Overflow,
                        entity: EntityRef::Order(id),
                        position: at,
                        detail: "quantity - remaining overflows".into(),
                    });
                    Decimal::ZERO
                }
            };
            let entry = OrderEntry {
                order,
                filled,
                changed_at: at,
                dirty: false,
            };
            if s.retired.get(id.0).is_some() || s.orders.insert(id, entry).is_some() {
                return Err(SnapshotError::DuplicateOrder(id));
            }
        }
        for balance in balances {
            let key = (balance.user_id, balance.asset.clone());
            let entry = BalanceEntry {
                balance,
                changed_at: at,
                dirty: false,
            };
            if let Some(old) = s.balances.insert(key, entry) {
                return Err(SnapshotError::DuplicateBalance(
                    old.balance.user_id,
                    old.balance.asset,
                ));
            }
        }
        for epoch in epochs {
            let id = epoch.epoch_id;
            if epoch.phase == EpochPhase::Finalize && s.max_finalized.is_none_or_lt(id) {
                s.max_finalized = Some(id);
            }
            let entry = EpochEntry {
                epoch,
                changed_at: at,
                dirty: false,
            };
            if s.epochs.insert(id, entry).is_some() {
                return Err(SnapshotError::DuplicateEpoch(id));
            }
        }
        s.retire_old_epochs();
        s.track_changes = true;
        s.departed = Departed::default();
        Ok(s)
    }

    // --- digest -------------------------------------------------------------------------

    /// SHA-256 over a canonical serialization of the hot state: the
    /// position, the clock, the closed epochs, then orders, balances and
    /// epochs each sorted by key, each entity as its bincode bytes, then the
    /// retired ids sorted. Equal content gives an equal digest whatever the
    /// order of insertion; the bookkeeping (fills, per-entity positions,
    /// recorded violations, pending changes) is not content.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"openmatch-state/v2\0");
        feed(&mut h, &self.position);
        feed(&mut h, &self.clock);
        feed(&mut h, &self.closed_through);
        feed(&mut h, &(self.orders.len() as u64));
        for o in self.orders_sorted() {
            feed(&mut h, o);
        }
        feed(&mut h, &(self.balances.len() as u64));
        for b in self.balances_sorted() {
            feed(&mut h, b);
        }
        feed(&mut h, &(self.epochs.len() as u64));
        for e in self.epochs_sorted() {
            feed(&mut h, e);
        }
        for kind in [RetiredKind::Order, RetiredKind::Trade] {
            let ids = self.retired.sorted(kind);
            feed(&mut h, &(ids.len() as u64));
            for id in ids {
                feed(&mut h, &id);
            }
        }
        h.finalize().into()
    }
}

/// Serializes `value` with bincode straight into the hasher.
fn feed<T: Serialize + ?Sized>(h: &mut Sha256, value: &T) {
    struct HashWriter<'a>(&'a mut Sha256);
    impl std::io::Write for HashWriter<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // The writer never fails and the engine's plain data types always
    // serialize, so there is no error to report.
    bincode::serialize_into(HashWriter(h), value).expect("engine types always serialize");
}
