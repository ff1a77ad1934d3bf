//! The engine's state in memory: the AOF's operations applied in order.
//!
//! `docs/state.md` is the description of the semantics; this module is the
//! implementation. In short: [`State::try_apply`] judges one operation
//! against the rules (`judge`) and folds it into the state,
//! deterministically; [`State::check`] reports every broken invariant with
//! the entity and the AOF position of the operation that broke it;
//! [`State::take_changes`] hands the entities changed since the last call
//! to an asynchronous database flush; [`State::export`] /
//! [`State::from_snapshot`] round-trip the state exactly; [`State::digest`]
//! compares two states.
//!
//! The state is the *hot* state: what the engine needs to go on (open
//! orders, balances, epochs not finalized and the last
//! [`FINALIZED_EPOCHS_KEPT`] finalized ones, and the ids of the id window).
//! Terminal orders, applied trades and old epochs leave it as the
//! operation that ends them applies, with their final row in the pending
//! changes: its size follows the engine's open business, not its history.

mod check;
mod ids;
mod judge;
mod snapshot;
mod table;
mod undo;

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use ids::{uuid_v7_millis, window_start_ms, RetiredKind, ID_WINDOW_MS};
pub use snapshot::{Snapshot, SNAPSHOT_VERSION};
pub use undo::KEPT_UNDO_ENTRIES;

use crate::codec::{decode_frame, FrameError};
use crate::types::*;
use ids::RetiredIds;
use table::{Map, Table};
use undo::UndoLog;

/// How many apply-time violations a state remembers; past this it counts
/// them, so that a hostile or broken log cannot grow memory without bound.
pub const MAX_RECORDED_VIOLATIONS: usize = 1024;

/// How many finalized epochs the hot state keeps (the highest ones); an
/// older finalized epoch leaves it, and is closed from then on.
pub const FINALIZED_EPOCHS_KEPT: usize = 16;

/// One user's holding of one asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balance {
    /// Whose.
    pub user_id: UserId,
    /// Of what.
    pub asset: Asset,
    /// Free to spend.
    pub available: Decimal,
    /// Held by open orders.
    pub frozen: Decimal,
}

/// One epoch (= one batch) of the auction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    /// Its id.
    pub epoch_id: EpochId,
    /// The phase it is in.
    pub phase: EpochPhase,
    /// Set by `BufferSealed` (the batch id is the epoch id).
    pub batch_hash: Option<[u8; 32]>,
    /// No operation sets it; it is carried through snapshots unchanged.
    pub result_hash: Option<[u8; 32]>,
    /// Trades executed in it.
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
    /// An order.
    Order(OrderId),
    /// A trade.
    Trade(TradeId),
    /// A user's balance of an asset.
    Balance(UserId, Asset),
    /// An epoch.
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
    /// A new order or trade id older than the id window: the state can
    /// no longer prove it was never used (`docs/state.md`, "The id window").
    StaleId,
    /// An operation names an epoch that was finalized and left the hot
    /// state.
    ClosedEpoch,
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
            ViolationKind::StaleId => "stale_id",
            ViolationKind::ClosedEpoch => "closed_epoch",
        }
    }
}

/// A broken invariant: what, which entity, and the AOF position of the
/// operation that broke it (for an entity imported from a snapshot and not
/// changed since, the snapshot's position).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{} at position {position}: {entity}: {detail}", kind.name())]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// What it is about.
    pub entity: EntityRef,
    /// The position of the operation that breaks it.
    pub position: u64,
    /// A sentence saying how.
    pub detail: String,
}

/// The entities changed since the previous [`State::take_changes`], each once,
/// as their current values: orders, balances and epochs sorted by key
/// (orders and epochs that left the hot state with their final row),
/// trades in the order they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Orders changed.
    pub orders: Vec<Order>,
    /// Trades applied.
    pub trades: Vec<Trade>,
    /// Balances changed.
    pub balances: Vec<Balance>,
    /// Epochs changed.
    pub epochs: Vec<Epoch>,
    /// The position of the last applied operation (the AOF position just
    /// past its frame): the changes cover the AOF up to it. 0 when nothing
    /// was ever applied.
    pub position: u64,
    /// The logical clock at `position` (the database keeps it with its
    /// checkpoint, to rebuild the hot state from rows).
    pub clock: DateTime<Utc>,
    /// The highest epoch that left the hot state at `position`, if any.
    pub closed_through: Option<EpochId>,
}

