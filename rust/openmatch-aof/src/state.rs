//! The engine's state in memory: the AOF's operations applied in order.
//!
//! `docs/state.md` is the description of the semantics; this module is the
//! implementation. In short: [`State::apply`] folds one operation into the
//! state, deterministically; [`State::check`] reports every broken invariant
//! with the entity and the AOF position of the operation that broke it;
//! [`State::take_changes`] hands the entities changed since the last call to
//! an asynchronous database flush; [`State::export`] / [`State::from_snapshot`]
//! round-trip the whole state exactly; [`State::digest`] compares two states.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The maps are keyed by the engine's own ids (from a trusted log), so a
/// fast non-cryptographic hash is safe; iteration order never leaks out
/// (everything that leaves the state is sorted by key).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Entities in a vector with a map from key to index. Entities are large
/// (an order entry is about 300 bytes) and never removed: growing a vector
/// is a `realloc` (often a remap, no copy), where growing a map of large
/// entries rehashes and moves each one. This halves the cost of receiving
/// an order.
#[derive(Debug, Clone)]
struct Table<K, E> {
    entries: Vec<E>,
    index: Map<K, usize>,
}

impl<K: std::hash::Hash + Eq, E> Default for Table<K, E> {
    fn default() -> Self {
        Table {
            entries: Vec::new(),
            index: Map::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, E> Table<K, E> {
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn get(&self, k: &K) -> Option<&E> {
        self.index.get(k).map(|&i| &self.entries[i])
    }
    fn get_mut(&mut self, k: &K) -> Option<&mut E> {
        self.index.get(k).map(|&i| &mut self.entries[i])
    }
    fn contains_key(&self, k: &K) -> bool {
        self.index.contains_key(k)
    }
    /// Inserts or replaces; returns the replaced entry.
    fn insert(&mut self, k: K, e: E) -> Option<E> {
        match self.index.get(&k) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i], e)),
            None => {
                self.index.insert(k, self.entries.len());
                self.entries.push(e);
                None
            }
        }
    }
    fn values(&self) -> std::slice::Iter<'_, E> {
        self.entries.iter()
    }
    fn index_of(&self, k: &K) -> Option<usize> {
        self.index.get(k).copied()
    }
    /// Removes the entries past the first `len` (an undo of their inserts;
    /// entries are only ever appended).
    fn truncate(&mut self, len: usize, key: impl Fn(&E) -> K) {
        while self.entries.len() > len {
            if let Some(e) = self.entries.pop() {
                self.index.remove(&key(&e));
            }
        }
    }
    fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        self.index.reserve(n);
    }
}

use crate::codec::{decode_frame, FrameError};
use crate::types::*;

/// How many apply-time violations a state remembers; past this it counts
/// them, so that a hostile or broken log cannot grow memory without bound.
pub const MAX_RECORDED_VIOLATIONS: usize = 1024;

/// One user's holding of one asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balance {
    pub user_id: UserId,
    pub asset: Asset,
    pub available: Decimal,
    pub frozen: Decimal,
}

/// One epoch (= one batch) of the auction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch_id: EpochId,
    pub phase: EpochPhase,
    /// Set by `BufferSealed` (the batch id is the epoch id).
    pub batch_hash: Option<[u8; 32]>,
    /// No operation sets it; it is carried through snapshots unchanged.
    pub result_hash: Option<[u8; 32]>,
    pub trade_count: u64,
    /// The logical clock when the epoch first appeared in the stream.
    pub started_at: DateTime<Utc>,
    /// The logical clock when the epoch first reached `Finalize`.
    pub completed_at: Option<DateTime<Utc>>,
}

impl Epoch {
    fn new(epoch_id: EpochId, started_at: DateTime<Utc>) -> Self {
        Epoch {
            epoch_id,
            phase: EpochPhase::Collect,
            batch_hash: None,
            result_hash: None,
            trade_count: 0,
            started_at,
            completed_at: None,
        }
    }
}

/// The entity a violation is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityRef {
    Order(OrderId),
    Trade(TradeId),
    Balance(UserId, Asset),
    Epoch(EpochId),
}

impl EntityRef {
    /// `"order"`, `"trade"`, `"balance"` or `"epoch"`.
    pub fn kind(&self) -> &'static str {
        match self {
            EntityRef::Order(_) => "order",
            EntityRef::Trade(_) => "trade",
            EntityRef::Balance(..) => "balance",
            EntityRef::Epoch(_) => "epoch",
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityRef::Order(id) => write!(f, "order {}", id.0),
            EntityRef::Trade(id) => write!(f, "trade {}", id.0),
            EntityRef::Balance(u, a) => write!(f, "balance {}/{a}", u.0),
            EntityRef::Epoch(e) => write!(f, "epoch {}", e.0),
        }
    }
}

