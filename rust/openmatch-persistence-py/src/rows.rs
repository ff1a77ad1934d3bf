//! The stores' rows of orders and trades, built in Rust.
//!
//! Building a row in Python reads every attribute of an `Order` through the
//! binding (a `UUID` and a `Decimal` object each) and formats it again: 20
//! to 25 us a row, most of a flush. Here a row is made straight from the
//! Rust value:
//!
//! * SQLite: a tuple of plain `str`, `int` and `bytes`, in the column order
//!   `SQLITE_ORDER_COLUMNS` / `SQLITE_TRADE_COLUMNS`, which `store/sqlite.py`
//!   builds its statements from, so the layout has one owner;
//! * PostgreSQL: the lines of a text `COPY` into `tmp_orders` / `tmp_trades`
//!   (`store/postgres.py` declares those tables): UUIDs as hex, decimals as
//!   their exact text (which keeps the scale), bytes as `\\x` hex, text
//!   escaped for COPY.

use chrono::{DateTime, Utc};
use openmatch_aof::types as t;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use rust_decimal::Decimal;

use crate::convert::datetime_to_ns;
use crate::state::StateChanges;

const ORDER_COLUMNS: [&str; 22] = [
    "id",
    "user_id",
    "market",
    "side",
    "order_type",
    "status",
    "price",
    "quantity",
    "remaining_qty",
    "batch_id",
    "sequence",
    "origin_node",
    "created_at",
    "updated_at",
    "sr_id",
    "market_base",
    "market_quote",
    "price_scale",
    "quantity_scale",
    "remaining_qty_scale",
    "created_at_ns",
    "updated_at_ns",
];

const TRADE_COLUMNS: [&str; 19] = [
    "id",
    "batch_id",
    "market",
    "taker_order_id",
    "maker_order_id",
    "taker_user_id",
    "maker_user_id",
    "price",
    "quantity",
    "quote_amount",
    "taker_side",
    "matcher_node",
    "executed_at",
    "market_base",
    "market_quote",
    "price_scale",
    "quantity_scale",
    "quote_amount_scale",
    "executed_at_ns",
];

/// The names the database stores (`store/rows.py` reads them back).
pub fn side_name(s: t::OrderSide) -> &'static str {
    match s {
        t::OrderSide::Buy => "BUY",
        t::OrderSide::Sell => "SELL",
    }
}

fn type_name_of(o: t::OrderType) -> &'static str {
    match o {
        t::OrderType::Limit => "LIMIT",
        t::OrderType::Market => "MARKET",
        t::OrderType::Cancel => "CANCEL",
    }
}

fn status_name(s: t::OrderStatus) -> &'static str {
    match s {
        t::OrderStatus::PendingEscrow => "PENDING_ESCROW",
        t::OrderStatus::Active => "ACTIVE",
        t::OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
        t::OrderStatus::Filled => "FILLED",
        t::OrderStatus::Cancelled => "CANCELLED",
        t::OrderStatus::Rejected => "REJECTED",
        t::OrderStatus::Expired => "EXPIRED",
    }
}

/// RFC 3339 UTC with always nine fractional digits, so the text sorts in
/// time order (as `rows.ns_to_text`).
fn time_text(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn uuid_text(u: &uuid::Uuid) -> String {
    u.hyphenated().to_string()
}

/// Fixed-point text at the value's own scale (as Python's `format(d, "f")`).
fn decimal_text(d: &Decimal) -> String {
    d.to_string()
}

fn order_row<'py>(py: Python<'py>, o: &t::Order) -> PyResult<Bound<'py, PyTuple>> {
    let items: [Bound<'py, PyAny>; 22] = [
        uuid_text(&o.id.0).into_pyobject(py)?.into_any(),
        uuid_text(&o.user_id.0).into_pyobject(py)?.into_any(),
        o.market.symbol().into_pyobject(py)?.into_any(),
        side_name(o.side).into_pyobject(py)?.into_any(),
        type_name_of(o.order_type).into_pyobject(py)?.into_any(),
        status_name(o.status).into_pyobject(py)?.into_any(),
        o.price
            .as_ref()
            .map(decimal_text)
            .into_pyobject(py)?
            .into_any(),
        decimal_text(&o.quantity).into_pyobject(py)?.into_any(),
        decimal_text(&o.remaining_qty).into_pyobject(py)?.into_any(),
        o.epoch_id.map(|e| e.0).into_pyobject(py)?.into_any(),
        o.sequence.into_pyobject(py)?.into_any(),
        PyBytes::new(py, &o.origin_node.0).into_any(),
        time_text(&o.created_at).into_pyobject(py)?.into_any(),
        time_text(&o.updated_at).into_pyobject(py)?.into_any(),
        uuid_text(&o.sr_id.0).into_pyobject(py)?.into_any(),
        o.market.base.as_str().into_pyobject(py)?.into_any(),
        o.market.quote.as_str().into_pyobject(py)?.into_any(),
        o.price.map(|p| p.scale()).into_pyobject(py)?.into_any(),
        o.quantity.scale().into_pyobject(py)?.into_any(),
        o.remaining_qty.scale().into_pyobject(py)?.into_any(),
        datetime_to_ns(&o.created_at, "created_at")?
            .into_pyobject(py)?
            .into_any(),
        datetime_to_ns(&o.updated_at, "updated_at")?
            .into_pyobject(py)?
            .into_any(),
    ];
    PyTuple::new(py, items)
}

