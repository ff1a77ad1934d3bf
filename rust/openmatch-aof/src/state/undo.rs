//! Savepoints: the journal applies a batch under one, and takes the batch
//! back whole when an operation of it is refused or its append fails.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BalanceEntry, EpochEntry, OrderEntry, RetiredKind, State};
use crate::types::{EpochId, OrderId};

/// What a rollback restores: the scalars and lengths at the savepoint, the
/// entries as they were before each change (in the order of the changes),
/// and the id window's additions and removals.
#[derive(Debug, Clone, Default)]
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
    /// The number of held orders at the savepoint. A removal moves the
    /// last entry down into the hole, so an entry at this index or past it
    /// was received since the savepoint (the converse need not hold).
    orders: usize,
    /// Orders not held when first changed since the savepoint (received
    /// in it): a rollback removes them.
    added_orders: Vec<OrderId>,
    /// Held orders as they were before each change, in the order of the
    /// changes; a rollback restores them last to first, so each ends as it
    /// was at the savepoint. An order received since the savepoint is not
    /// saved while it stays at its index (no clone for receive-then-fill);
    /// saved or not, its removal undoes it.
    saved_orders: Vec<(OrderId, OrderEntry)>,
    /// Balances that existed at the savepoint (balances never leave, so
    /// their indexes are stable), as they were before each change.
    saved_balances: Vec<(usize, BalanceEntry)>,
    saved_epochs: Vec<(EpochId, Option<EpochEntry>)>,
    pub(super) added_ids: Vec<Uuid>,
    pub(super) forgotten_ids: Vec<(Uuid, RetiredKind)>,
}

/// At most this many entries of room (over all of a savepoint log's
/// vectors) are kept between savepoints: a batch of thousands of orders
/// reuses its room, one of millions gives it back.
pub const KEPT_UNDO_ENTRIES: usize = 1 << 16;

impl UndoLog {
    /// The room of its vectors, in entries.
    fn capacity(&self) -> usize {
        [
            self.added_orders.capacity(),
            self.saved_orders.capacity(),
            self.saved_balances.capacity(),
            self.saved_epochs.capacity(),
            self.added_ids.capacity(),
            self.forgotten_ids.capacity(),
        ]
        .iter()
        .sum()
    }
}

impl State {
    /// Starts remembering how to undo what is applied from now on, until
    /// [`State::release`] or [`State::rollback`]. The journal applies a
    /// batch under a savepoint so that a refusal, or an append that fails,
    /// leaves the state as it was. Not nested: a second call moves the
    /// savepoint here.
    pub fn savepoint(&mut self) {
        // The log of the last savepoint is kept, emptied, for the next:
        // a batch of thousands of orders would otherwise allocate (and
        // fault in) its vectors again every time.
        let mut u = self.spare_undo.take().unwrap_or_default();
        u.position = self.position;
        u.clock = self.clock;
        u.max_finalized = self.max_finalized;
        u.closed_through = self.closed_through;
        u.orders = self.orders.len();
        u.balances = self.balances.len();
        u.recorded = self.recorded.len();
        u.recorded_dropped = self.recorded_dropped;
        u.dirty_orders = self.dirty_orders.len();
        u.dirty_balances = self.dirty_balances.len();
        u.dirty_epochs = self.dirty_epochs.len();
        u.departed_orders = self.departed.orders.len();
        u.departed_trades = self.departed.trades.len();
        u.departed_epochs = self.departed.epochs.len();
        self.undo = Some(u);
    }

    /// Empties `u` and keeps it for the next savepoint, unless one batch
    /// made it large: its memory is then given back.
    fn keep_spare(&mut self, mut u: Box<UndoLog>) {
        if u.capacity() > KEPT_UNDO_ENTRIES {
            return;
        }
        u.added_orders.clear();
        u.saved_orders.clear();
        u.saved_balances.clear();
        u.saved_epochs.clear();
        u.added_ids.clear();
        u.forgotten_ids.clear();
        self.spare_undo = Some(u);
    }

    /// The room, in entries, that the last savepoint's log keeps allocated
    /// for the next one (at most [`KEPT_UNDO_ENTRIES`]; 0 before the first
    /// savepoint, or after a batch that needed more).
    pub fn kept_undo_entries(&self) -> usize {
        self.spare_undo.as_ref().map_or(0, |u| u.capacity())
    }

    /// Keeps what was applied since the savepoint.
    pub fn release(&mut self) {
        if let Some(u) = self.undo.take() {
            self.keep_spare(u);
        }
    }

    /// Puts the state back as it was at the savepoint: the same content,
    /// digest, pending changes and recorded violations. A no-op without one.
    pub fn rollback(&mut self) {
        let Some(mut u) = self.undo.take() else {
            return;
        };
        // Last change first: each held order ends as it was before its
        // first change. Then the ones received since go (whatever a saved
        // entry of theirs put back).
        for (id, entry) in u.saved_orders.drain(..).rev() {
            self.orders.insert(id, entry);
        }
        for id in &u.added_orders {
            self.orders.remove(id, |e| e.order.id);
        }
        for (i, entry) in u.saved_balances.drain(..).rev() {
            self.balances.entries[i] = entry;
        }
        self.balances
            .truncate(u.balances, |e| (e.balance.user_id, e.balance.asset.clone()));
        for (id, entry) in u.saved_epochs.drain(..).rev() {
            match entry {
                Some(e) => self.epochs.insert(id, e),
                None => self.epochs.remove(&id),
            };
        }
        // Forgotten ones back first, then the added ones out: an id added
        // and then forgotten within the savepoint must end up absent.
        for (id, kind) in u.forgotten_ids.drain(..) {
            self.retired.insert(id, kind, 0);
        }
        for id in u.added_ids.drain(..) {
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
        self.keep_spare(u);
    }

    /// Under a savepoint, keeps the order `id` as it is now (or that it is
    /// not held), before a change to it.
    pub(super) fn save_order(&mut self, id: OrderId) {
        let Some(u) = self.undo.as_deref_mut() else {
            return;
        };
        match self.orders.index_of(&id) {
            None => u.added_orders.push(id),
            Some(i) if i >= u.orders => {} // received since: its removal undoes it
            Some(i) => u.saved_orders.push((id, self.orders.entries[i].clone())),
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