impl Changes {
    /// Whether no entity changed.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.trades.is_empty()
            && self.balances.is_empty()
            && self.epochs.is_empty()
    }

    /// How many entities changed.
    pub fn len(&self) -> usize {
        self.orders.len() + self.trades.len() + self.balances.len() + self.epochs.len()
    }

    /// Folds in `newer`, changes taken after these: where both hold a row
    /// of one key, `newer`'s wins; the keyed lists stay sorted, and the
    /// trades keep the order they were applied in (these first). The
    /// position, clock and closed epochs become the later side's.
    ///
    /// Two takes never hold the same trade (each is applied once and taken
    /// once), so trades are concatenated; a flusher that puts a failed batch
    /// back under newer changes passes the older as `self`.
    pub fn absorb(&mut self, newer: Changes) {
        merge_sorted(&mut self.orders, newer.orders, |a, b| a.id.cmp(&b.id));
        merge_sorted(&mut self.balances, newer.balances, |a, b| {
            (a.user_id, &a.asset).cmp(&(b.user_id, &b.asset))
        });
        merge_sorted(&mut self.epochs, newer.epochs, |a, b| {
            a.epoch_id.cmp(&b.epoch_id)
        });
        self.trades.extend(newer.trades);
        if newer.position >= self.position {
            self.position = newer.position;
            self.clock = newer.clock;
            self.closed_through = newer.closed_through;
        }
    }
}

/// Merges two lists sorted by `order`, each key at most once per list, into
/// `mine`; on a key in both, `newer`'s item is kept.
fn merge_sorted<T>(mine: &mut Vec<T>, newer: Vec<T>, order: impl Fn(&T, &T) -> Ordering) {
    if newer.is_empty() {
        return;
    }
    if mine.is_empty() {
        *mine = newer;
        return;
    }
    let older = std::mem::take(mine);
    mine.reserve(older.len() + newer.len());
    let mut a = older.into_iter().peekable();
    let mut b = newer.into_iter().peekable();
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match order(x, y) {
                Ordering::Less => a.next(),
                Ordering::Greater => b.next(),
                Ordering::Equal => {
                    a.next();
                    b.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(item) => mine.push(item),
            None => break,
        }
    }
}

/// A snapshot that cannot be a state: the same key twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot holds order {} twice", .0 .0)]
    /// An order twice.
    DuplicateOrder(OrderId),
    #[error("snapshot holds trade {} twice", .0 .0)]
    /// A trade twice.
    DuplicateTrade(TradeId),
    #[error("snapshot holds the balance of {}/{} twice", .0 .0, .1)]
    /// A balance twice.
    DuplicateBalance(UserId, Asset),
    #[error("snapshot holds epoch {} twice", .0 .0)]
    /// An epoch twice.
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

/// Rows that left the hot state and wait for the next `take_changes`.
#[derive(Debug, Clone, Default)]
struct Departed {
    orders: Vec<Order>,
    trades: Vec<Trade>,
    epochs: Vec<Epoch>,
}

/// The logical clock's value before any timestamp has been seen.
pub fn clock_origin() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// The engine's hot state. See the module documentation.
#[derive(Debug, Clone)]
pub struct State {
    /// Open orders.
    orders: Table<OrderId, OrderEntry>,
    balances: Table<(UserId, Asset), BalanceEntry>,
    epochs: Map<EpochId, EpochEntry>,
    /// Ids of terminal orders and applied trades, within the id window.
    retired: RetiredIds,
    /// The highest epoch id that left the hot state.
    closed_through: Option<EpochId>,
    position: u64,
    /// The latest order or trade timestamp that entered the state.
    clock: DateTime<Utc>,
    /// The highest epoch id that reached `Finalize`.
    max_finalized: Option<EpochId>,
    /// Violations only visible while applying (they leave no trace in the
    /// entities), the first [`MAX_RECORDED_VIOLATIONS`] of them.
    recorded: Vec<Violation>,
    recorded_dropped: u64,
    /// The keys of the hot entities whose `dirty` flag is set, each once.
    dirty_orders: Vec<OrderId>,
    dirty_balances: Vec<(UserId, Asset)>,
    dirty_epochs: Vec<EpochId>,
    /// Final rows of what left since the last `take_changes`; bounded by
    /// how often changes are taken, not by the history.
    departed: Departed,
    /// False for a state nobody takes changes from (a replay that only
    /// checks a log): it keeps no departed rows.
    track_changes: bool,
    /// Set between [`State::savepoint`] and its release or rollback.
    undo: Option<Box<UndoLog>>,
    /// The last savepoint's log, emptied, for the next one.
    spare_undo: Option<Box<UndoLog>>,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// An empty state at position 0.
    pub fn new() -> Self {
        State {
            orders: Table::default(),
            balances: Table::default(),
            epochs: Map::default(),
            retired: RetiredIds::default(),
            closed_through: None,
            position: 0,
            clock: clock_origin(),
            max_finalized: None,
            recorded: Vec::new(),
            recorded_dropped: 0,
            dirty_orders: Vec::new(),
            dirty_balances: Vec::new(),
            dirty_epochs: Vec::new(),
            departed: Departed::default(),
            track_changes: true,
            undo: None,
            spare_undo: None,
        }
    }

