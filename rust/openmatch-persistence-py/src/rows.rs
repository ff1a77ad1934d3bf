//! The stores' rows of orders and trades, built in Rust.
//!
//! Building a row in Python reads every attribute of an `Order` through the
//! binding (a `UUID` and a `Decimal` object each) and formats it again: 20
//! to 25 us a row, most of a flush. Here rows are made straight from the
//! Rust values, without the GIL, so that a flush leaves the appending
//! threads the interpreter:
//!
//! * SQLite: JSON arrays of plain texts and numbers (`JsonRows`), in the
//!   column order `SQLITE_ORDER_COLUMNS` / `SQLITE_TRADE_COLUMNS`, which
//!   `store/sqlite.py` builds its statements from, so the layout has one
//!   owner;
//! * PostgreSQL: the lines of a text `COPY` into `tmp_orders` / `tmp_trades`
//!   (`store/postgres.py` declares those tables): UUIDs as hex, decimals as
//!   their exact text (which keeps the scale), bytes as `\\x` hex, text
//!   escaped for COPY.

use chrono::{DateTime, Utc};
use openmatch_aof::state as st;
use openmatch_aof::store_fit;
use openmatch_aof::types as t;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use rust_decimal::Decimal;

use crate::convert::datetime_to_ns;
use crate::errors::invalid_value;
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

/// Rows of one kind for SQLite as one JSON text and their nodes.
///
/// Handing SQLite a flush as `executemany` tuples cost the appending
/// threads most of their time: the tuples are built under the GIL (about
/// 4 us a row), and every row's step hands the GIL over and takes it back.
/// Here a chunk of rows is one JSON array of arrays, built without the GIL,
/// that one `INSERT ... SELECT ... FROM json_each(?1)` reads in a single
/// step (which `sqlite3` runs without the GIL). Each row's array holds the
/// columns in `SQLITE_*_COLUMNS` order; the node column (SQLite has no
/// `unhex` before 3.41) is `null` there and its 32 bytes are at `32 * i` of
/// the second value, for the chunk's `i`th row.
struct JsonRows {
    json: Vec<u8>,
    nodes: Vec<u8>,
    first_field: bool,
}

/// Rows per statement: bounds the texts SQLite is handed (about 3.5 MB of
/// JSON), far below its 1 GB limit on one value, whatever a flush holds.
const JSON_ROWS_PER_CHUNK: usize = 10_000;

impl JsonRows {
    fn new(rows: usize) -> Self {
        let mut json = Vec::with_capacity(rows * 360 + 2);
        json.push(b'[');
        JsonRows {
            json,
            nodes: Vec::with_capacity(rows * 32),
            first_field: true,
        }
    }

    fn begin_row(&mut self) {
        if self.json.len() > 1 {
            self.json.push(b',');
        }
        self.json.push(b'[');
        self.first_field = true;
    }

    fn sep(&mut self) -> &mut Vec<u8> {
        if !self.first_field {
            self.json.push(b',');
        }
        self.first_field = false;
        &mut self.json
    }

    fn text(&mut self, s: &str) {
        let out = self.sep();
        serde_json::to_writer(out, s).expect("a str always serializes to JSON");
    }

    /// Text that came from outside (a market's symbols), which may hold
    /// what SQLite's JSON cannot give back: it reads `\u0000` as the end of
    /// the text. The journal refuses a NUL at append (`store_fit`, whose
    /// rule this is); a row that skipped it is refused here, never stored
    /// cut short.
    fn outside_text(&mut self, s: &str, what: impl Fn() -> String) -> PyResult<()> {
        store_fit::text(s, None, &what).map_err(invalid_value)?;
        self.text(s);
        Ok(())
    }

    fn opt_text(&mut self, s: Option<String>) {
        match s {
            Some(s) => self.text(&s),
            None => self.null(),
        }
    }

    fn int(&mut self, n: impl Into<i64>) {
        let out = self.sep();
        std::io::Write::write_fmt(out, format_args!("{}", n.into()))
            .expect("writing to a Vec never fails");
    }

    fn opt_int(&mut self, n: Option<impl Into<i64>>) {
        match n {
            Some(n) => self.int(n),
            None => self.null(),
        }
    }

