//! Random operations over the whole range of every field: the frame and the
//! JSON form round-trip, and decoding then encoding gives the same bytes.

use chrono::{DateTime, Utc};
use openmatch_aof::types::*;
use openmatch_aof::{decode_all, decode_one, encode_frame, DEFAULT_MAX_PAYLOAD_LEN};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

fn decimal() -> impl Strategy<Value = Decimal> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        0u32..=28,
    )
        .prop_map(|(lo, mid, hi, neg, scale)| {
            // rust_decimal prints a negative zero as "0": the wire cannot keep
            // that sign, so the strategy does not make one.
            let neg = neg && (lo | mid | hi) != 0;
            Decimal::from_parts(lo, mid, hi, neg, scale)
        })
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // chrono's whole range, seconds and nanoseconds (no leap seconds).
    (
        DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
        0u32..1_000_000_000,
    )
        .prop_filter_map("in range", |(s, n)| DateTime::from_timestamp(s, n))
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn market() -> impl Strategy<Value = MarketPair> {
    (text(), text()).prop_map(|(base, quote)| MarketPair { base, quote })
}

fn side() -> impl Strategy<Value = OrderSide> {
    prop_oneof![Just(OrderSide::Buy), Just(OrderSide::Sell)]
}

fn order() -> impl Strategy<Value = Order> {
    (
        (uuid(), uuid(), market(), side()),
        (
            prop_oneof![
                Just(OrderType::Limit),
                Just(OrderType::Market),
                Just(OrderType::Cancel)
            ],
            prop_oneof![
                Just(OrderStatus::PendingEscrow),
                Just(OrderStatus::Active),
                Just(OrderStatus::PartiallyFilled),
                Just(OrderStatus::Filled),
                Just(OrderStatus::Cancelled),
                Just(OrderStatus::Rejected),
                Just(OrderStatus::Expired)
            ],
            proptest::option::of(decimal()),
            decimal(),
            decimal(),
        ),
        (
            uuid(),
            proptest::option::of(any::<u64>()),
            any::<[u8; 32]>(),
            any::<u64>(),
            timestamp(),
            timestamp(),
        ),
    )
        .prop_map(
            |(
                (id, user, market, side),
                (order_type, status, price, quantity, remaining_qty),
                (sr, epoch, node, sequence, created_at, updated_at),
            )| Order {
                id: OrderId(id),
                user_id: UserId(user),
                market,
                side,
                order_type,
                status,
                price,
                quantity,
                remaining_qty,
                sr_id: SpendRightId(sr),
                epoch_id: epoch.map(EpochId),
                origin_node: NodeId(node),
                sequence,
                created_at,
                updated_at,
            },
        )
}

fn trade() -> impl Strategy<Value = Trade> {
    (
        (
            uuid(),
            any::<u64>(),
            market(),
            uuid(),
            uuid(),
            uuid(),
            uuid(),
        ),
        (
            decimal(),
            decimal(),
            decimal(),
            side(),
            any::<[u8; 32]>(),
            timestamp(),
        ),
    )
        .prop_map(
            |(
                (id, epoch, market, to, tu, mo, mu),
                (price, quantity, quote_amount, taker_side, node, at),
            )| {
                Trade {
                    id: TradeId(id),
                    epoch_id: EpochId(epoch),
                    market,
                    taker_order_id: OrderId(to),
                    taker_user_id: UserId(tu),
                    maker_order_id: OrderId(mo),
                    maker_user_id: UserId(mu),
                    price,
                    quantity,
                    quote_amount,
                    taker_side,
                    matcher_node: NodeId(node),
                    executed_at: at,
                }
            },
        )
}

fn operation() -> impl Strategy<Value = AofOperation> {
    prop_oneof![
        order().prop_map(AofOperation::OrderReceived),
        uuid().prop_map(|u| AofOperation::OrderCancelled(OrderId(u))),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(b, h)| AofOperation::BufferSealed(EpochId(b), h)),
        trade().prop_map(AofOperation::TradeExecuted),
        (uuid(), text(), decimal(), decimal())
            .prop_map(|(u, a, av, fr)| AofOperation::BalanceUpdated(UserId(u), a, av, fr)),
        (
            any::<u64>(),
            prop_oneof![
                Just(EpochPhase::Collect),
                Just(EpochPhase::Seal),
                Just(EpochPhase::Match),
                Just(EpochPhase::Finalize)
            ]
        )
            .prop_map(|(e, p)| AofOperation::EpochAdvanced(EpochId(e), p)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frame_round_trips_byte_identically(op in operation()) {
        let frame = encode_frame(&op).unwrap();
        prop_assert_eq!(&frame[8..], &bincode::serialize(&op).unwrap()[..]);
        let back = decode_one(&frame, DEFAULT_MAX_PAYLOAD_LEN).unwrap();
        prop_assert_eq!(&back, &op);
        prop_assert_eq!(encode_frame(&back).unwrap(), frame);
    }

    #[test]
    fn json_round_trips(op in operation()) {
        let text = serde_json::to_string(&op).unwrap();
        let back: AofOperation = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &op);
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn streams_round_trip(ops in proptest::collection::vec(operation(), 0..16)) {
        let mut buf = Vec::new();
        for op in &ops {
            buf.extend(encode_frame(op).unwrap());
        }
        prop_assert_eq!(decode_all(&buf, DEFAULT_MAX_PAYLOAD_LEN).unwrap(), ops);
    }
}
