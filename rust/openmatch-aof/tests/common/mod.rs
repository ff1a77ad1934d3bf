//! Builders of engine values shared by the integration tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use openmatch_aof::*;
use rust_decimal::Decimal;
use uuid::Uuid;

pub fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub fn ts(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

pub fn oid(n: u8) -> OrderId {
    OrderId(Uuid::from_bytes([n; 16]))
}

pub fn tid(n: u8) -> TradeId {
    TradeId(Uuid::from_bytes([0x80 | n; 16]))
}

pub fn user(n: u8) -> UserId {
    UserId(Uuid::from_bytes([0x40 | n; 16]))
}

pub fn market() -> MarketPair {
    MarketPair {
        base: "BTC".into(),
        quote: "USDT".into(),
    }
}

pub fn order(n: u8, qty: &str, at: i64) -> Order {
    Order {
        id: oid(n),
        user_id: user(n),
        market: market(),
        side: if n % 2 == 0 {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        },
        order_type: OrderType::Limit,
        status: OrderStatus::Active,
        price: Some(d("100.5")),
        quantity: d(qty),
        remaining_qty: d(qty),
        sr_id: SpendRightId(Uuid::from_bytes([0x20 | n; 16])),
        epoch_id: Some(EpochId(1)),
        origin_node: NodeId([7; 32]),
        sequence: n as u64,
        created_at: ts(at),
        updated_at: ts(at),
    }
}

pub fn trade(n: u8, taker: u8, maker: u8, qty: &str, epoch: u64, at: i64) -> Trade {
    Trade {
        id: tid(n),
        epoch_id: EpochId(epoch),
        market: market(),
        taker_order_id: oid(taker),
        taker_user_id: user(taker),
        maker_order_id: oid(maker),
        maker_user_id: user(maker),
        price: d("100.5"),
        quantity: d(qty),
        quote_amount: d("0"),
        taker_side: OrderSide::Buy,
        matcher_node: NodeId([9; 32]),
        executed_at: ts(at),
    }
}

/// `n` new orders (quantity 5, distinct ids from `first` on, outside the
/// small ids of [`oid`]).
pub fn new_orders(first: u128, n: usize) -> Vec<AofOperation> {
    (0..n as u128)
        .map(|k| {
            let mut o = order(1, "5", 1);
            o.id = OrderId(Uuid::from_u128((1 << 64) + first + k));
            AofOperation::OrderReceived(o)
        })
        .collect()
}
