//! The journal as the engine would use it: open with recovery (a state
//! image plus the AOF after it), append, read the state, snapshot, reopen;
//! and a repair, as `aof repair` makes it, of a log damaged on disk.
//!
//! ```sh
//! cargo run -p openmatch-aof --example engine_journal
//! ```

use std::error::Error;

use chrono::{TimeZone, Utc};
use openmatch_aof::journal::{Journal, JournalError};
use openmatch_aof::state::State;
use openmatch_aof::state_image::decode_image;
use openmatch_aof::writer::{FsyncPolicy, WriterOptions};
use openmatch_aof::*;
use rust_decimal::Decimal;
use uuid::Uuid;

fn order(n: u128, qty: i64) -> Order {
    let at = Utc.timestamp_opt(1_772_228_125, 0).unwrap();
    Order {
        id: OrderId(Uuid::from_u128(n)),
        user_id: UserId(Uuid::from_u128(1000 + n)),
        market: MarketPair {
            base: "BTC".into(),
            quote: "USDT".into(),
        },
        side: if n % 2 == 0 {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        },
        order_type: OrderType::Limit,
        status: OrderStatus::Active,
        price: Some(Decimal::new(50_000, 0)),
        quantity: Decimal::new(qty, 0),
        remaining_qty: Decimal::new(qty, 0),
        sr_id: SpendRightId(Uuid::from_u128(2000 + n)),
        epoch_id: Some(EpochId(1)),
        origin_node: NodeId([1; 32]),
        sequence: n as u64,
        created_at: at,
        updated_at: at,
    }
}

fn trade(n: u128, taker: u128, maker: u128, qty: i64) -> Trade {
    Trade {
        id: TradeId(Uuid::from_u128(3000 + n)),
        epoch_id: EpochId(1),
        market: MarketPair {
            base: "BTC".into(),
            quote: "USDT".into(),
        },
        taker_order_id: OrderId(Uuid::from_u128(taker)),
        taker_user_id: UserId(Uuid::from_u128(1000 + taker)),
        maker_order_id: OrderId(Uuid::from_u128(maker)),
        maker_user_id: UserId(Uuid::from_u128(1000 + maker)),
        price: Decimal::new(50_000, 0),
        quantity: Decimal::new(qty, 0),
        quote_amount: Decimal::new(50_000 * qty, 0),
        taker_side: OrderSide::Buy,
        matcher_node: NodeId([1; 32]),
        executed_at: Utc.timestamp_opt(1_772_228_126, 0).unwrap(),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("openmatch-journal-{}", std::process::id()));
    let opts = WriterOptions {
        fsync: FsyncPolicy::Always,
        ..WriterOptions::default()
    };

    // A fresh directory: nothing to recover.
    let (journal, replayed) = Journal::open(&dir, opts.clone(), State::new())?;
    println!(
        "opened {}: replayed {} operations",
        dir.display(),
        replayed.operations
    );

    // Each append returns once it is durable and applied, in log order.
    journal.append(AofOperation::EpochAdvanced(EpochId(1), EpochPhase::Collect))?;
    journal.append_many(vec![
        AofOperation::OrderReceived(order(2, 5)),
        AofOperation::OrderReceived(order(3, 3)),
    ])?;
    journal.append(AofOperation::TradeExecuted(trade(1, 2, 3, 3)))?;

    // An operation that would break an invariant is refused and writes nothing.
    match journal.append(AofOperation::TradeExecuted(trade(2, 2, 3, 1))) {
        Err(JournalError::Refused { violation, .. }) => println!("refused: {violation}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // Reads see only acknowledged operations.
    let remaining = journal.read(|s| {
        s.order(&OrderId(Uuid::from_u128(2)))
            .map(|o| o.remaining_qty)
    })?;
    println!("order 2 has {remaining:?} left");

    // A snapshot: the state's image, once the log behind it is durable.
    // (The Python package keeps it in the database; the engine may keep it
    // anywhere.)
    let (image_position, image) = journal.image()?;
    journal.append(AofOperation::OrderCancelled(OrderId(Uuid::from_u128(2))))?;
    let digest = journal.read(State::digest)?;
    journal.close()?;

    // Recovery: the image, then the AOF after it, with the same rule.
    let base = State::from_snapshot(decode_image(&image)?)?;
    let (journal, replayed) = Journal::open(&dir, opts.clone(), base)?;
    println!(
        "reopened from the image at {image_position}: replayed {} operation(s) to position {}",
        replayed.operations, replayed.position
    );
    assert_eq!(journal.read(State::digest)?, digest);
    journal.close()?;
    println!("same state after recovery");

    // A bit flipped on disk in the last operation: the open refuses (it is
    // damage, not an interrupted append), and a repair cuts the log before
    // it, after copying every byte it removes to a backup.
    let segment = openmatch_aof::segment::list_segments(&dir)?
        .pop()
        .ok_or("no segment")?;
    let mut bytes = std::fs::read(&segment.path)?;
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&segment.path, &bytes)?;
    let refused = Journal::open(&dir, opts.clone(), State::new());
    println!("open after the flip: {}", refused.err().ok_or("opened")?);
    let plan = repair::plan_repair(&dir, None, DEFAULT_MAX_PAYLOAD_LEN)?;
    println!(
        "repair plan: cut at {}, {} bytes, {} damaged frame(s)",
        plan.report.outcome.position,
        plan.bytes_removed(),
        plan.damaged_frames
    );
    let repaired = repair::repair(&dir, None, DEFAULT_MAX_PAYLOAD_LEN, Some(&plan.parts))?;
    println!("backed up to {}", repaired.backups[0].display());
    let (journal, replayed) = Journal::open(&dir, opts, State::new())?;
    println!(
        "reopened after the repair: {} operations, to position {}",
        replayed.operations, replayed.position
    );
    journal.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