    /// An id or sequence for an INTEGER column. SQLite's JSON reads a
    /// number past `i64` as a float, which would store another value; the
    /// journal refuses one at append (`store_fit`, whose rule this is), and
    /// a row that skipped it is refused here.
    fn bigint(&mut self, n: u64, what: impl Fn() -> String) -> PyResult<()> {
        store_fit::bigint(n, &what).map_err(invalid_value)?;
        self.int(n as i64); // in range: store_fit::bigint passed
        Ok(())
    }

    fn null(&mut self) {
        self.sep().extend_from_slice(b"null");
    }

    /// The node column: `null` in the JSON, its bytes beside it.
    fn node(&mut self, node: &t::NodeId) {
        self.null();
        self.nodes.extend_from_slice(&node.0);
    }

    fn end_row(&mut self) {
        self.json.push(b']');
    }

    fn finish(mut self) -> (Vec<u8>, Vec<u8>) {
        self.json.push(b']');
        (self.json, self.nodes)
    }
}

/// One order's row, in `ORDER_COLUMNS` order.
fn order_json(r: &mut JsonRows, o: &t::Order) -> PyResult<()> {
    r.begin_row();
    r.text(&uuid_text(&o.id.0));
    r.text(&uuid_text(&o.user_id.0));
    let market = || format!("order {}: market", o.id.0);
    r.outside_text(&o.market.symbol(), market)?;
    r.text(side_name(o.side));
    r.text(type_name_of(o.order_type));
    r.text(status_name(o.status));
    r.opt_text(o.price.as_ref().map(decimal_text));
    r.text(&decimal_text(&o.quantity));
    r.text(&decimal_text(&o.remaining_qty));
    match o.epoch_id {
        Some(e) => r.bigint(e.0, || format!("order {}: epoch_id (batch_id)", o.id.0))?,
        None => r.null(),
    }
    r.bigint(o.sequence, || format!("order {}: sequence", o.id.0))?;
    r.node(&o.origin_node);
    r.text(&time_text(&o.created_at));
    r.text(&time_text(&o.updated_at));
    r.text(&uuid_text(&o.sr_id.0));
    r.outside_text(&o.market.base, market)?;
    r.outside_text(&o.market.quote, market)?;
    r.opt_int(o.price.map(|p| p.scale()));
    r.int(o.quantity.scale());
    r.int(o.remaining_qty.scale());
    r.int(datetime_to_ns(&o.created_at, "created_at")?);
    r.int(datetime_to_ns(&o.updated_at, "updated_at")?);
    r.end_row();
    Ok(())
}

/// One trade's row, in `TRADE_COLUMNS` order.
fn trade_json(r: &mut JsonRows, x: &t::Trade) -> PyResult<()> {
    r.begin_row();
    r.text(&uuid_text(&x.id.0));
    r.bigint(x.epoch_id.0, || {
        format!("trade {}: epoch_id (batch_id)", x.id.0)
    })?;
    let market = || format!("trade {}: market", x.id.0);
    r.outside_text(&x.market.symbol(), market)?;
    r.text(&uuid_text(&x.taker_order_id.0));
    r.text(&uuid_text(&x.maker_order_id.0));
    r.text(&uuid_text(&x.taker_user_id.0));
    r.text(&uuid_text(&x.maker_user_id.0));
    r.text(&decimal_text(&x.price));
    r.text(&decimal_text(&x.quantity));
    r.text(&decimal_text(&x.quote_amount));
    r.text(side_name(x.taker_side));
    r.node(&x.matcher_node);
    r.text(&time_text(&x.executed_at));
    r.outside_text(&x.market.base, market)?;
    r.outside_text(&x.market.quote, market)?;
    r.int(x.price.scale());
    r.int(x.quantity.scale());
    r.int(x.quote_amount.scale());
    r.int(datetime_to_ns(&x.executed_at, "executed_at")?);
    r.end_row();
    Ok(())
}

/// One balance's row: `user_id`, `asset`, `available`, `frozen` and their
/// scales (the store adds its `updated_at`).
fn balance_json(r: &mut JsonRows, b: &st::Balance) -> PyResult<()> {
    r.begin_row();
    r.text(&uuid_text(&b.user_id.0));
    r.outside_text(&b.asset, || format!("balance {}: asset", b.user_id.0))?;
    r.text(&decimal_text(&b.available));
    r.text(&decimal_text(&b.frozen));
    r.int(b.available.scale());
    r.int(b.frozen.scale());
    r.end_row();
    Ok(())
}

