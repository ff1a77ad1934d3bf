//! The consistency check: every broken invariant of the held entities,
//! with the apply-time violations recorded.

use super::{EntityRef, OrderEntry, State, Violation, ViolationKind};

impl State {
    /// Every broken invariant, sorted by position then kind then entity.
    /// Empty when the state is consistent.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = self.recorded.clone();
        for entry in self.orders.values() {
            check_order(entry, &mut out);
        }
        for entry in self.balances.values() {
            let b = &entry.balance;
            for (name, value) in [("available", b.available), ("frozen", b.frozen)] {
                if value.is_sign_negative() && !value.is_zero() {
                    out.push(Violation {
                        kind: ViolationKind::NegativeBalance,
                        entity: EntityRef::Balance(b.user_id, b.asset.clone()),
                        position: entry.changed_at,
                        detail: format!("{name} is {value}"),
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            (a.position, a.kind, &a.entity, &a.detail)
                .cmp(&(b.position, b.kind, &b.entity, &b.detail))
        });
        out.dedup();
        out
    }

    /// `Ok` when every invariant holds, else all the violations
    /// (see [`State::violations`]).
    pub fn check(&self) -> Result<(), Vec<Violation>> {
        let v = self.violations();
        if v.is_empty() {
            Ok(())
        } else {
            Err(v)
        }
    }

    /// Apply-time violations past [`super::MAX_RECORDED_VIOLATIONS`] that
    /// were counted but not kept.
    pub fn violations_dropped(&self) -> u64 {
        self.recorded_dropped
    }
}

fn check_order(entry: &OrderEntry, out: &mut Vec<Violation>) {
    let o = &entry.order;
    let entity = || EntityRef::Order(o.id);
    if o.remaining_qty.is_sign_negative() && !o.remaining_qty.is_zero()
        || o.remaining_qty > o.quantity
    {
        out.push(Violation {
            kind: ViolationKind::RemainingOutOfRange,
            entity: entity(),
            position: entry.changed_at,
            detail: format!(
                "remaining {} is outside 0..={}",
                o.remaining_qty, o.quantity
            ),
        });
    }
    match o.quantity.checked_sub(o.remaining_qty) {
        Some(expected) if expected == entry.filled => {}
        Some(expected) => out.push(Violation {
            kind: ViolationKind::FillMismatch,
            entity: entity(),
            position: entry.changed_at,
            detail: format!(
                "fills add up to {} but quantity - remaining is {expected}",
                entry.filled
            ),
        }),
        None => out.push(Violation {
            kind: ViolationKind::Overflow,
            entity: entity(),
            position: entry.changed_at,
            detail: "quantity - remaining overflows".into(),
        }),
    }
}