/// Which invariant is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// An order's remaining quantity is below 0 or above its quantity.
    RemainingOutOfRange,
    /// An order's fills do not add up to quantity − remaining.
    FillMismatch,
    /// A trade or a cancel names an order the state does not hold.
    UnknownOrder,
    /// A balance's available or frozen amount is below 0.
    NegativeBalance,
    /// An epoch moved to a lower phase, or changed phase after a later
    /// epoch was finalized.
    EpochRegression,
    /// A trade or a cancel names an order that is already filled,
    /// cancelled, rejected or expired.
    TerminalOrder,
    /// An order id received a second time.
    DuplicateOrder,
    /// A trade id executed a second time.
    DuplicateTrade,
    /// Arithmetic that does not fit rust_decimal (or a u64 count).
    Overflow,
}

impl ViolationKind {
    /// A short stable name, used by the Python binding and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::RemainingOutOfRange => "remaining_out_of_range",
            ViolationKind::FillMismatch => "fill_mismatch",
            ViolationKind::UnknownOrder => "unknown_order",
            ViolationKind::NegativeBalance => "negative_balance",
            ViolationKind::EpochRegression => "epoch_regression",
            ViolationKind::TerminalOrder => "terminal_order",
            ViolationKind::DuplicateOrder => "duplicate_order",
            ViolationKind::DuplicateTrade => "duplicate_trade",
            ViolationKind::Overflow => "arithmetic_overflow",
        }
    }
}

/// A broken invariant: what, which entity, and the AOF position of the
/// operation that broke it (for an entity imported from a snapshot and not
/// changed since, the snapshot's position).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{} at position {position}: {entity}: {detail}", kind.name())]
pub struct Violation {
    pub kind: ViolationKind,
    pub entity: EntityRef,
    pub position: u64,
    pub detail: String,
}

/// The entities changed since the previous [`State::take_changes`], each once,
/// as their current values: orders, balances and epochs sorted by key, trades
/// in the order they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub orders: Vec<Order>,
    pub trades: Vec<Trade>,
    pub balances: Vec<Balance>,
    pub epochs: Vec<Epoch>,
    /// The position of the last applied operation (the AOF position just
    /// past its frame): the changes cover the AOF up to it. 0 when nothing
    /// was ever applied.
    pub position: u64,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.trades.is_empty()
            && self.balances.is_empty()
            && self.epochs.is_empty()
    }
}

/// The whole state as plain values: what a snapshot stores. Orders, balances
/// and epochs sorted by key; trades in the order they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub orders: Vec<Order>,
    pub trades: Vec<Trade>,
    pub balances: Vec<Balance>,
    pub epochs: Vec<Epoch>,
    /// The position the state covers (see [`State::position`]).
    pub position: u64,
}

/// A snapshot that cannot be a state: the same key twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot holds order {} twice", .0 .0)]
    DuplicateOrder(OrderId),
    #[error("snapshot holds trade {} twice", .0 .0)]
    DuplicateTrade(TradeId),
    #[error("snapshot holds the balance of {}/{} twice", .0 .0, .1)]
    DuplicateBalance(UserId, Asset),
    #[error("snapshot holds epoch {} twice", .0 .0)]
    DuplicateEpoch(EpochId),
}

#[derive(Debug, Clone)]
struct OrderEntry {
    order: Order,
    /// The sum of the quantities of the trades applied to this order.
    filled: Decimal,
    /// Position of the operation that last changed the order.
    changed_at: u64,
    /// Changed since the last `take_changes` (its id is in `dirty_orders`).
    dirty: bool,
}

#[derive(Debug, Clone)]
struct TradeEntry {
    trade: Trade,
    position: u64,
}

#[derive(Debug, Clone)]
struct BalanceEntry {
    balance: Balance,
    changed_at: u64,
    dirty: bool,
}

#[derive(Debug, Clone)]
struct EpochEntry {
    epoch: Epoch,
    changed_at: u64,
    dirty: bool,
}

/// What a rollback restores: the scalars and lengths at the savepoint and
/// the entries, as they were, that existed then and changed since.
#[derive(Debug, Clone)]
struct UndoLog {
    position: u64,
    clock: DateTime<Utc>,
    max_finalized: Option<EpochId>,
    orders: usize,
    trades: usize,
    balances: usize,
    recorded: usize,
    recorded_dropped: u64,
    dirty_orders: usize,
    dirty_balances: usize,
    dirty_epochs: usize,
    saved_orders: Vec<(usize, OrderEntry)>,
    saved_balances: Vec<(usize, BalanceEntry)>,
    saved_epochs: Vec<(EpochId, Option<EpochEntry>)>,
}

