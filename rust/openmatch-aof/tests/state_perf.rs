//! Replay throughput, printed rather than asserted (tests make no timing
//! assertions). Run: `cargo test --release -p openmatch-aof --test state_perf -- --ignored --nocapture`

use std::time::Duration;

/// CPU time of this thread (from /proc/thread-self/schedstat): on a shared
/// machine wall time measures the neighbours as much as the code.
struct Instant(u64);

impl Instant {
    fn now() -> Self {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        Instant(
            text.split_whitespace()
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        )
    }
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(Instant::now().0 - self.0)
    }
}

use chrono::{TimeZone, Utc};
use openmatch_aof::codec::encode_frame_into;
use openmatch_aof::state::State;
use openmatch_aof::*;
use rust_decimal::Decimal;
use uuid::Uuid;

/// A realistic mix: 40% orders, 30% trades, 20% balance updates, 10% epoch
/// operations, every trade filling two earlier orders.
fn stream(n: usize) -> Vec<AofOperation> {
    let mut ops = Vec::with_capacity(n);
    let market = MarketPair {
        base: "BTC".into(),
        quote: "USDT".into(),
    };
    let (mut orders, mut epoch) = (0u128, 0u64);
    let mut phase = 0usize;
    let phases = [
        EpochPhase::Collect,
        EpochPhase::Seal,
        EpochPhase::Match,
        EpochPhase::Finalize,
    ];
    for i in 0..n {
        let at = Utc
            .timestamp_opt(1_700_000_000 + i as i64, 123_456_789)
            .unwrap();
        let op = match i % 10 {
            0..=3 => {
                orders += 1;
                AofOperation::OrderReceived(Order {
                    id: OrderId(Uuid::from_u128(orders)),
                    user_id: UserId(Uuid::from_u128(orders % 1000)),
                    market: market.clone(),
                    side: OrderSide::Buy,
                    order_type: OrderType::Limit,
                    status: OrderStatus::Active,
                    price: Some(Decimal::new(1005, 1)),
                    quantity: Decimal::new(1_000_000, 4),
                    remaining_qty: Decimal::new(1_000_000, 4),
                    sr_id: SpendRightId(Uuid::from_u128(orders << 1)),
                    epoch_id: Some(EpochId(epoch)),
                    origin_node: NodeId([7; 32]),
                    sequence: i as u64,
                    created_at: at,
                    updated_at: at,
                })
            }
            4..=6 => AofOperation::TradeExecuted(Trade {
                id: TradeId(Uuid::from_u128((i as u128) << 64)),
                epoch_id: EpochId(epoch),
                market: market.clone(),
                taker_order_id: OrderId(Uuid::from_u128(orders)),
                taker_user_id: UserId(Uuid::from_u128(1)),
                maker_order_id: OrderId(Uuid::from_u128(orders - 1)),
                maker_user_id: UserId(Uuid::from_u128(2)),
                price: Decimal::new(1005, 1),
                quantity: Decimal::new(1, 4),
                quote_amount: Decimal::new(1005, 5),
                taker_side: OrderSide::Buy,
                matcher_node: NodeId([9; 32]),
                executed_at: at,
            }),
            7 | 8 => AofOperation::BalanceUpdated(
                UserId(Uuid::from_u128(i as u128 % 5000)),
                if i % 3 == 0 { "BTC" } else { "USDT" }.into(),
                Decimal::new(i as i64, 2),
                Decimal::new(5, 1),
            ),
            _ => {
                phase += 1;
                if phase == 4 {
                    phase = 0;
                    epoch += 1;
                }
                AofOperation::EpochAdvanced(EpochId(epoch), phases[phase])
            }
        };
        ops.push(op);
    }
    ops
}

#[test]
#[ignore]
fn replay_one_million_operations() {
    let n = 1_000_000;
    let ops = stream(n);
    let mut data = Vec::with_capacity(n * 300);
    for op in &ops {
        encode_frame_into(op, &mut data).unwrap();
    }

    let t = Instant::now();
    let mut s = State::new();
    for (i, op) in ops.iter().enumerate() {
        s.apply(op, i as u64);
    }
    let apply = t.elapsed();

    let owned = ops.clone();
    let t = Instant::now();
    let mut s2 = State::new();
    for (i, op) in owned.into_iter().enumerate() {
        s2.apply_owned(op, i as u64);
    }
    let apply_owned = t.elapsed();
    drop(s2);

    let t = Instant::now();
    let mut r = State::new();
    let applied = r.apply_frames(&data, 0, DEFAULT_MAX_PAYLOAD_LEN).unwrap();
    let frames = t.elapsed();
    assert_eq!(applied, n);

    let t = Instant::now();
    let violations = r.violations();
    let check = t.elapsed();
    assert!(violations.is_empty(), "{:?}", &violations[..1]);

    let t = Instant::now();
    let _ = r.digest();
    let digest = t.elapsed();

    let t = Instant::now();
    let c = r.take_changes();
    let changes = t.elapsed();
    let t = Instant::now();
    let snap = r.export();
    let restored = State::from_snapshot(snap).unwrap();
    let roundtrip = t.elapsed();
    println!(
        "CPU time: {n} ops, {} MB of frames, {} open orders {} retired ids: apply(&op) {apply:?}, apply owned {apply_owned:?}, \
         decode+apply frames {frames:?}, check {check:?}, digest {digest:?}, take_changes {changes:?} \
         ({} orders), export+import {roundtrip:?}",
        data.len() / 1_000_000,
        restored.order_count(),
        restored.retired_id_count(),
        c.orders.len()
    );
}
