//! The engine's side of follow mode: a process that appends a realistic
//! workload (epochs cycling Collect -> Seal -> Match -> Finalize, orders,
//! cancels, trades, balances) through the crate's writer at a given rate,
//! while `openmatch-persistence follow DATA_DIR` keeps the database current.
//!
//! ```sh
//! cargo run --release -p openmatch-aof --example engine_writer -- DATA_DIR \
//!     [--rate OPS_PER_SEC] [--ops N] [--fsync always|everysec|no] \
//!     [--rotate-bytes BYTES] [--orders-per-epoch N]
//! ```
//!
//! `--rate 0` appends as fast as it can; `--ops 0` (the default) runs until
//! killed. Every run may start over a log another run left (killed with -9
//! included): ids are fresh per run and epoch ids grow with the clock, so
//! the log always passes the state's invariants.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use openmatch_aof::writer::{AofWriter, FsyncPolicy, WriterOptions};
use openmatch_aof::*;
use rust_decimal::Decimal;
use uuid::Uuid;

struct Args {
    data_dir: PathBuf,
    rate: u64,
    ops: u64,
    fsync: FsyncPolicy,
    rotate_bytes: Option<u64>,
    orders_per_epoch: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data_dir: PathBuf::new(),
        rate: 10_000,
        ops: 0,
        fsync: FsyncPolicy::Always,
        rotate_bytes: Some(64 << 20),
        orders_per_epoch: 100,
    };
    let mut it = std::env::args().skip(1);
    let mut dir = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--rate" => args.rate = number(value("--rate")?, "--rate")?,
            "--ops" => args.ops = number(value("--ops")?, "--ops")?,
            "--fsync" => args.fsync = value("--fsync")?.parse()?,
            "--rotate-bytes" => {
                let n = number(value("--rotate-bytes")?, "--rotate-bytes")?;
                args.rotate_bytes = (n > 0).then_some(n);
            }
            "--orders-per-epoch" => {
                let n = number(value("--orders-per-epoch")?, "--orders-per-epoch")?;
                args.orders_per_epoch = n.max(2) & !1;
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    args.data_dir = dir.ok_or("usage: engine_writer DATA_DIR [--rate N] [--ops N] [--fsync P] [--rotate-bytes N] [--orders-per-epoch N]")?;
    Ok(args)
}

/// A deterministic stream of operations that keeps the state's rules; ids
/// in a namespace of their own (`run`), so that runs never collide.
struct Workload {
    run: u64,
    next_id: u64,
    epoch: u64,
    orders_per_epoch: u64,
    rng: u64,
}

impl Workload {
    fn new(orders_per_epoch: u64) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let run = now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 40);
        Workload {
            run,
            next_id: 0,
            // Later runs get later epochs: epochs finalize in id order.
            epoch: now.as_millis() as u64 * 1000,
            orders_per_epoch,
            rng: run | 1,
        }
    }

    fn id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128((u128::from(self.run) << 64) | u128::from(self.next_id))
    }

    fn random(&mut self, below: u64) -> u64 {
        // xorshift64: enough for a workload's variety.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below
    }

    fn market() -> MarketPair {
        MarketPair {
            base: "BTC".into(),
            quote: "USDT".into(),
        }
    }

    /// One epoch's operations, in the order the engine writes them.
    fn epoch_ops(&mut self) -> Vec<AofOperation> {
        self.epoch += 1;
        let epoch = EpochId(self.epoch);
        let now = Utc::now();
        let mut ops = vec![AofOperation::EpochAdvanced(epoch, EpochPhase::Collect)];
        let mut orders = Vec::new();
        for i in 0..self.orders_per_epoch {
            let user = UserId(self.id());
            let qty = Decimal::new(1 + self.random(500) as i64, 2);
            let price = Decimal::new(5_000_000 + self.random(10_000) as i64, 2);
            let order = Order {
                id: OrderId(self.id()),
                user_id: user,
                market: Self::market(),
                side: if i % 2 == 0 {
                    OrderSide::Buy
                } else {
                    OrderSide::Sell
                },
                order_type: OrderType::Limit,
                status: OrderStatus::Active,
                price: Some(price),
                quantity: qty,
                remaining_qty: qty,
                sr_id: SpendRightId(self.id()),
                epoch_id: Some(epoch),
                origin_node: NodeId([7; 32]),
                sequence: self.next_id,
                created_at: now,
                updated_at: now,
            };
            let asset = if i % 2 == 0 { "USDT" } else { "BTC" };
            ops.push(AofOperation::OrderReceived(order.clone()));
            ops.push(AofOperation::BalanceUpdated(
                user,
                asset.into(),
                Decimal::new(self.random(1_000_000) as i64, 2),
                qty,
            ));
            orders.push(order);
        }
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&self.epoch.to_le_bytes());
        ops.push(AofOperation::EpochAdvanced(epoch, EpochPhase::Seal));
        ops.push(AofOperation::BufferSealed(epoch, hash));
        ops.push(AofOperation::EpochAdvanced(epoch, EpochPhase::Match));
        for pair in orders.chunks(2) {
            let (buy, sell) = (&pair[0], &pair[1]);
            if self.random(8) == 0 {
                ops.push(AofOperation::OrderCancelled(buy.id));
                continue;
            }
            let qty = buy.quantity.min(sell.quantity);
            let price = sell.price.unwrap_or_default();
            ops.push(AofOperation::TradeExecuted(Trade {
                id: TradeId(self.id()),
                epoch_id: epoch,
                market: Self::market(),
                taker_order_id: buy.id,
                taker_user_id: buy.user_id,
                maker_order_id: sell.id,
                maker_user_id: sell.user_id,
                price,
                quantity: qty,
                quote_amount: (price * qty).round_dp(8),
                taker_side: OrderSide::Buy,
                matcher_node: NodeId([7; 32]),
                executed_at: now,
            }));
            for (user, asset) in [(buy.user_id, "BTC"), (sell.user_id, "USDT")] {
                let available = Decimal::new(self.random(1_000_000) as i64, 2);
                ops.push(AofOperation::BalanceUpdated(
                    user,
                    asset.into(),
                    available,
                    Decimal::ZERO,
                ));
            }
        }
        ops.push(AofOperation::EpochAdvanced(epoch, EpochPhase::Finalize));
        ops
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("engine_writer: error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let opts = WriterOptions {
        fsync: args.fsync,
        rotate_bytes: args.rotate_bytes,
        ..WriterOptions::default()
    };
    let writer = AofWriter::open(args.data_dir.join("aof"), opts)?;
    let mut workload = Workload::new(args.orders_per_epoch);
    let mut queue = std::collections::VecDeque::new();
    let started = Instant::now();
    let mut appended = 0u64;
    while args.ops == 0 || appended < args.ops {
        // Whatever the rate says is due by now, in one batch (group
        // commit), then a short sleep: about a millisecond's worth a batch.
        let due = if args.rate == 0 {
            appended + 256
        } else {
            (started.elapsed().as_secs_f64() * args.rate as f64) as u64
        };
        let due = if args.ops == 0 {
            due
        } else {
            due.min(args.ops)
        };
        if due <= appended {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let mut batch = Vec::with_capacity((due - appended) as usize);
        while appended + (batch.len() as u64) < due {
            if queue.is_empty() {
                queue.extend(workload.epoch_ops());
            }
            batch.extend(queue.pop_front());
        }
        writer.append_many(&batch)?;
        appended += batch.len() as u64;
    }
    writer.close()?;
    eprintln!(
        "engine_writer: appended {appended} operations; the log ends at position {}",
        writer.position()
    );
    Ok(())
}