/// The logical clock's value before any timestamp has been seen.
pub fn clock_origin() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// The engine's state. See the module documentation.
#[derive(Debug, Clone)]
pub struct State {
    orders: Table<OrderId, OrderEntry>,
    trades: Vec<TradeEntry>,
    trade_index: Map<TradeId, usize>,
    balances: Table<(UserId, Asset), BalanceEntry>,
    epochs: Map<EpochId, EpochEntry>,
    position: u64,
    /// The latest order or trade timestamp that entered the state.
    clock: DateTime<Utc>,
    /// The highest epoch id that reached `Finalize`.
    max_finalized: Option<EpochId>,
    /// Violations only visible while applying (they leave no trace in the
    /// entities), the first [`MAX_RECORDED_VIOLATIONS`] of them.
    recorded: Vec<Violation>,
    recorded_dropped: u64,
    /// The keys of the entities whose `dirty` flag is set, each once: at
    /// most one key per entity, so bounded by the state's size.
    dirty_orders: Vec<OrderId>,
    dirty_balances: Vec<(UserId, Asset)>,
    dirty_epochs: Vec<EpochId>,
    /// Trades are append-only: those at and after this index are new.
    trades_taken: usize,
    /// Set between [`State::savepoint`] and its release or rollback.
    undo: Option<Box<UndoLog>>,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    pub fn new() -> Self {
        State {
            orders: Table::default(),
            trades: Vec::new(),
            trade_index: Map::default(),
            balances: Table::default(),
            epochs: Map::default(),
            position: 0,
            clock: clock_origin(),
            max_finalized: None,
            recorded: Vec::new(),
            recorded_dropped: 0,
            dirty_orders: Vec::new(),
            dirty_balances: Vec::new(),
            dirty_epochs: Vec::new(),
            trades_taken: 0,
            undo: None,
        }
    }

    // --- reading ------------------------------------------------------------

    /// The position of the last applied operation, 0 before any. By the
    /// project's convention (`docs/recovery.md`) an operation's position is
    /// the AOF position just past its frame, so this is where a replay
    /// continues; [`State::apply_frames`] follows it.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The logical clock: the latest order/trade timestamp applied so far.
    pub fn clock(&self) -> DateTime<Utc> {
        self.clock
    }

    pub fn order_count(&self) -> usize {
        self.orders.len()
    }
    pub fn trade_count(&self) -> usize {
        self.trades.len()
    }
    pub fn balance_count(&self) -> usize {
        self.balances.len()
    }
    pub fn epoch_count(&self) -> usize {
        self.epochs.len()
    }

    pub fn order(&self, id: &OrderId) -> Option<&Order> {
        self.orders.get(id).map(|e| &e.order)
    }
    pub fn trade(&self, id: &TradeId) -> Option<&Trade> {
        self.trade_index.get(id).map(|&i| &self.trades[i].trade)
    }
    pub fn balance(&self, user: UserId, asset: &str) -> Option<&Balance> {
        // The key owns its String; one small allocation per lookup is
        // cheaper to read than a borrowed-key map.
        self.balances
            .get(&(user, asset.to_owned()))
            .map(|e| &e.balance)
    }
    pub fn epoch(&self, id: EpochId) -> Option<&Epoch> {
        self.epochs.get(&id).map(|e| &e.epoch)
    }

    /// The sum of the trade quantities applied to an order.
    pub fn filled(&self, id: &OrderId) -> Option<Decimal> {
        self.orders.get(id).map(|e| e.filled)
    }

    /// Orders sorted by id.
    pub fn orders_sorted(&self) -> Vec<&Order> {
        let mut v: Vec<&Order> = self.orders.values().map(|e| &e.order).collect();
        v.sort_unstable_by_key(|o| o.id);
        v
    }
    /// Trades in the order they were applied.
    pub fn trades(&self) -> impl ExactSizeIterator<Item = &Trade> {
        self.trades.iter().map(|e| &e.trade)
    }
    /// Balances sorted by (user, asset).
    pub fn balances_sorted(&self) -> Vec<&Balance> {
        let mut v: Vec<&Balance> = self.balances.values().map(|e| &e.balance).collect();
        v.sort_unstable_by(|a, b| (a.user_id, &a.asset).cmp(&(b.user_id, &b.asset)));
        v
    }
    /// Epochs sorted by id.
    pub fn epochs_sorted(&self) -> Vec<&Epoch> {
        let mut v: Vec<&Epoch> = self.epochs.values().map(|e| &e.epoch).collect();
        v.sort_unstable_by_key(|e| e.epoch_id);
        v
    }

    // --- applying -------------------------------------------------------------

    /// Applies one operation whose position (the AOF position just past its
    /// frame) is `position`, or refuses it: an operation that would break an
    /// invariant changes nothing and comes back as the [`Violation`] it
    /// would cause. This is the one rule the journal uses before an append
    /// and recovery uses on replay, so a log the journal wrote always
    /// replays (`docs/state.md`, "Refusals").
    pub fn try_apply(&mut self, op: &AofOperation, position: u64) -> Result<(), Violation> {
        self.judge(op, position)?;
        self.mutate(op.clone(), position);
        Ok(())
    }

    /// As [`State::try_apply`], taking the operation by value.
    pub fn try_apply_owned(&mut self, op: AofOperation, position: u64) -> Result<(), Violation> {
        self.judge(&op, position)?;
        self.mutate(op, position);
        Ok(())
    }

