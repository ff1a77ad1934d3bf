//! Savepoints: the journal applies a batch under one, and takes the batch
//! back whole when an operation of it is refused or its append fails.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BalanceEntry, EpochEntry, Map, OrderEntry, RetiredKind, State};
use crate::types::{EpochId, OrderId};

/// What a rollback restores: the scalars and lengths at the savepoint, the
/// entries as they were before each change (in the order of the changes),
/// and the id window's additions and removals.
#[derive(Debug, Clone)]
pub(super) struct UndoLog {
    position: u64,
    clock: DateTime<Utc>,
    max_finalized: Option<EpochId>,
    closed_through: Option<EpochId>,
    balances: usize,
    recorded: usize,
    recorded_dropped: u64,
    dirty_orders: usize,
    dirty_balances: usize,
    dirty_epochs: usize,
    departed_orders: usize,
    departed_trades: usize,
    departed_epochs: usize,
    /// Orders by id as they were (None: not held) before their first
    /// change since the savepoint; only the first is needed, so an order
    /// received and filled in one batch is never cloned.
    saved_orders: Vec<(OrderId, Option<OrderEntry>)>,
    saved_order_ids: Map<OrderId, ()>,
    /// Balances that existed at the savepoint (balances never leave, so
    /// their indexes are stable), as they were before each change.
    saved_balances: Vec<(usize, BalanceEntry)>,
    saved_epochs: Vec<(EpochId, Option<EpochEntry>)>,
    pub(super) added_ids: Vec<Uuid>,
    pub(super) forgotten_ids: Vec<(Uuid, RetiredKind)>,
}

impl State {
    /// Starts remembering how to undo what is applied from now on, until
    /// [`State::release`] or [`State::rollback`]. The journal applies a
    /// batch under a savepoint so that a refusal, or an append that fails,
    /// leaves the state as it was. Not nested: a second call moves the
    /// savepoint here.
    pub fn savepoint(&mut self) {
        self.undo = Some(Box::new(UndoLog {
            position: self.position,
            clock: self.clock,
            max_finalized: self.max_finalized,
            closed_through: self.closed_through,
            balances: self.balances.len(),
            recorded: self.recorded.len(),
            recorded_dropped: self.recorded_dropped,
            dirty_orders: self.dirty_orders.len(),
            dirty_balances: self.dirty_balances.len(),
            dirty_epochs: self.dirty_epochs.len(),
            departed_orders: self.departed.orders.len(),
            departed_trades: self.departed.trades.len(),
            departed_epochs: self.departed.epochs.len(),
            saved_orders: Vec::new(),
            saved_order_ids: Map::default(),
            saved_balances: Vec::new(),
            saved_epochs: Vec::new(),
            added_ids: Vec::new(),
            forgotten_ids: Vec::new(),
        }));
    }

    /// Keeps what was applied since the savepoint.
    pub fn release(&mut self) {
        self.undo = None;
    }

    /// Puts the state back as it was at the savepoint: the same content,
    /// digest, pending changes and recorded violations. A no-op without one.
    pub fn rollback(&mut self) {
        let Some(u) = self.undo.take() else { return };
        // Each order once, as it was before its first change.
        for (id, entry) in u.saved_orders {
            match entry {
                Some(e) => {
                    self.orders.insert(id, e);
                }
                None => {
                    self.orders.remove(&id, |e| e.order.id);
                }
            }
        }
        for (i, entry) in u.saved_balances.into_iter().rev() {
            self.balances.entries[i] = entry;
        }
        self.balances
            .truncate(u.balances, |e| (e.balance.user_id, e.balance.asset.clone()));
        for (id, entry) in u.saved_epochs.into_iter().rev() {
            match entry {
                Some(e) => self.epochs.insert(id, e),
                None => self.epochs.remove(&id),
            };
        }
        // Forgotten ones back first, then the added ones out: an id added
        // and then forgotten within the savepoint must end up absent.
        for (id, kind) in u.forgotten_ids {
            self.retired.insert(id, kind, 0);
        }
        for id in u.added_ids {
            self.retired.remove(id);
        }
        self.dirty_orders.truncate(u.dirty_orders);
        self.dirty_balances.truncate(u.dirty_balances);
        self.dirty_epochs.truncate(u.dirty_epochs);
        self.departed.orders.truncate(u.departed_orders);
        self.departed.trades.truncate(u.departed_trades);
        self.departed.epochs.truncate(u.departed_epochs);
        self.recorded.truncate(u.recorded);
        self.recorded_dropped = u.recorded_dropped;
        self.position = u.position;
        self.clock = u.clock;
        self.max_finalized = u.max_finalized;
        self.closed_through = u.closed_through;
    }

    /// Under a savepoint, keeps the order `id` as it is now (or that it is
    /// not held), before a change to it.
    pub(super) fn save_order(&mut self, id: OrderId) {
        let Some(u) = self.undo.as_deref_mut() else {
            return;
        };
        if u.saved_order_ids.insert(id, ()).is_none() {
            let now = self.orders.get(&id).cloned();
            u.saved_orders.push((id, now));
        }
    }

    pub(super) fn save_balance(&mut self, i: usize) {
        if let Some(u) = self.undo.as_deref_mut() {
            if i < u.balances {
                u.saved_balances.push((i, self.balances.entries[i].clone()));
            }
        }
    }

    pub(super) fn save_epoch(&mut self, id: EpochId) {
        if let Some(u) = self.undo.as_deref_mut() {
            u.saved_epochs.push((id, self.epochs.get(&id).cloned()));
        }
    }
}
