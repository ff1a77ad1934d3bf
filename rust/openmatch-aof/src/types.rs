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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TradeId(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpendRightId(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EpochId(pub u64);

/// A batch is identified by the epoch that produced it.
pub type BatchId = EpochId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

pub type Asset = String;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MarketPair {
    pub base: String,
    pub quote: String,
}

impl MarketPair {
    /// The engine's display form, `BASE/QUOTE`.
    pub fn symbol(&self) -> String {
        format!("{}/{}", self.base, self.quote)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderSide {
    Buy,
    Sell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderType {
    Limit,
    Market,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    PendingEscrow,
    Active,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EpochPhase {
    Collect,
    Seal,
    Match,
    Finalize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub market: MarketPair,
    pub side: OrderSide,
    pub order_type: OrderType,
    pub status: OrderStatus,
    #[serde(deserialize_with = "crate::decimal_sign::deserialize_option")]
    pub price: Option<Decimal>,
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub quantity: Decimal,
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub remaining_qty: Decimal,
    pub sr_id: SpendRightId,
    pub epoch_id: Option<EpochId>,
    pub origin_node: NodeId,
    pub sequence: u64,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trade {
    pub id: TradeId,
    pub epoch_id: EpochId,
    pub market: MarketPair,
    pub taker_order_id: OrderId,
    pub taker_user_id: UserId,
    pub maker_order_id: OrderId,
    pub maker_user_id: UserId,
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub price: Decimal,
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub quantity: Decimal,
    #[serde(deserialize_with = "crate::decimal_sign::deserialize")]
    pub quote_amount: Decimal,
    pub taker_side: OrderSide,
    pub matcher_node: NodeId,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub executed_at: DateTime<Utc>,
}

/// One state change, the payload of one AOF frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AofOperation {
    OrderReceived(Order),
    OrderCancelled(OrderId),
    /// (batch id, batch hash)
    BufferSealed(BatchId, [u8; 32]),
    TradeExecuted(Trade),
    /// (user, asset, available, frozen)
    BalanceUpdated(
        UserId,
        Asset,
        #[serde(deserialize_with = "crate::decimal_sign::deserialize")] Decimal,
        #[serde(deserialize_with = "crate::decimal_sign::deserialize")] Decimal,
    ),
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