fn trade_row<'py>(py: Python<'py>, x: &t::Trade) -> PyResult<Bound<'py, PyTuple>> {
    let items: [Bound<'py, PyAny>; 19] = [
        uuid_text(&x.id.0).into_pyobject(py)?.into_any(),
        x.epoch_id.0.into_pyobject(py)?.into_any(),
        x.market.symbol().into_pyobject(py)?.into_any(),
        uuid_text(&x.taker_order_id.0).into_pyobject(py)?.into_any(),
        uuid_text(&x.maker_order_id.0).into_pyobject(py)?.into_any(),
        uuid_text(&x.taker_user_id.0).into_pyobject(py)?.into_any(),
        uuid_text(&x.maker_user_id.0).into_pyobject(py)?.into_any(),
        decimal_text(&x.price).into_pyobject(py)?.into_any(),
        decimal_text(&x.quantity).into_pyobject(py)?.into_any(),
        decimal_text(&x.quote_amount).into_pyobject(py)?.into_any(),
        side_name(x.taker_side).into_pyobject(py)?.into_any(),
        PyBytes::new(py, &x.matcher_node.0).into_any(),
        time_text(&x.executed_at).into_pyobject(py)?.into_any(),
        x.market.base.as_str().into_pyobject(py)?.into_any(),
        x.market.quote.as_str().into_pyobject(py)?.into_any(),
        x.price.scale().into_pyobject(py)?.into_any(),
        x.quantity.scale().into_pyobject(py)?.into_any(),
        x.quote_amount.scale().into_pyobject(py)?.into_any(),
        datetime_to_ns(&x.executed_at, "executed_at")?
            .into_pyobject(py)?
            .into_any(),
    ];
    PyTuple::new(py, items)
}

/// The SQLite rows of the orders of `changes`, in `SQLITE_ORDER_COLUMNS`
/// order.
#[pyfunction]
fn sqlite_order_rows<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyList>> {
    // Copied out first: building Python objects can run Python code (the
    // garbage collector's callbacks), which can hand the GIL to a thread
    // that then waits for this lock while holding it.
    let orders = changes.get().lock().orders.clone();
    let rows = orders
        .iter()
        .map(|o| order_row(py, o))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, rows)
}

/// The SQLite rows of the trades of `changes`, in `SQLITE_TRADE_COLUMNS`
/// order.
#[pyfunction]
fn sqlite_trade_rows<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyList>> {
    // Copied out first, as in `sqlite_order_rows`.
    let trades = changes.get().lock().trades.clone();
    let rows = trades
        .iter()
        .map(|x| trade_row(py, x))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, rows)
}

fn copy_text(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn copy_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// Appends the fields of one line, tab-separated, and its newline.
struct Line<'a>(&'a mut Vec<u8>, bool);

impl Line<'_> {
    fn sep(&mut self) -> &mut Vec<u8> {
        if self.1 {
            self.0.push(b'\t');
        }
        self.1 = true;
        self.0
    }
    fn uuid(&mut self, u: &uuid::Uuid) {
        copy_hex(self.sep(), u.as_bytes());
    }
    fn text(&mut self, s: &str) {
        copy_text(self.sep(), s);
    }
    fn raw(&mut self, s: &str) {
        self.sep().extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, n: impl std::fmt::Display) {
        let out = self.sep();
        std::io::Write::write_fmt(out, format_args!("{n}")).expect("writing to a Vec never fails");
    }
    fn null(&mut self) {
        self.sep().extend_from_slice(b"\\N");
    }
    fn bytea(&mut self, bytes: &[u8]) {
        let out = self.sep();
        out.extend_from_slice(b"\\\\x");
        copy_hex(out, bytes);
    }
    fn ns(&mut self, t: &DateTime<Utc>, field: &str) -> PyResult<()> {
        let ns = datetime_to_ns(t, field)?;
        self.int(ns);
        Ok(())
    }
    fn end(self) {
        self.0.push(b'\n');
    }
}

