//! What the engine's SQL schema holds exactly: NUMERIC(28,8) decimals,
//! VARCHAR(20) markets and VARCHAR(10) assets, BIGINT ids and nanosecond
//! timestamps. An operation that passes [`check_fits_store`] is stored and
//! read back unchanged; one that does not must never be appended, so that
//! the AOF and the database cannot disagree.
//!
//! In Rust because it runs before every append: reading each field through
//! Python objects cost tens of microseconds per order.

use rust_decimal::Decimal;

use crate::types::{AofOperation, MarketPair, Order, Trade};

/// NUMERIC(28,8): at most 8 places...
pub const NUMERIC_SCALE: u32 = 8;
/// ...and 20 integer digits.
pub const NUMERIC_INTEGER_DIGITS: u32 = 20;
/// VARCHAR lengths of the schema, in characters.
pub const MARKET_LEN: usize = 20;
/// See [`MARKET_LEN`].
pub const ASSET_LEN: usize = 10;

// Every check builds its message only when it fails: this runs before
// every append, and formatting the field names of an order eagerly cost
// more than the checks themselves.

/// The name of the checked field, built on failure only.
pub type Field<'a> = &'a dyn Fn() -> String;

/// The integer part's bound, 10^20.
const NUMERIC_LIMIT: Decimal = Decimal::from_parts(1_661_992_960, 1_808_227_885, 5, false, 0);

fn decimal(value: &Decimal, field: Field<'_>) -> Result<(), String> {
    if value.scale() > NUMERIC_SCALE {
        return Err(format!(
            "{}: {value} has {} decimal places; the store's NUMERIC(28,8) holds \
             {NUMERIC_SCALE} (refused, not rounded)",
            field(),
            value.scale()
        ));
    }
    if value.abs() >= NUMERIC_LIMIT {
        return Err(format!(
            "{}: {value} has more than {NUMERIC_INTEGER_DIGITS} integer digits; the \
             store's NUMERIC(28,8) cannot hold it",
            field()
        ));
    }
    Ok(())
}

/// `Err` naming `field` when `value` is longer than `limit` characters or
/// holds a NUL (which no store's text can hold).
pub fn text(value: &str, limit: Option<usize>, field: Field<'_>) -> Result<(), String> {
    let quoted = || format!("'{}'", value.escape_debug());
    if let Some(limit) = limit {
        // Bytes bound characters from above: count them only when needed.
        let chars = if value.len() > limit {
            value.chars().count()
        } else {
            value.len()
        };
        if chars > limit {
            return Err(format!(
                "{}: {} is {chars} characters; the store's VARCHAR({limit}) holds at \
                 most {limit} (refused, not truncated)",
                field(),
                quoted()
            ));
        }
    }
    if value.contains('\0') {
        return Err(format!(
            "{}: {} contains a NUL character (PostgreSQL text)",
            field(),
            quoted()
        ));
    }
    Ok(())
}

/// `Err` naming `field` when `value` does not fit the store's BIGINT.
pub fn bigint(value: u64, field: Field<'_>) -> Result<(), String> {
    if i64::try_from(value).is_err() {
        return Err(format!(
            "{}: {value} does not fit the store's BIGINT",
            field()
        ));
    }
    Ok(())
}

fn timestamp(value: &chrono::DateTime<chrono::Utc>, field: Field<'_>) -> Result<(), String> {
    if value.timestamp_nanos_opt().is_none() {
        return Err(format!(
            "{}: {value} is outside the store's BIGINT nanoseconds (years 1677..2262)",
            field()
        ));
    }
    Ok(())
}

fn market(m: &MarketPair, field: Field<'_>) -> Result<(), String> {
    text(&m.base, None, field)?;
    text(&m.quote, None, field)?;
    // The symbol is "base/quote".
    let symbol_chars = m.base.len() + 1 + m.quote.len();
    if symbol_chars > MARKET_LEN {
        return text(&m.symbol(), Some(MARKET_LEN), field);
    }
    Ok(())
}