/// The `(json, nodes)` chunks of `items`, built without the GIL.
fn json_chunks<'py, T>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
    items: fn(&st::Changes) -> &[T],
    row: fn(&mut JsonRows, &T) -> PyResult<()>,
) -> PyResult<Bound<'py, PyList>> {
    let changes = changes.get();
    let chunks = py.detach(|| -> PyResult<Vec<_>> {
        let c = changes.lock();
        items(&c)
            .chunks(JSON_ROWS_PER_CHUNK)
            .map(|part| {
                let mut r = JsonRows::new(part.len());
                for item in part {
                    row(&mut r, item)?;
                }
                Ok(r.finish())
            })
            .collect()
    })?;
    let out = PyList::empty(py);
    for (json, nodes) in chunks {
        out.append((PyBytes::new(py, &json), PyBytes::new(py, &nodes)))?;
    }
    Ok(out)
}

/// The SQLite rows of the orders of `changes`: `(json, nodes)` chunks (see
/// `JsonRows`), in `SQLITE_ORDER_COLUMNS` order.
#[pyfunction]
fn sqlite_order_json<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyList>> {
    json_chunks(py, changes, |c| &c.orders, order_json)
}

/// The SQLite rows of the trades of `changes`: `(json, nodes)` chunks (see
/// `JsonRows`), in `SQLITE_TRADE_COLUMNS` order.
#[pyfunction]
fn sqlite_trade_json<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyList>> {
    json_chunks(py, changes, |c| &c.trades, trade_json)
}

/// The SQLite rows of the balances of `changes`: `(json, nodes)` chunks
/// (see `JsonRows`; a balance has no node).
#[pyfunction]
fn sqlite_balance_json<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyList>> {
    json_chunks(py, changes, |c| &c.balances, balance_json)
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

/// user_id, asset, available, frozen.
fn balance_line(out: &mut Vec<u8>, b: &st::Balance) -> PyResult<()> {
    let mut l = Line(out, false);
    l.uuid(&b.user_id.0);
    l.text(&b.asset);
    l.raw(&decimal_text(&b.available));
    l.raw(&decimal_text(&b.frozen));
    l.end();
    Ok(())
}

/// The text `COPY` lines of `items`, built without the GIL.
fn copy_lines<'py, T>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
    items: fn(&st::Changes) -> &[T],
    line: fn(&mut Vec<u8>, &T) -> PyResult<()>,
) -> PyResult<Bound<'py, PyBytes>> {
    let changes = changes.get();
    let out = py.detach(|| -> PyResult<Vec<u8>> {
        let c = changes.lock();
        let items = items(&c);
        let mut out = Vec::with_capacity(items.len() * 320);
        for item in items {
            line(&mut out, item)?;
        }
        Ok(out)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// The text `COPY` data of the orders of `changes` for `tmp_orders`,
/// built without the GIL.
#[pyfunction]
fn pg_copy_orders<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyBytes>> {
    copy_lines(py, changes, |c| &c.orders, order_line)
}

/// The text `COPY` data of the trades of `changes` for `tmp_trades`,
/// built without the GIL.
#[pyfunction]
fn pg_copy_trades<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyBytes>> {
    copy_lines(py, changes, |c| &c.trades, trade_line)
}

/// The text `COPY` data of the balances of `changes` for `tmp_balances`,
/// built without the GIL.
#[pyfunction]
fn pg_copy_balances<'py>(
    py: Python<'py>,
    changes: &Bound<'py, StateChanges>,
) -> PyResult<Bound<'py, PyBytes>> {
    copy_lines(py, changes, |c| &c.balances, balance_line)
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
    m.add_function(wrap_pyfunction!(pg_copy_balances, m)?)?;
    m.add("SQLITE_ORDER_COLUMNS", ORDER_COLUMNS.to_vec())?;
    m.add("SQLITE_TRADE_COLUMNS", TRADE_COLUMNS.to_vec())?;
    m.add("SQLITE_ROWS_PER_STATEMENT", JSON_ROWS_PER_CHUNK)?;
    m.add_function(wrap_pyfunction!(sqlite_order_json, m)?)?;
    m.add_function(wrap_pyfunction!(sqlite_trade_json, m)?)?;
    m.add_function(wrap_pyfunction!(sqlite_balance_json, m)?)?;
    Ok(())
}