    /// Applies one operation, or, when [`State::try_apply`] refuses it,
    /// records the violation and skips it (the position still moves past
    /// it). For tools that read a log someone else wrote and want every
    /// problem in it (`aof verify`); recovery refuses instead.
    pub fn apply(&mut self, op: &AofOperation, position: u64) {
        self.apply_owned(op.clone(), position);
    }

    /// As [`State::apply`], taking the operation by value (no clone of the
    /// order or trade it carries).
    pub fn apply_owned(&mut self, op: AofOperation, position: u64) {
        if let Err(v) = self.try_apply_owned(op, position) {
            self.position = position;
            self.record(v.kind, v.entity, v.position, v.detail);
        }
    }

    /// Decodes `data`, a whole number of frames whose first byte is at AOF
    /// position `base`, and applies them as [`State::apply`] does, each at
    /// the position just past its frame. All or nothing for frames: a bad
    /// frame fails the call before any operation is applied. Returns how
    /// many were applied.
    pub fn apply_frames(
        &mut self,
        data: &[u8],
        base: u64,
        max_payload: u32,
    ) -> Result<usize, FrameError> {
        // All or nothing needs every operation decoded before the first is
        // applied. The transient cost is the vector of decoded operations
        // (about 300 bytes each); their strings move into the state rather
        // than being copied. Callers with large files apply them in chunks.
        let mut ops = Vec::with_capacity((data.len() / 256).min(1 << 16));
        let mut offset = 0usize;
        while offset < data.len() {
            // Saturating: a position past 2^64 is nonsense, not a reason to panic.
            let start = base.saturating_add(offset as u64);
            let (op, used) = decode_frame(&data[offset..], start, max_payload)?;
            offset += used;
            ops.push((op, base.saturating_add(offset as u64)));
        }
        let n = ops.len();
        for (op, at) in ops {
            self.apply_owned(op, at);
        }
        Ok(n)
    }

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
            orders: self.orders.len(),
            trades: self.trades.len(),
            balances: self.balances.len(),
            recorded: self.recorded.len(),
            recorded_dropped: self.recorded_dropped,
            dirty_orders: self.dirty_orders.len(),
            dirty_balances: self.dirty_balances.len(),
            dirty_epochs: self.dirty_epochs.len(),
            saved_orders: Vec::new(),
            saved_balances: Vec::new(),
            saved_epochs: Vec::new(),
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
        for (i, entry) in u.saved_orders.into_iter().rev() {
            self.orders.entries[i] = entry;
        }
        self.orders.truncate(u.orders, |e| e.order.id);
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
        for gone in self.trades.drain(u.trades..) {
            self.trade_index.remove(&gone.trade.id);
        }
        self.dirty_orders.truncate(u.dirty_orders);
        self.dirty_balances.truncate(u.dirty_balances);
        self.dirty_epochs.truncate(u.dirty_epochs);
        self.recorded.truncate(u.recorded);
        self.recorded_dropped = u.recorded_dropped;
        self.position = u.position;
        self.clock = u.clock;
        self.max_finalized = u.max_finalized;
    }

    /// Under a savepoint, keeps the order at index `i` as it is now.
    fn save_order(&mut self, i: usize) {
        if let Some(u) = self.undo.as_deref_mut() {
            if i < u.orders {
                u.saved_orders.push((i, self.orders.entries[i].clone()));
            }
        }
    }

    fn save_balance(&mut self, i: usize) {
        if let Some(u) = self.undo.as_deref_mut() {
            if i < u.balances {
                u.saved_balances.push((i, self.balances.entries[i].clone()));
            }
        }
    }

    fn save_epoch(&mut self, id: EpochId) {
        if let Some(u) = self.undo.as_deref_mut() {
            u.saved_epochs.push((id, self.epochs.get(&id).cloned()));
        }
    }

    /// Whether `op` may be applied now; the violation it would cause if
    /// not. Reads only: every rule of `docs/state.md` lives here.
    fn judge(&self, op: &AofOperation, position: u64) -> Result<(), Violation> {
        let refuse = |kind, entity, detail: String| {
            Err(Violation {
                kind,
                entity,
                position,
                detail,
            })
        };
        match op {
            AofOperation::OrderReceived(o) => {
                let entity = EntityRef::Order(o.id);
                if self.orders.contains_key(&o.id) {
                    return refuse(
                        ViolationKind::DuplicateOrder,
                        entity,
                        "order id received again".into(),
                    );
                }
                if o.remaining_qty.is_sign_negative() && !o.remaining_qty.is_zero()
                    || o.remaining_qty > o.quantity
                {
                    return refuse(
                        ViolationKind::RemainingOutOfRange,
                        entity,
                        format!(
                            "remaining {} is outside 0..={}",
                            o.remaining_qty, o.quantity
                        ),
                    );
                }
                if o.remaining_qty != o.quantity {
                    return refuse(
                        ViolationKind::FillMismatch,
                        entity,
                        format!(
                            "a new order has no fills, but its remaining {} is not its quantity {}",
                            o.remaining_qty, o.quantity
                        ),
                    );
                }
                Ok(())
            }
            AofOperation::OrderCancelled(id) => match self.orders.get(id) {
                None => refuse(
                    ViolationKind::UnknownOrder,
                    EntityRef::Order(*id),
                    "cancel of an order never received".into(),
                ),
                Some(e) if is_terminal(e.order.status) => refuse(
                    ViolationKind::TerminalOrder,
                    EntityRef::Order(*id),
                    format!("cancel of an order that is {:?}", e.order.status),
                ),
                Some(_) => Ok(()),
            },
            AofOperation::TradeExecuted(t) => self.judge_trade(t, position),
            AofOperation::BalanceUpdated(user, asset, available, frozen) => {
                for (name, value) in [("available", available), ("frozen", frozen)] {
                    if value.is_sign_negative() && !value.is_zero() {
                        return refuse(
                            ViolationKind::NegativeBalance,
                            EntityRef::Balance(*user, asset.clone()),
                            format!("{name} would be {value}"),
                        );
                    }
                }
                Ok(())
            }
            AofOperation::EpochAdvanced(id, phase) => {
                let current = self.epochs.get(id).map(|e| e.epoch.phase);
                if current == Some(*phase) {
                    return Ok(()); // a repeat: nothing changes
                }
                let detail = match (current, self.max_finalized) {
                    (Some(cur), _) if *phase < cur => {
                        format!("phase {phase:?} after {cur:?}: phases only move forward")
                    }
                    (_, Some(fin)) if fin > *id => format!(
                        "phase {phase:?} after the later epoch {} was finalized: epochs finalize in id order",
                        fin.0
                    ),
                    _ => return Ok(()),
                };
                refuse(
                    ViolationKind::EpochRegression,
                    EntityRef::Epoch(*id),
                    detail,
                )
            }
            AofOperation::BufferSealed(..) => Ok(()),
        }
    }

    fn judge_trade(&self, t: &Trade, position: u64) -> Result<(), Violation> {
        let violation = |kind, entity, detail| Violation {
            kind,
            entity,
            position,
            detail,
        };
        if self.trade_index.contains_key(&t.id) {
            return Err(violation(
                ViolationKind::DuplicateTrade,
                EntityRef::Trade(t.id),
                "trade id executed again".into(),
            ));
        }
        // A self-trade fills one order twice: judge the sum.
        let sides: &[(&str, OrderId, Decimal)] = if t.taker_order_id == t.maker_order_id {
            let Some(twice) = t.quantity.checked_mul(Decimal::TWO) else {
                return Err(violation(
                    ViolationKind::Overflow,
                    EntityRef::Trade(t.id),
                    format!("twice the quantity {} overflows", t.quantity),
                ));
            };
            &[("taker and maker", t.taker_order_id, twice)]
        } else {
            &[
                ("taker", t.taker_order_id, t.quantity),
                ("maker", t.maker_order_id, t.quantity),
            ]
        };
        for &(role, id, quantity) in sides {
            let Some(entry) = self.orders.get(&id) else {
                return Err(violation(
                    ViolationKind::UnknownOrder,
                    EntityRef::Trade(t.id),
                    format!("{role} order {} is unknown", id.0),
                ));
            };
            let o = &entry.order;
            if is_terminal(o.status) {
                return Err(violation(
                    ViolationKind::TerminalOrder,
                    EntityRef::Order(id),
                    format!(
                        "trade {} names the {role} order, which is {:?}",
                        t.id.0, o.status
                    ),
                ));
            }
            let remaining = o.remaining_qty.checked_sub(quantity);
            let filled = entry.filled.checked_add(quantity);
            let (Some(remaining), Some(_)) = (remaining, filled) else {
                return Err(violation(
                    ViolationKind::Overflow,
                    EntityRef::Order(id),
                    format!(
                        "filling {} by {} of trade {} overflows",
                        o.remaining_qty, quantity, t.id.0
                    ),
                ));
            };
            if remaining.is_sign_negative() && !remaining.is_zero() || remaining > o.quantity {
                return Err(violation(
                    ViolationKind::RemainingOutOfRange,
                    EntityRef::Order(id),
                    format!(
                        "a trade of {quantity} would overfill order {} ({role}), remaining {}",
                        id.0, o.remaining_qty
                    ),
                ));
            }
        }
        let count = self
            .epochs
            .get(&t.epoch_id)
            .map_or(0, |e| e.epoch.trade_count);
        if count == u64::MAX {
            return Err(violation(
                ViolationKind::Overflow,
                EntityRef::Epoch(t.epoch_id),
                "trade count past 2^64".into(),
            ));
        }
        Ok(())
    }

    /// Folds a judged operation into the state. The refusals are all in
    /// [`State::judge`]; the branches here that still record a violation
    /// are unreachable after it, kept so that no input can make this panic.
    fn mutate(&mut self, op: AofOperation, position: u64) {
        self.position = position;
        match op {
            AofOperation::OrderReceived(order) => self.order_received(order, position),
            AofOperation::OrderCancelled(id) => self.order_cancelled(id, position),
            AofOperation::BufferSealed(batch, hash) => {
                let entry = self.epoch_entry(batch, position);
                entry.epoch.batch_hash = Some(hash);
            }
            AofOperation::TradeExecuted(trade) => self.trade_executed(trade, position),
            AofOperation::BalanceUpdated(user_id, asset, available, frozen) => {
                self.balance_updated(user_id, asset, available, frozen, position)
            }
            AofOperation::EpochAdvanced(epoch, phase) => {
                self.epoch_advanced(epoch, phase, position)
            }
        }
    }

    fn record(&mut self, kind: ViolationKind, entity: EntityRef, position: u64, detail: String) {
        if self.recorded.len() < MAX_RECORDED_VIOLATIONS {
            self.recorded.push(Violation {
                kind,
                entity,
                position,
                detail,
            });
        } else {
            self.recorded_dropped += 1;
        }
    }

    fn advance_clock(&mut self, t: DateTime<Utc>) {
        if t > self.clock {
            self.clock = t;
        }
    }

    fn balance_updated(
        &mut self,
        user_id: UserId,
        asset: Asset,
        available: Decimal,
        frozen: Decimal,
        position: u64,
    ) {
        // Look up with the owned key we already have; clone it only for a
        // new entry or a first change since the last flush.
        let key = (user_id, asset);
        let index = self.balances.index_of(&key);
        if let Some(i) = index {
            self.save_balance(i);
        }
        match index.map(|i| &mut self.balances.entries[i]) {
            Some(entry) => {
                entry.balance.available = available;
                entry.balance.frozen = frozen;
                entry.changed_at = position;
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty_balances.push(key);
                }
            }
            None => {
                let balance = Balance {
                    user_id,
                    asset: key.1.clone(),
                    available,
                    frozen,
                };
                self.dirty_balances.push(key.clone());
                let entry = BalanceEntry {
                    balance,
                    changed_at: position,
                    dirty: true,
                };
                self.balances.insert(key, entry);
            }
        }
    }

    fn order_received(&mut self, order: Order, position: u64) {
        self.advance_clock(order.created_at);
        self.advance_clock(order.updated_at);
        self.dirty_orders.push(order.id);
        self.orders.insert(
            order.id,
            OrderEntry {
                order,
                filled: Decimal::ZERO,
                changed_at: position,
                dirty: true,
            },
        );
    }

    fn order_cancelled(&mut self, id: OrderId, position: u64) {
        let index = self.orders.index_of(&id);
        if let Some(i) = index {
            self.save_order(i);
        }
        match index.map(|i| &mut self.orders.entries[i]) {
            Some(entry) => {
                entry.order.status = OrderStatus::Cancelled;
                entry.changed_at = position;
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty_orders.push(id);
                }
            }
            None => self.record(
                ViolationKind::UnknownOrder,
                EntityRef::Order(id),
                position,
                "cancel of an order never received".into(),
            ),
        }
    }

    fn trade_executed(&mut self, trade: Trade, position: u64) {
        self.advance_clock(trade.executed_at);
        self.fill(&trade, trade.taker_order_id, "taker", position);
        self.fill(&trade, trade.maker_order_id, "maker", position);
        let entry = self.epoch_entry(trade.epoch_id, position);
        let count = entry.epoch.trade_count.checked_add(1);
        match count {
            Some(c) => entry.epoch.trade_count = c,
            None => self.record(
                ViolationKind::Overflow,
                EntityRef::Epoch(trade.epoch_id),
                position,
                "trade count past 2^64".into(),
            ),
        }
        self.trade_index.insert(trade.id, self.trades.len());
        self.trades.push(TradeEntry { trade, position });
    }

    fn fill(&mut self, trade: &Trade, order_id: OrderId, role: &str, position: u64) {
        let index = self.orders.index_of(&order_id);
        if let Some(i) = index {
            self.save_order(i);
        }
        let Some(entry) = index.map(|i| &mut self.orders.entries[i]) else {
            self.record(
                ViolationKind::UnknownOrder,
                EntityRef::Trade(trade.id),
                position,
                format!("{role} order {} is unknown", order_id.0),
            );
            return;
        };
        let remaining = entry.order.remaining_qty.checked_sub(trade.quantity);
        let filled = entry.filled.checked_add(trade.quantity);
        let (Some(remaining), Some(filled)) = (remaining, filled) else {
            let detail = format!(
                "filling {} by {} of trade {} overflows",
                entry.order.remaining_qty, trade.quantity, trade.id.0
            );
            self.record(
                ViolationKind::Overflow,
                EntityRef::Order(order_id),
                position,
                detail,
            );
            return;
        };
        let order = &mut entry.order;
        order.remaining_qty = remaining;
        order.status = if remaining.is_zero() {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        if trade.executed_at > order.updated_at {
            order.updated_at = trade.executed_at;
        }
        entry.filled = filled;
        entry.changed_at = position;
        if !entry.dirty {
            entry.dirty = true;
            self.dirty_orders.push(order_id);
        }
    }

    /// The epoch's entry, created (phase `Collect`, started now by the
    /// logical clock) if unknown; marked changed at `position`.
    fn epoch_entry(&mut self, id: EpochId, position: u64) -> &mut EpochEntry {
        self.save_epoch(id);
        let clock = self.clock;
        let entry = self.epochs.entry(id).or_insert_with(|| EpochEntry {
            epoch: Epoch::new(id, clock),
            changed_at: position,
            dirty: false,
        });
        entry.changed_at = position;
        if !entry.dirty {
            entry.dirty = true;
            self.dirty_epochs.push(id);
        }
        entry
    }

    fn epoch_advanced(&mut self, id: EpochId, phase: EpochPhase, position: u64) {
        let current = self.epochs.get(&id).map(|e| e.epoch.phase);
        if current == Some(phase) {
            return; // a repeat: nothing changes
        }
        let clock = self.clock;
        let entry = self.epoch_entry(id, position);
        entry.epoch.phase = phase;
        if phase == EpochPhase::Finalize {
            if entry.epoch.completed_at.is_none() {
                entry.epoch.completed_at = Some(clock);
            }
            if self.max_finalized.is_none_or_lt(id) {
                self.max_finalized = Some(id);
            }
        }
    }

    // --- checking ---------------------------------------------------------------

    /// Every broken invariant, sorted by position then kind then entity.
    /// Empty when the state is consistent.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = self.recorded.clone();
        for entry in self.orders.values() {
            check_order(entry, &mut out);
        }
        for entry in &self.trades {
            let t = &entry.trade;
            for (role, id) in [("taker", t.taker_order_id), ("maker", t.maker_order_id)] {
                if !self.orders.contains_key(&id) {
                    out.push(Violation {
                        kind: ViolationKind::UnknownOrder,
                        entity: EntityRef::Trade(t.id),
                        position: entry.position,
                        detail: format!("{role} order {} is unknown", id.0),
                    });
                }
            }
        }
        for entry in self.balances.values() {
            let b = &entry.balance;
            for (name, value) in [("available", b.available), ("frozen", b.frozen)] {
                if value.is_sign_negative() && !value.is_zero() {
                    out.push(Violation {
                        kind: ViolationKind::NegativeBalance,
                        entity: EntityRef::Balance(b.user_id, b.asset.clone()),
                        position: entry.changed_at,
                        detail: format!("{name} is {value}"),
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (a.position, a.kind, &a.entity, &a.detail)
                .cmp(&(b.position, b.kind, &b.entity, &b.detail))
        });
        out.dedup();
        out
    }

    /// `Ok` when every invariant holds, else all the violations
    /// (see [`State::violations`]).
    pub fn check(&self) -> Result<(), Vec<Violation>> {
        let v = self.violations();
        if v.is_empty() {
            Ok(())
        } else {
            Err(v)
        }
    }

    /// Apply-time violations past [`MAX_RECORDED_VIOLATIONS`] that were
    /// counted but not kept.
    pub fn violations_dropped(&self) -> u64 {
        self.recorded_dropped
    }

    // --- change tracking ----------------------------------------------------------

    /// The entities changed since the previous call (or since the state was
    /// created or imported), and the position they cover. Resets the tracking.
    pub fn take_changes(&mut self) -> Changes {
        let mut order_ids = std::mem::take(&mut self.dirty_orders);
        order_ids.sort_unstable();
        let mut balance_keys = std::mem::take(&mut self.dirty_balances);
        balance_keys.sort_unstable();
        let mut epoch_ids = std::mem::take(&mut self.dirty_epochs);
        epoch_ids.sort_unstable();
        let mut orders = Vec::with_capacity(order_ids.len());
        for id in &order_ids {
            if let Some(e) = self.orders.get_mut(id) {
                e.dirty = false;
                orders.push(e.order.clone());
            }
        }
        let mut balances = Vec::with_capacity(balance_keys.len());
        for key in &balance_keys {
            if let Some(e) = self.balances.get_mut(key) {
                e.dirty = false;
                balances.push(e.balance.clone());
            }
        }
        let mut epochs = Vec::with_capacity(epoch_ids.len());
        for id in &epoch_ids {
            if let Some(e) = self.epochs.get_mut(id) {
                e.dirty = false;
                epochs.push(e.epoch.clone());
            }
        }
        let trades = self.trades[self.trades_taken..]
            .iter()
            .map(|e| e.trade.clone())
            .collect();
        self.trades_taken = self.trades.len();
        Changes {
            orders,
            trades,
            balances,
            epochs,
            position: self.position,
        }
    }

    /// True when something changed since the last [`State::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.dirty_orders.is_empty()
            || !self.dirty_balances.is_empty()
            || !self.dirty_epochs.is_empty()
            || self.trades_taken < self.trades.len()
    }

    // --- snapshots -------------------------------------------------------------------

    /// The whole state as plain values.
    pub fn export(&self) -> Snapshot {
        Snapshot {
            orders: self.orders_sorted().into_iter().cloned().collect(),
            trades: self.trades().cloned().collect(),
            balances: self.balances_sorted().into_iter().cloned().collect(),
            epochs: self.epochs_sorted().into_iter().cloned().collect(),
            position: self.position,
        }
    }

    /// A state from its exported values. The bookkeeping is recomputed: each
    /// order's fills from the trades, the logical clock and the highest
    /// finalized epoch from the entities; every entity counts as last changed
    /// at the snapshot's position. The state starts with
    /// no pending changes and no recorded violations.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<State, SnapshotError> {
        let Snapshot {
            orders,
            trades,
            balances,
            epochs,
            position,
        } = snapshot;
        let at = position;
        let mut s = State::new();
        s.position = position;
        s.orders.reserve(orders.len());
        for order in orders {
            s.advance_clock(order.created_at);
            s.advance_clock(order.updated_at);
            let id = order.id;
            let entry = OrderEntry {
                order,
                filled: Decimal::ZERO,
                changed_at: at,
                dirty: false,
            };
            if s.orders.insert(id, entry).is_some() {
                return Err(SnapshotError::DuplicateOrder(id));
            }
        }
        s.trades.reserve(trades.len());
        for trade in trades {
            s.advance_clock(trade.executed_at);
            if s.trade_index.insert(trade.id, s.trades.len()).is_some() {
                return Err(SnapshotError::DuplicateTrade(trade.id));
            }
            for id in [trade.taker_order_id, trade.maker_order_id] {
                if let Some(entry) = s.orders.get_mut(&id) {
                    match entry.filled.checked_add(trade.quantity) {
                        Some(f) => entry.filled = f,
                        None => s.recorded.push(Violation {
                            kind: ViolationKind::Overflow,
                            entity: EntityRef::Order(id),
                            position: at,
                            detail: "the fills of the snapshot's trades overflow".into(),
                        }),
                    }
                }
            }
            s.trades.push(TradeEntry {
                trade,
                position: at,
            });
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
            s.advance_clock(epoch.started_at);
            if let Some(t) = epoch.completed_at {
                s.advance_clock(t);
            }
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
        s.trades_taken = s.trades.len();
        Ok(s)
    }

    // --- digest -------------------------------------------------------------------------

    /// SHA-256 over a canonical serialization of the content: the position,
    /// then orders, trades, balances and epochs each sorted by key, each
    /// entity as its bincode bytes. Equal content gives an equal digest
    /// whatever the order of insertion; the bookkeeping (fills, per-entity
    /// positions, recorded violations, pending changes) is not content.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"openmatch-state/v1\0");
        feed(&mut h, &self.position);
        feed(&mut h, &(self.orders.len() as u64));
        for o in self.orders_sorted() {
            feed(&mut h, o);
        }
        let mut trades: Vec<&Trade> = self.trades().collect();
        trades.sort_unstable_by_key(|t| t.id);
        feed(&mut h, &(trades.len() as u64));
        for t in trades {
            feed(&mut h, t);
        }
        feed(&mut h, &(self.balances.len() as u64));
        for b in self.balances_sorted() {
            feed(&mut h, b);
        }
        feed(&mut h, &(self.epochs.len() as u64));
        for e in self.epochs_sorted() {
            feed(&mut h, e);
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

/// Filled, cancelled, rejected and expired orders take no more trades or
/// cancels.
fn is_terminal(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::Filled | OrderStatus::Cancelled | OrderStatus::Rejected | OrderStatus::Expired
    )
}

/// `Option<EpochId>` is below `id` (or absent).
trait NoneOrLt {
    fn is_none_or_lt(&self, id: EpochId) -> bool;
}

impl NoneOrLt for Option<EpochId> {
    fn is_none_or_lt(&self, id: EpochId) -> bool {
        self.map_or(true, |m| m < id)
    }
}

fn check_order(entry: &OrderEntry, out: &mut Vec<Violation>) {
    let o = &entry.order;
    let entity = || EntityRef::Order(o.id);
    if o.remaining_qty.is_sign_negative() && !o.remaining_qty.is_zero()
        || o.remaining_qty > o.quantity
    {
        out.push(Violation {
            kind: ViolationKind::RemainingOutOfRange,
            entity: entity(),
            position: entry.changed_at,
            detail: format!(
                "remaining {} is outside 0..={}",
                o.remaining_qty, o.quantity
            ),
        });
    }
    match o.quantity.checked_sub(o.remaining_qty) {
        Some(expected) if expected == entry.filled => {}
        Some(expected) => out.push(Violation {
            kind: ViolationKind::FillMismatch,
            entity: entity(),
            position: entry.changed_at,
            detail: format!(
                "fills add up to {} but quantity - remaining is {expected}",
                entry.filled
            ),
        }),
        None => out.push(Violation {
            kind: ViolationKind::Overflow,
            entity: entity(),
            position: entry.changed_at,
            detail: "quantity - remaining overflows".into(),
        }),
    }
}