/// id, user_id, market_base, market_quote, side, order_type, status, price,
/// quantity, remaining_qty, sr_id, batch_id, sequence, origin_node,
/// created_at_ns, updated_at_ns.
fn order_line(out: &mut Vec<u8>, o: &t::Order) -> PyResult<()> {
    let mut l = Line(out, false);
    l.uuid(&o.id.0);
    l.uuid(&o.user_id.0);
    l.text(&o.market.base);
    l.text(&o.market.quote);
    l.raw(side_name(o.side));
    l.raw(type_name_of(o.order_type));
    l.raw(status_name(o.status));
    match &o.price {
        Some(p) => l.raw(&decimal_text(p)),
        None => l.null(),
    }
    l.raw(&decimal_text(&o.quantity));
    l.raw(&decimal_text(&o.remaining_qty));
    l.uuid(&o.sr_id.0);
    match o.epoch_id {
        Some(e) => l.int(e.0),
        None => l.null(),
    }
    l.int(o.sequence);
    l.bytea(&o.origin_node.0);
    l.ns(&o.created_at, "created_at")?;
    l.ns(&o.updated_at, "updated_at")?;
    l.end();
    Ok(())
}

/// id, batch_id, market_base, market_quote, taker_order_id, maker_order_id,
/// taker_user_id, maker_user_id, price, quantity, quote_amount, taker_side,
/// matcher_node, executed_at_ns.
fn trade_line(out: &mut Vec<u8>, x: &t::Trade) -> PyResult<()> {
    let mut l = Line(out, false);
    l.uuid(&x.id.0);
    l.int(x.epoch_id.0);
    l.text(&x.market.base);
    l.text(&x.market.quote);
    l.uuid(&x.taker_order_id.0);
    l.uuid(&x.maker_order_id.0);
    l.uuid(&x.taker_user_id.0);
    l.uuid(&x.maker_user_id.0);
    l.raw(&decimal_text(&x.price));
    l.raw(&decimal_text(&x.quantity));
    l.raw(&decimal_text(&x.quote_amount));
    l.raw(side_name(x.taker_side));
    l.bytea(&x.matcher_node.0);
    l.ns(&x.executed_at, "executed_at")?;
    l.end();
    Ok(())
}

/// The text `COPY` data of the orders of `changes` for `tmp_orders`,
/// built without the GIL.
#[pyfunction]
fn pg_copy_orders<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyBytes>> {
    let changes = changes.get();
    let out = py.detach(|| -> PyResult<Vec<u8>> {
        let c = changes.lock();
        let mut out = Vec::with_capacity(c.orders.len() * 320);
        for o in &c.orders {
            order_line(&mut out, o)?;
        }
        Ok(out)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// The text `COPY` data of the trades of `changes` for `tmp_trades`,
/// built without the GIL.
#[pyfunction]
fn pg_copy_trades<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyBytes>> {
    let changes = changes.get();
    let out = py.detach(|| -> PyResult<Vec<u8>> {
        let c = changes.lock();
        let mut out = Vec::with_capacity(c.trades.len() * 360);
        for x in &c.trades {
            trade_line(&mut out, x)?;
        }
        Ok(out)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// The limits of the engine's SQL schema that every append is checked
/// against (`openmatch_aof::store_fit`); `tests/test_schema_limits.py` ties
/// them to the migrated columns.
fn store_limits<'py>(py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    use openmatch_aof::store_fit as fit;
    let d = pyo3::types::PyDict::new(py);
    d.set_item("numeric_scale", fit::NUMERIC_SCALE)?;
    d.set_item("numeric_integer_digits", fit::NUMERIC_INTEGER_DIGITS)?;
    d.set_item("market_len", fit::MARKET_LEN)?;
    d.set_item("asset_len", fit::ASSET_LEN)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("STORE_LIMITS", store_limits(m.py())?)?;
    m.add_function(wrap_pyfunction!(pg_copy_orders, m)?)?;
    m.add_function(wrap_pyfunction!(pg_copy_trades, m)?)?;
    m.add("SQLITE_ORDER_COLUMNS", ORDER_COLUMNS.to_vec())?;
    m.add("SQLITE_TRADE_COLUMNS", TRADE_COLUMNS.to_vec())?;
    m.add_function(wrap_pyfunction!(sqlite_order_rows, m)?)?;
    m.add_function(wrap_pyfunction!(sqlite_trade_rows, m)?)?;
    Ok(())
}
