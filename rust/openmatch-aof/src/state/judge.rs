//! The rule: whether an operation may be applied now, and the violation it
//! would cause if not. Every refusal of `docs/state.md` lives here; it
//! reads the state and changes nothing.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::{
    is_terminal, uuid_v7_millis, window_start_ms, EntityRef, RetiredKind, State, Violation,
    ViolationKind, ID_WINDOW_MS,
};
use crate::types::*;

impl State {
    /// Whether `op` may be applied now; the violation it would cause if
    /// not.
    pub(super) fn judge(&self, op: &AofOperation, position: u64) -> Result<(), Violation> {
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
                if let Some(kind) = self.retired.get(o.id.0) {
                    return refuse(
                        ViolationKind::DuplicateOrder,
                        entity,
                        format!(
                            "order id received again (it is the id of a {})",
                            retired_what(kind)
                        ),
                    );
                }
                self.judge_fresh_id(o.id.0, entity.clone(), position)?;
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
                None => Err(self.not_held(*id, EntityRef::Order(*id), "cancel of", position)),
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
                self.judge_open_epoch(*id, position)?;
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
            AofOperation::BufferSealed(batch, _) => self.judge_open_epoch(*batch, position),
        }
    }

    /// A new order or trade id must be inside the id window
    /// (`docs/state.md`, "The id window").
    fn judge_fresh_id(&self, id: Uuid, entity: EntityRef, position: u64) -> Result<(), Violation> {
        let Some(ms) = uuid_v7_millis(id) else {
            return Ok(());
        };
        let start = window_start_ms(self.clock);
        if ms >= start {
            return Ok(());
        }
        Err(Violation {
            kind: ViolationKind::StaleId,
            entity,
            position,
            detail: format!(
                "its UUIDv7 time is {} ms before the state's clock ({}), past the {} s id window: \
                 the state cannot prove the id was never used",
                start + ID_WINDOW_MS - ms,
                self.clock.to_rfc3339(),
                ID_WINDOW_MS / 1000
            ),
        })
    }

    /// An epoch that was finalized and left the hot state takes no more
    /// operations.
    fn judge_open_epoch(&self, id: EpochId, position: u64) -> Result<(), Violation> {
        match self.closed_through {
            Some(closed) if id <= closed && !self.epochs.contains_key(&id) => Err(Violation {
                kind: ViolationKind::ClosedEpoch,
                entity: EntityRef::Epoch(id),
                position,
                detail: format!(
                    "epoch {} is closed: it was finalized and left the hot state (epochs up to {} are closed)",
                    id.0, closed.0
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The refusal of an operation naming order `id`, which is not held:
    /// terminal when its id is a retired order's, else unknown.
    fn not_held(&self, id: OrderId, entity: EntityRef, what: &str, position: u64) -> Violation {
        match self.retired.get(id.0) {
            Some(RetiredKind::Order) => Violation {
                kind: ViolationKind::TerminalOrder,
                entity: EntityRef::Order(id),
                position,
                detail: format!("{what} order {}, which is terminal", id.0),
            },
            _ => Violation {
                kind: ViolationKind::UnknownOrder,
                entity,
                position,
                detail: format!(
                    "{what} order {}, which is not held: never received, or terminal and older \
                     than the id window",
                    id.0
                ),
            },
        }
    }

    fn judge_trade(&self, t: &Trade, position: u64) -> Result<(), Violation> {
        let violation = |kind, entity, detail| Violation {
            kind,
            entity,
            position,
            detail,
        };
        if let Some(kind) = self.retired.get(t.id.0) {
            return Err(violation(
                ViolationKind::DuplicateTrade,
                EntityRef::Trade(t.id),
                format!(
                    "trade id executed again (it is the id of a {})",
                    retired_what(kind)
                ),
            ));
        }
        // Ids are unique across orders and trades, as an order received
        // with a trade's id is refused: a state holding an open order and a
        // trade of one id could not be snapshotted and restored.
        if self.orders.contains_key(&OrderId(t.id.0)) {
            return Err(violation(
                ViolationKind::DuplicateTrade,
                EntityRef::Trade(t.id),
                "trade id executed again (it is the id of an open order)".into(),
            ));
        }
        self.judge_fresh_id(t.id.0, EntityRef::Trade(t.id), position)?;
        self.judge_open_epoch(t.epoch_id, position)?;
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
                let what = format!("trade {} names the {role}", t.id.0);
                return Err(self.not_held(id, EntityRef::Trade(t.id), &what, position));
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
}

fn retired_what(kind: RetiredKind) -> &'static str {
    match kind {
        RetiredKind::Order => "terminal order",
        RetiredKind::Trade => "trade",
    }
}
