//! The ids that left the hot state, kept in a bounded form for the
//! duplicate checks (`docs/state.md`, "The id window").
//!
//! An order id is held by the hot state while the order is open; a trade
//! is never held. Once an order is terminal, or a trade applied, its id
//! moves here, so that receiving the id again is still refused. The
//! engine's ids are UUIDv7: their first 48 bits are a Unix time in
//! milliseconds, and ids come within moments of the operation's own
//! timestamp. An id is kept while its time is inside the window, that is
//! no more than [`ID_WINDOW_MS`] behind the state's logical clock; an id
//! whose time is older than that is refused at append (`stale_id`),
//! because the state can no longer prove it new. Both rules read only the
//! log, so the window is the same at append and at replay.
//!
//! Ids that are not UUIDv7 carry no time: they are kept for the state's
//! whole life (tests and foreign tools use them). They are the one part of
//! the state that grows with history; the engine never writes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::table::Map;

/// How far behind the logical clock a UUIDv7 id may be: 10 minutes.
/// Part of the rule (a different window would judge a log differently),
/// so it is a constant of this format, not an option.
pub const ID_WINDOW_MS: u64 = 10 * 60 * 1000;

/// What a retired id was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RetiredKind {
    /// An order that became terminal.
    Order,
    /// An applied trade.
    Trade,
}

/// The Unix time in milliseconds of a UUIDv7 (RFC 9562); `None` for
/// other ids.
pub fn uuid_v7_millis(id: Uuid) -> Option<u64> {
    (id.get_version_num() == 7 && id.get_variant() == uuid::Variant::RFC4122)
        .then(|| (id.as_u128() >> 80) as u64)
}

/// The oldest UUIDv7 time, in milliseconds, that the window admits when
/// the logical clock is `clock`.
pub fn window_start_ms(clock: DateTime<Utc>) -> u64 {
    u64::try_from(clock.timestamp_millis())
        .unwrap_or(0)
        .saturating_sub(ID_WINDOW_MS)
}

/// Retired ids: UUIDv7 ones ordered by value (which orders them by time,
/// so forgetting the old ones is a range removal), other ones in a map.
#[derive(Debug, Clone, Default)]
pub(super) struct RetiredIds {
    timed: BTreeMap<u128, RetiredKind>,
    untimed: Map<u128, RetiredKind>,
}

impl RetiredIds {
    pub(super) fn len(&self) -> usize {
        self.timed.len() + self.untimed.len()
    }

    pub(super) fn get(&self, id: Uuid) -> Option<RetiredKind> {
        let key = id.as_u128();
        match uuid_v7_millis(id) {
            Some(_) => self.timed.get(&key).copied(),
            None => self.untimed.get(&key).copied(),
        }
    }

    /// Remembers `id` unless it is already past the window (nothing could
    /// reuse it then: it would be refused as stale). Returns whether it was
    /// added (for the undo of a savepoint).
    pub(super) fn insert(&mut self, id: Uuid, kind: RetiredKind, window_start: u64) -> bool {
        let key = id.as_u128();
        match uuid_v7_millis(id) {
            Some(ms) if ms < window_start => false,
            Some(_) => self.timed.insert(key, kind).is_none(),
            None => self.untimed.insert(key, kind).is_none(),
        }
    }

    pub(super) fn remove(&mut self, id: Uuid) {
        let key = id.as_u128();
        self.timed.remove(&key);
        self.untimed.remove(&key);
    }

    /// Forgets the UUIDv7 ids older than `window_start`, handing each to
    /// `gone` (for the undo of a savepoint).
    pub(super) fn forget_before(
        &mut self,
        window_start: u64,
        mut gone: impl FnMut(Uuid, RetiredKind),
    ) {
        let bound = u128::from(window_start) << 80;
        while let Some(entry) = self.timed.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let (key, kind) = entry.remove_entry();
            gone(Uuid::from_u128(key), kind);
        }
    }

    /// Every retired id of `kind`, sorted.
    pub(super) fn sorted(&self, kind: RetiredKind) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = self
            .timed
            .iter()
            .chain(self.untimed.iter())
            .filter(|(_, k)| **k == kind)
            .map(|(id, _)| Uuid::from_u128(*id))
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v7(ms: u64, low: u64) -> Uuid {
        let hi = (u128::from(ms) << 80) | (0x7u128 << 76);
        Uuid::from_u128(hi | (0b10u128 << 62) | u128::from(low & 0x3fff_ffff_ffff_ffff))
    }

    #[test]
    fn only_uuid_v7_has_a_time() {
        assert_eq!(uuid_v7_millis(v7(1234, 5)), Some(1234));
        assert_eq!(uuid_v7_millis(Uuid::from_u128(7)), None);
        assert_eq!(uuid_v7_millis(Uuid::from_u128(0x4000 << 64)), None);
    }

    #[test]
    fn timed_ids_leave_with_the_window_untimed_stay() {
        let mut r = RetiredIds::default();
        assert!(r.insert(v7(1000, 1), RetiredKind::Trade, 0));
        assert!(r.insert(v7(2000, 1), RetiredKind::Order, 0));
        assert!(r.insert(Uuid::from_u128(3), RetiredKind::Order, 0));
        assert!(
            !r.insert(v7(500, 1), RetiredKind::Order, 600),
            "past the window"
        );
        let mut gone = Vec::new();
        r.forget_before(1500, |id, k| gone.push((id, k)));
        assert_eq!(gone, vec![(v7(1000, 1), RetiredKind::Trade)]);
        assert_eq!(r.get(v7(2000, 1)), Some(RetiredKind::Order));
        assert_eq!(r.get(Uuid::from_u128(3)), Some(RetiredKind::Order));
        r.forget_before(u64::MAX >> 16, |_, _| {});
        assert_eq!(r.len(), 1, "untimed ids are kept");
    }
}
