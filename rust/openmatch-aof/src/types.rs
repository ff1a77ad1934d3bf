//! The OpenMatch engine's types, as its `openmatch-types` crate declares them.
//!
//! Field order is wire order (`shared/aof-format.md` §3): plain
//! `bincode::serialize` of these types gives the AOF payload bytes, and
//! `serde_json::to_string` gives the JSON form (§4). Do not reorder fields,
//! rename variants or add serde attributes: every one of those changes bytes
//! that the Rust engine also writes. The one kind allowed is
//! `deserialize_with` on a Decimal ([`crate::decimal_sign`]): it changes no
//! written byte, and keeps the sign of a negative zero when reading.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An order's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId(pub Uuid);

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub Uuid);

/// A trade's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TradeId(pub Uuid);

/// The id of the spend right that escrows an order's funds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpendRightId(pub Uuid);

/// An epoch's number: epochs run in increasing id order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EpochId(pub u64);

/// A batch is identified by the epoch that produced it.
pub type BatchId = EpochId;

/// A node of the network (its 32-byte public key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

/// An asset's symbol (`BTC`).
pub type Asset = String;

/// A market: its base asset priced in its quote asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MarketPair {
    /// The asset traded (`BTC` of `BTC/USDT`).
    pub base: String,
    /// The asset prices are in (`USDT` of `BTC/USDT`).
    pub quote: String,
}

impl MarketPair {
    /// The engine's display form, `BASE/QUOTE`.
    pub fn symbol(&self) -> String {
        format!("{}/{}", self.base, self.quote)
    }
}

/// Which side of the book an order is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderSide {
    /// Buys the base asset.
    Buy,
    /// Sells the base asset.
    Sell,
}

/// How an order is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderType {
    /// At its price or better.
    Limit,
    /// At any price.
    Market,
    /// A request to cancel another order.
    Cancel,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Received; its funds are not escrowed yet.
    PendingEscrow,
    /// In the book, nothing filled.
    Active,
    /// In the book, partly filled.
    PartiallyFilled,
    /// Wholly filled (terminal).
    Filled,
    /// Cancelled (terminal).
    Cancelled,
    /// Refused (terminal).
    Rejected,
    /// Expired (terminal).
    Expired,
}

/// The phases of an epoch, in the order it goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EpochPhase {
    /// Orders are collected.
    Collect,
    /// The batch is sealed (no more orders).
    Seal,
    /// The batch is matched.
    Match,
    /// The epoch's results are final.
    Finalize,
}

/// An order, as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: OrderId,
    /// Who placed it.
    pub user_id: UserId,
    /// The market it trades in.
    pub market: MarketPair,
    /// Buy or sell.
    pub side: OrderSide,
    /// Limit, market or cancel.
    pub order_type: OrderType,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// The limit price; `None` for a market order.
    #[serde(deserialize_with = "crate::decimal_sign::deserialize_option")]
    pub price: Option<Decimal>,
    /// The quantity ordered, in the base asset.
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub quantity: Decimal,
    /// What is left to fill (0..=quantity).
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub remaining_qty: Decimal,
    /// The spend right escrowing its funds.
    pub sr_id: SpendRightId,
    /// The epoch it was collected in, once assigned.
    pub epoch_id: Option<EpochId>,
    /// The node it entered the network at.
    pub origin_node: NodeId,
    /// Its sequence number at that node.
    pub sequence: u64,
    /// When it was created.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A match between a taker and a maker order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trade {
    /// The trade's id.
    pub id: TradeId,
    /// The epoch (batch) that matched it.
    pub epoch_id: EpochId,
    /// The market it traded in.
    pub market: MarketPair,
    /// The taker's order.
    pub taker_order_id: OrderId,
    /// The taker.
    pub taker_user_id: UserId,
    /// The maker's order.
    pub maker_order_id: OrderId,
    /// The maker.
    pub maker_user_id: UserId,
    /// The price it executed at.
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub price: Decimal,
    /// The quantity traded, in the base asset.
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub quantity: Decimal,
    /// price x quantity, in the quote asset.
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub quote_amount: Decimal,
    /// The taker's side.
    pub taker_side: OrderSide,
    /// The node that matched it.
    pub matcher_node: NodeId,
    /// When it executed.
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub executed_at: DateTime<Utc>,
}

/// One state change, the payload of one AOF frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AofOperation {
    /// An order entered the engine.
    OrderReceived(Order),
    /// An order was cancelled.
    OrderCancelled(OrderId),
    /// (batch id, batch hash)
    BufferSealed(BatchId, [u8; 32]),
    /// A trade was executed.
    TradeExecuted(Trade),
    /// (user, asset, available, frozen)
    BalanceUpdated(
        UserId,
        Asset,
        #[serde(deserialize_with = "crate::decimal_sign::deserialize")] Decimal,
        #[serde(deserialize_with = "crate::decimal_sign::deserialize")] Decimal,
    ),
    /// An epoch entered a phase.
    EpochAdvanced(EpochId, EpochPhase),
}

/// The operation kinds, in variant-index order; names as in the JSON form.
pub const OPERATION_KINDS: [&str; 6] = [
    "OrderReceived",
    "OrderCancelled",
    "BufferSealed",
    "TradeExecuted",
    "BalanceUpdated",
    "EpochAdvanced",
];

impl AofOperation {
    /// The bincode variant index, which is also the index into [`OPERATION_KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            AofOperation::OrderReceived(_) => 0,
            AofOperation::OrderCancelled(_) => 1,
            AofOperation::BufferSealed(..) => 2,
            AofOperation::TradeExecuted(_) => 3,
            AofOperation::BalanceUpdated(..) => 4,
            AofOperation::EpochAdvanced(..) => 5,
        }
    }

    /// The operation's kind, as named in [`OPERATION_KINDS`].
    pub fn kind(&self) -> &'static str {
        OPERATION_KINDS[self.kind_index()]
    }

    /// The epoch an operation names, where it names one.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            AofOperation::OrderReceived(o) => o.epoch_id.map(|e| e.0),
            AofOperation::OrderCancelled(_) | AofOperation::BalanceUpdated(..) => None,
            AofOperation::BufferSealed(b, _) => Some(b.0),
            AofOperation::TradeExecuted(t) => Some(t.epoch_id.0),
            AofOperation::EpochAdvanced(e, _) => Some(e.0),
        }
    }
}