fn order(o: &Order, where_: &str) -> Result<(), String> {
    let w = || format!("{where_} {}", o.id.0);
    market(&o.market, &|| format!("{}: market", w()))?;
    if let Some(price) = &o.price {
        decimal(price, &|| format!("{}: price", w()))?;
    }
    decimal(&o.quantity, &|| format!("{}: quantity", w()))?;
    decimal(&o.remaining_qty, &|| format!("{}: remaining_qty", w()))?;
    if let Some(epoch) = o.epoch_id {
        bigint(epoch.0, &|| format!("{}: epoch_id (batch_id)", w()))?;
    }
    bigint(o.sequence, &|| format!("{}: sequence", w()))?;
    timestamp(&o.created_at, &|| format!("{}: created_at", w()))?;
    timestamp(&o.updated_at, &|| format!("{}: updated_at", w()))
}

fn trade(t: &Trade, where_: &str) -> Result<(), String> {
    let w = || format!("{where_} {}", t.id.0);
    market(&t.market, &|| format!("{}: market", w()))?;
    bigint(t.epoch_id.0, &|| format!("{}: epoch_id (batch_id)", w()))?;
    decimal(&t.price, &|| format!("{}: price", w()))?;
    decimal(&t.quantity, &|| format!("{}: quantity", w()))?;
    decimal(&t.quote_amount, &|| format!("{}: quote_amount", w()))?;
    timestamp(&t.executed_at, &|| format!("{}: executed_at", w()))
}

/// `Err` with a message naming the field and the value when any value of
/// `op` does not fit the schema exactly.
pub fn check_fits_store(op: &AofOperation) -> Result<(), String> {
    match op {
        AofOperation::OrderReceived(o) => order(o, "OrderReceived: order"),
        AofOperation::TradeExecuted(t) => trade(t, "TradeExecuted: trade"),
        AofOperation::BalanceUpdated(user, asset, available, frozen) => {
            let w = || format!("BalanceUpdated: balance {}/{asset}", user.0);
            text(asset, Some(ASSET_LEN), &|| format!("{}: asset", w()))?;
            decimal(available, &|| format!("{}: available", w()))?;
            decimal(frozen, &|| format!("{}: frozen", w()))
        }
        AofOperation::BufferSealed(batch, _) => {
            bigint(batch.0, &|| "BufferSealed: batch_id".into())
        }
        AofOperation::EpochAdvanced(epoch, _) => {
            bigint(epoch.0, &|| "EpochAdvanced: epoch_id".into())
        }
        AofOperation::OrderCancelled(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EpochId, UserId};
    use std::str::FromStr;

    fn balance(asset: &str, available: &str) -> AofOperation {
        AofOperation::BalanceUpdated(
            UserId(uuid::Uuid::nil()),
            asset.into(),
            Decimal::from_str(available).unwrap(),
            Decimal::ZERO,
        )
    }

    #[test]
    fn limits_are_inclusive_and_refusals_name_field_and_value() {
        assert!(check_fits_store(&balance("ABCDEFGHIJ", "99999999999999999999.99999999")).is_ok());
        let e = check_fits_store(&balance("BTC", "0.000000001")).unwrap_err();
        assert!(
            e.contains("available: 0.000000001 has 9 decimal places"),
            "{e}"
        );
        let e = check_fits_store(&balance("BTC", "100000000000000000000")).unwrap_err();
        assert!(e.contains("more than 20 integer digits"), "{e}");
        assert_eq!(
            NUMERIC_LIMIT,
            Decimal::from(10u128.pow(NUMERIC_INTEGER_DIGITS))
        );
        let e = check_fits_store(&balance("ABCDEFGHIJK", "1")).unwrap_err();
        assert!(e.contains("asset: 'ABCDEFGHIJK' is 11 characters"), "{e}");
        let e =
            check_fits_store(&AofOperation::BufferSealed(EpochId(1 << 63), [0; 32])).unwrap_err();
        assert!(e.contains("BIGINT"), "{e}");
    }
}