    /// This state without change tracking: what leaves the hot state is
    /// dropped rather than kept for [`State::take_changes`], so that
    /// replaying a long log to check it takes no memory per operation.
    pub fn without_change_tracking(mut self) -> Self {
        self.track_changes = false;
        self.departed = Departed::default();
        self
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

    /// The highest epoch id that left the hot state (finalized, and older
    /// than the [`FINALIZED_EPOCHS_KEPT`] kept): operations naming it, or
    /// an older epoch not held, are refused (`closed_epoch`).
    pub fn closed_through(&self) -> Option<EpochId> {
        self.closed_through
    }

    /// Open orders held.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }
    /// Balances held.
    pub fn balance_count(&self) -> usize {
        self.balances.len()
    }
    /// Epochs held (not finalized, and the last finalized ones).
    pub fn epoch_count(&self) -> usize {
        self.epochs.len()
    }
    /// Ids of terminal orders and applied trades remembered for the
    /// duplicate checks (the id window).
    pub fn retired_id_count(&self) -> usize {
        self.retired.len()
    }
    /// Whether `id` is a retired order id or trade id, and which.
    pub fn retired(&self, id: uuid::Uuid) -> Option<RetiredKind> {
        self.retired.get(id)
    }

    /// An open order.
    pub fn order(&self, id: &OrderId) -> Option<&Order> {
        self.orders.get(id).map(|e| &e.order)
    }
    /// A user's balance of an asset.
    pub fn balance(&self, user: UserId, asset: &str) -> Option<&Balance> {
        // The key owns its String; one small allocation per lookup is
        // cheaper to read than a borrowed-key map.
        self.balances
            .get(&(user, asset.to_owned()))
            .map(|e| &e.balance)
    }
    /// An epoch held.
    pub fn epoch(&self, id: EpochId) -> Option<&Epoch> {
        self.epochs.get(&id).map(|e| &e.epoch)
    }

    /// The sum of the trade quantities applied to an open order.
    pub fn filled(&self, id: &OrderId) -> Option<Decimal> {
        self.orders.get(id).map(|e| e.filled)
    }

    /// Open orders sorted by id.
    pub fn orders_sorted(&self) -> Vec<&Order> {
        let mut v: Vec<&Order> = self.orders.values().map(|e| &e.order).collect();
        v.sort_unstable_by_key(|o| o.id);
        v
    }
    /// Balances sorted by (user, asset).
    pub fn balances_sorted(&self) -> Vec<&Balance> {
        let mut v: Vec<&Balance> = self.balances.values().map(|e| &e.balance).collect();
        v.sort_unstable_by(|a, b| (a.user_id, &a.asset).cmp(&(b.user_id, &b.asset)));
        v
    }
    /// Held epochs sorted by id.
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

    /// Folds a judged operation into the state. The refusals are all in
    /// `judge`; the branches here that still record a violation are
    /// unreachable after it, kept so that no input can make this panic.
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

    /// Moves the logical clock forward to `t`, and with it the id window:
    /// the ids that fall out of it are forgotten.
    fn advance_clock(&mut self, t: DateTime<Utc>) {
        if t <= self.clock {
            return;
        }
        self.clock = t;
        let start = window_start_ms(t);
        let undo = self.undo.as_deref_mut();
        match undo {
            Some(u) => self
                .retired
                .forget_before(start, |id, kind| u.forgotten_ids.push((id, kind))),
            None => self.retired.forget_before(start, |_, _| {}),
        }
    }

    /// Remembers a retired id (a terminal order's or an applied trade's).
    fn retire_id(&mut self, id: uuid::Uuid, kind: RetiredKind) {
        let added = self.retired.insert(id, kind, window_start_ms(self.clock));
        if added {
            if let Some(u) = self.undo.as_deref_mut() {
                u.added_ids.push(id);
            }
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
        let id = order.id;
        self.save_order(id);
        self.dirty_orders.push(id);
        let terminal = is_terminal(order.status);
        self.orders.insert(
            id,
            OrderEntry {
                order,
                filled: Decimal::ZERO,
                changed_at: position,
                dirty: true,
            },
        );
        if terminal {
            self.retire_order(id);
        }
    }

    fn order_cancelled(&mut self, id: OrderId, position: u64) {
        self.save_order(id);
        match self.orders.get_mut(&id) {
            Some(entry) => {
                entry.order.status = OrderStatus::Cancelled;
                entry.changed_at = position;
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty_orders.push(id);
                }
                self.retire_order(id);
            }
            None => self.record(
                ViolationKind::UnknownOrder,
                EntityRef::Order(id),
                position,
                "cancel of an order not held".into(),
            ),
        }
    }

    /// A terminal order leaves the hot state: its final row goes to the
    /// pending changes and its id to the id window.
    fn retire_order(&mut self, id: OrderId) {
        // `save_order` was called by the operation that ended the order.
        let Some(entry) = self.orders.remove(&id, |e| e.order.id) else {
            return;
        };
        if self.track_changes {
            self.departed.orders.push(entry.order);
        }
        self.retire_id(id.0, RetiredKind::Order);
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
        // Both sides are filled first, so a self-trade's order leaves once.
        for id in [trade.taker_order_id, trade.maker_order_id] {
            if self
                .orders
                .get(&id)
                .is_some_and(|e| is_terminal(e.order.status))
            {
                self.retire_order(id);
            }
        }
        self.retire_id(trade.id.0, RetiredKind::Trade);
        if self.track_changes {
            self.departed.trades.push(trade);
        }
    }

    fn fill(&mut self, trade: &Trade, order_id: OrderId, role: &str, position: u64) {
        self.save_order(order_id);
        let Some(entry) = self.orders.get_mut(&order_id) else {
            self.record(
                ViolationKind::UnknownOrder,
                EntityRef::Trade(trade.id),
                position,
                format!("{role} order {} is not held", order_id.0),
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
            self.retire_old_epochs();
        }
    }

    /// Past [`FINALIZED_EPOCHS_KEPT`] finalized epochs, the lowest ones
    /// leave the hot state (with their final row) and are closed.
    fn retire_old_epochs(&mut self) {
        let mut finalized: Vec<EpochId> = self
            .epochs
            .values()
            .filter(|e| e.epoch.phase == EpochPhase::Finalize)
            .map(|e| e.epoch.epoch_id)
            .collect();
        if finalized.len() <= FINALIZED_EPOCHS_KEPT {
            return;
        }
        finalized.sort_unstable();
        let excess = finalized.len() - FINALIZED_EPOCHS_KEPT;
        for &id in &finalized[..excess] {
            self.save_epoch(id);
            if let Some(entry) = self.epochs.remove(&id) {
                if self.track_changes {
                    self.departed.epochs.push(entry.epoch);
                }
            }
            if self.closed_through.is_none_or_lt(id) {
                self.closed_through = Some(id);
            }
        }
    }

    // --- change tracking ----------------------------------------------------------

    /// The entities changed since the previous call (or since the state was
    /// created or imported), and the position they cover. Resets the tracking.
    pub fn take_changes(&mut self) -> Changes {
        let departed = std::mem::take(&mut self.departed);
        let mut order_ids = std::mem::take(&mut self.dirty_orders);
        order_ids.sort_unstable();
        let mut balance_keys = std::mem::take(&mut self.dirty_balances);
        balance_keys.sort_unstable();
        let mut epoch_ids = std::mem::take(&mut self.dirty_epochs);
        epoch_ids.sort_unstable();
        // A departed entity is not held any more: its id in the dirty list
        // finds nothing, and its final row comes from `departed`.
        let mut orders = departed.orders;
        orders.reserve(order_ids.len());
        for id in &order_ids {
            if let Some(e) = self.orders.get_mut(id) {
                e.dirty = false;
                orders.push(e.order.clone());
            }
        }
        orders.sort_unstable_by_key(|o| o.id);
        let mut balances = Vec::with_capacity(balance_keys.len());
        for key in &balance_keys {
            if let Some(e) = self.balances.get_mut(key) {
                e.dirty = false;
                balances.push(e.balance.clone());
            }
        }
        let mut epochs = departed.epochs;
        for id in &epoch_ids {
            if let Some(e) = self.epochs.get_mut(id) {
                e.dirty = false;
                epochs.push(e.epoch.clone());
            }
        }
        epochs.sort_unstable_by_key(|e| e.epoch_id);
        Changes {
            orders,
            trades: departed.trades,
            balances,
            epochs,
            position: self.position,
            clock: self.clock,
            closed_through: self.closed_through,
        }
    }

    /// True when something changed since the last [`State::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.dirty_orders.is_empty()
            || !self.dirty_balances.is_empty()
            || !self.dirty_epochs.is_empty()
            || !self.departed.orders.is_empty()
            || !self.departed.trades.is_empty()
            || !self.departed.epochs.is_empty()
    }
}

/// Filled, cancelled, rejected and expired orders take no more trades or
/// cancels.
pub fn is_terminal(status: OrderStatus) -> bool {
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
