//! A `DateTime<Utc>` as chrono's serde writes it (RFC 3339, `Z`, seconds
//! fractions of 0, 3, 6 or 9 digits: `SecondsFormat::AutoSi`), without the
//! heap allocation that chrono's `collect_str` costs under bincode: it was
//! an eighth of the journal's encoding time.
//!
//! The bytes must be chrono's, since the engine writes its frames with
//! chrono: a timestamp this fast path cannot write exactly as chrono does
//! (a year outside 0000-9999, a leap second) goes to chrono itself, and a
//! property test compares the two over the whole range.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// Serializes `t` exactly as `chrono`'s `Serialize` does.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write_fast(t, &mut buf) {
        Some(len) => {
            // Only ASCII digits and separators were written.
            let text = std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(text)
        }
        None => serializer.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// Writes `t` into `buf` and returns the length, or None for what only
/// chrono writes (years outside 0000-9999, leap seconds).
fn write_fast(t: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    put(buf, 0, year as u32, 4);
    buf[4] = b'-';
    put(buf, 5, t.month(), 2);
    buf[7] = b'-';
    put(buf, 8, t.day(), 2);
    buf[10] = b'T';
    put(buf, 11, t.hour(), 2);
    buf[13] = b':';
    put(buf, 14, t.minute(), 2);
    buf[16] = b':';
    put(buf, 17, t.second(), 2);
    let mut end = 19;
    let (fraction, width) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        buf[19] = b'.';
        put(buf, 20, fraction, width);
        end = 20 + width;
    }
    buf[end] = b'Z';
    Some(end + 1)
}

/// Writes `value` as `width` decimal digits at `at`.
fn put(buf: &mut [u8; 30], at: usize, mut value: u32, width: usize) {
    for slot in buf[at..at + width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// The text [`serialize`] writes.
    fn to_text(t: &DateTime<Utc>) -> String {
        let mut buf = [0u8; 30];
        match write_fast(t, &mut buf) {
            Some(len) => buf[..len].iter().map(|&b| b as char).collect(),
            None => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }

    fn chrono_text(t: &DateTime<Utc>) -> String {
        // What chrono's own Serialize writes, taken through serde_json.
        let json = serde_json::to_string(t).unwrap();
        json.trim_matches('"').to_owned()
    }

    #[test]
    fn edges_match_chrono() {
        let cases = [
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(0, 1).unwrap(),
            Utc.timestamp_opt(0, 1_000).unwrap(),
            Utc.timestamp_opt(0, 1_000_000).unwrap(),
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
            Utc.timestamp_opt(-1, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.timestamp_opt(59, 1_500_000_000).unwrap(), // a leap second
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        for t in cases {
            assert_eq!(to_text(&t), chrono_text(&t), "{t:?}");
        }
    }

    proptest! {
        #[test]
        fn any_time_matches_chrono(secs in -300_000_000_000i64..300_000_000_000, nanos in prop_oneof![
            Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000), (0u32..1_000_000).prop_map(|u| u * 1000),
            0u32..2_000_000_000,
        ]) {
            if let Some(t) = Utc.timestamp_opt(secs, nanos).single() {
                prop_assert_eq!(to_text(&t), chrono_text(&t));
            }
        }
    }
}
