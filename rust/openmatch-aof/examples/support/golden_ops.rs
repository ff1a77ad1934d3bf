//! The golden operations: every variant and the edges of every field type.
//!
//! Shared by the `write_golden` example (which writes `tests/fixtures/`) and
//! the `interop` test (which reads what Python wrote), so both sides compare
//! against one list.

use chrono::{DateTime, TimeZone, Utc};
use openmatch_aof::types::*;
use rust_decimal::Decimal;
use uuid::Uuid;

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190f3c2_7b1e_7c00_8000_000000000000 | n)
}

fn ts(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, nanos)
        .single()
        .expect("valid timestamp")
}

fn node(seed: u8) -> NodeId {
    let mut b = [0u8; 32];
    for (i, x) in b.iter_mut().enumerate() {
        *x = seed.wrapping_add(i as u8);
    }
    NodeId(b)
}

const T0: i64 = 1_772_228_125; // 2026-02-27T21:35:25Z

#[allow(clippy::too_many_arguments)]
fn order(
    n: u128,
    market: (&str, &str),
    side: OrderSide,
    order_type: OrderType,
    status: OrderStatus,
    price: Option<&str>,
    quantity: &str,
    remaining: &str,
    epoch: Option<u64>,
    sequence: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
) -> AofOperation {
    AofOperation::OrderReceived(Order {
        id: OrderId(uuid(n)),
        user_id: UserId(uuid(0xaa)),
        market: MarketPair {
            base: market.0.into(),
            quote: market.1.into(),
        },
        side,
        order_type,
        status,
        price: price.map(d),
        quantity: d(quantity),
        remaining_qty: d(remaining),
        sr_id: SpendRightId(uuid(0x5000 + n)),
        epoch_id: epoch.map(EpochId),
        origin_node: node(n as u8),
        sequence,
        created_at: created,
        updated_at: updated,
    })
}

/// Every variant, with the edge values of aof-format.md's field types.
pub fn golden_ops() -> Vec<AofOperation> {
    use OrderSide::*;
    use OrderStatus::*;
    use OrderType::*;
    let mut ops = vec![
        // A plain limit order, whole-second timestamps.
        order(
            1,
            ("BTC", "USDT"),
            Buy,
            Limit,
            Active,
            Some("50000.5"),
            "1.25",
            "1.25",
            Some(7),
            3,
            ts(T0, 0),
            ts(T0, 0),
        ),
        // Market order: price None, epoch None; millisecond and microsecond times.
        order(
            2,
            ("ETH", "USDT"),
            Sell,
            Market,
            PendingEscrow,
            None,
            "10",
            "10",
            None,
            0,
            ts(T0, 120_000_000),
            ts(T0, 123_456_000),
        ),
        // Nanosecond timestamps; scale 28; zero and negative values.
        order(
            3,
            ("BTC", "USDT"),
            Buy,
            Limit,
            PartiallyFilled,
            Some("0.0000000000000000000000000001"),
            "0",
            "-0.5",
            Some(0),
            u64::MAX,
            ts(T0, 123_456_789),
            ts(T0, 1),
        ),
        // Largest mantissa, both signs; scale 0.
        order(
            4,
            ("BTC", "USDT"),
            Sell,
            Cancel,
            Cancelled,
            Some("79228162514264337593543950335"),
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            Some(u64::MAX),
            1,
            ts(0, 0),
            ts(-1, 999_999_999),
        ),
        // Non-ASCII and empty strings.
        order(
            5,
            ("ÉTH₿", "日本円"),
            Buy,
            Limit,
            Filled,
            Some("1.00000000"),
            "2.50",
            "0.00",
            Some(1),
            2,
            ts(T0, 500_000),
            ts(4_102_444_800, 0),
        ),
        order(
            6,
            ("", ""),
            Sell,
            Limit,
            Rejected,
            Some("-3"),
            "1",
            "1",
            None,
            9,
            ts(T0, 10),
            ts(T0, 100),
        ),
        order(
            7,
            ("BTC", "USDT"),
            Buy,
            Market,
            Expired,
            Some("100"),
            "0.001",
            "0.001",
            Some(2),
            4,
            ts(T0, 999_000_000),
            ts(T0, 999_999_000),
        ),
        AofOperation::OrderCancelled(OrderId(uuid(1))),
        AofOperation::OrderCancelled(OrderId(Uuid::nil())),
        AofOperation::OrderCancelled(OrderId(Uuid::max())),
        AofOperation::BufferSealed(EpochId(7), node(0).0),
        AofOperation::BufferSealed(EpochId(u64::MAX), [0xff; 32]),
        AofOperation::TradeExecuted(Trade {
            id: TradeId(uuid(0x7001)),
            epoch_id: EpochId(7),
            market: MarketPair {
                base: "BTC".into(),
                quote: "USDT".into(),
            },
            taker_order_id: OrderId(uuid(1)),
            taker_user_id: UserId(uuid(0xaa)),
            maker_order_id: OrderId(uuid(2)),
            maker_user_id: UserId(uuid(0xbb)),
            price: d("50000.5"),
            quantity: d("0.25"),
            quote_amount: d("12500.125"),
            taker_side: Buy,
            matcher_node: node(0x80),
            executed_at: ts(T0, 123_456_789),
        }),
        AofOperation::TradeExecuted(Trade {
            id: TradeId(uuid(0x7002)),
            epoch_id: EpochId(0),
            market: MarketPair {
                base: "ÉTH₿".into(),
                quote: "".into(),
            },
            taker_order_id: OrderId(uuid(5)),
            taker_user_id: UserId(uuid(0xcc)),
            maker_order_id: OrderId(uuid(6)),
            maker_user_id: UserId(uuid(0xdd)),
            price: d("0"),
            quantity: d("-1"),
            quote_amount: d("79228162514264337593543950335"),
            taker_side: Sell,
            matcher_node: NodeId([0; 32]),
            executed_at: ts(T0, 0),
        }),
        AofOperation::BalanceUpdated(UserId(uuid(0xaa)), "USDT".into(), d("1500.25"), d("0")),
        AofOperation::BalanceUpdated(UserId(uuid(0xbb)), "ÉTH₿".into(), d("-5"), d("0.00000000")),
        AofOperation::BalanceUpdated(
            UserId(uuid(0xcc)),
            "".into(),
            d("0.0000000000000000000000000001"),
            d("-79228162514264337593543950335"),
        ),
    ];
    for (epoch, phase) in [
        (7, EpochPhase::Collect),
        (7, EpochPhase::Seal),
        (7, EpochPhase::Match),
        (7, EpochPhase::Finalize),
        (0, EpochPhase::Collect),
        (u64::MAX, EpochPhase::Finalize),
    ] {
        ops.push(AofOperation::EpochAdvanced(EpochId(epoch), phase));
    }
    ops
}

/// A frame as the engine writes it: plain `bincode::serialize` and
/// `crc32fast`, deliberately not through this crate's encoder.
pub fn engine_frame(op: &AofOperation) -> Vec<u8> {
    let payload = bincode::serialize(op).expect("serialize");
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}
