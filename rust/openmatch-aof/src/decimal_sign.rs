//! A `Decimal` read back from its text with the sign of a zero kept.
//!
//! rust_decimal writes a negative zero (`-Decimal::ZERO`, which the engine
//! produces) as `"-0"`, but its parser drops the sign of a zero, so a frame
//! holding one decoded and re-encoded to `"0"`: other bytes, another
//! checksum. These deserializers parse as rust_decimal's `serde-str` does and
//! then put a zero's sign back; serialization is untouched (rust_decimal's).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{Deserializer, Error, Unexpected, Visitor};

struct SignedText;

impl Visitor<'_> for SignedText {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Decimal as a string")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Decimal, E> {
        parse(text).ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))
    }
}

/// `text` as rust_decimal's serde parses it, a leading `-` kept on a zero.
pub fn parse(text: &str) -> Option<Decimal> {
    let mut d = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    if d.is_zero() && text.starts_with('-') {
        d.set_sign_negative(true);
    }
    Some(d)
}

/// For `#[serde(deserialize_with)]` on a `Decimal` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_str(SignedText)
}

/// For `#[serde(deserialize_with)]` on an `Option<Decimal>` field.
pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    struct Wrapped(Decimal);
    impl<'de> serde::Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Wrapped)
        }
    }
    Ok(<Option<Wrapped> as serde::Deserialize>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_one, encode_frame, DEFAULT_MAX_PAYLOAD_LEN};
    use crate::types::{AofOperation, UserId};

    #[test]
    fn negative_zero_decodes_and_reencodes_byte_for_byte() {
        for zero in [-Decimal::ZERO, -Decimal::new(0, 2)] {
            let op = AofOperation::BalanceUpdated(
                UserId(uuid::Uuid::nil()),
                "BTC".into(),
                zero,
                Decimal::ONE,
            );
            let frame = encode_frame(&op).unwrap();
            let back = decode_one(&frame, DEFAULT_MAX_PAYLOAD_LEN).unwrap();
            assert_eq!(encode_frame(&back).unwrap(), frame);
            let json = serde_json::to_string(&back).unwrap();
            assert_eq!(json, serde_json::to_string(&op).unwrap());
            assert!(json.contains(&format!("\"{zero}\"")) && zero.to_string().starts_with("-0"));
            let from_json: AofOperation = serde_json::from_str(&json).unwrap();
            assert_eq!(encode_frame(&from_json).unwrap(), frame);
        }
        assert!(!parse("0").unwrap().is_sign_negative());
        assert_eq!(parse("-1.50").unwrap().to_string(), "-1.50");
        assert!(parse("x").is_none());
    }
}
