//! The engine's types as immutable Python classes.
//!
//! Each class holds the Rust value itself, so that encoding a Python object
//! is a clone plus `bincode`, and decoding builds one small object; the
//! Python faces (`UUID`, `Decimal`, `datetime`) are made only when a field is
//! read. Timestamps keep their nanoseconds in the Rust value: `datetime`
//! shows microseconds, the `*_ns` fields give the exact value.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use openmatch_aof::types as t;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert::*;
use crate::errors::invalid_type;

fn hash_of<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Equality by value between two objects of one class; other types compare
/// unequal (NotImplemented) so that Python's fallbacks still apply.
macro_rules! value_richcmp {
    ($self:ident, $other:ident, $op:ident, $ty:ty, $field:ident) => {{
        let py = $other.py();
        let Ok(other) = $other.cast::<$ty>() else {
            return Ok(py.NotImplemented());
        };
        let eq = $self.$field == other.get().$field;
        Ok(match $op {
            CompareOp::Eq => eq.into_pyobject(py)?.to_owned().into_any().unbind(),
            CompareOp::Ne => (!eq).into_pyobject(py)?.to_owned().into_any().unbind(),
            _ => py.NotImplemented(),
        })
    }};
}

// --- enums ------------------------------------------------------------------

macro_rules! py_enum {
    ($name:ident, $rust:path, $( $variant:ident = $py:literal ),+ $(,)?) => {
        #[pyclass(eq, eq_int, frozen, hash, module = "openmatch_persistence._core")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum $name {
            $( #[pyo3(name = $py)] $variant ),+
        }

        impl From<$name> for $rust {
            fn from(v: $name) -> Self {
                match v { $( $name::$variant => <$rust>::$variant ),+ }
            }
        }

        impl From<$rust> for $name {
            fn from(v: $rust) -> Self {
                match v { $( <$rust>::$variant => $name::$variant ),+ }
            }
        }

        impl $name {
            pub fn from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<$rust> {
                match obj.cast::<$name>() {
                    Ok(v) => Ok((*v.get()).into()),
                    Err(_) => Err(invalid_type(format!(
                        "{field}: expected {}, got {}", stringify!($name), type_name(obj)
                    ))),
                }
            }
        }
    };
}

py_enum!(OrderSide, t::OrderSide, Buy = "BUY", Sell = "SELL");
py_enum!(
    OrderType,
    t::OrderType,
    Limit = "LIMIT",
    Market = "MARKET",
    Cancel = "CANCEL"
);
py_enum!(
    OrderStatus,
    t::OrderStatus,
    PendingEscrow = "PENDING_ESCROW",
    Active = "ACTIVE",
    PartiallyFilled = "PARTIALLY_FILLED",
    Filled = "FILLED",
    Cancelled = "CANCELLED",
    Rejected = "REJECTED",
    Expired = "EXPIRED",
);
py_enum!(
    EpochPhase,
    t::EpochPhase,
    Collect = "COLLECT",
    Seal = "SEAL",
    Match = "MATCH",
    Finalize = "FINALIZE",
);

// --- MarketPair -------------------------------------------------------------

/// A market, `base/quote`.
#[pyclass(frozen, module = "openmatch_persistence._core")]
#[derive(Clone)]
pub struct MarketPair {
    pub inner: t::MarketPair,
}

#[pymethods]
impl MarketPair {
    #[new]
    fn new(base: &Bound<'_, PyAny>, quote: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(MarketPair {
            inner: t::MarketPair {
                base: string_from_py(base, "MarketPair.base")?,
                quote: string_from_py(quote, "MarketPair.quote")?,
            },
        })
    }
    #[getter]
    fn base(&self) -> &str {
        &self.inner.base
    }
    #[getter]
    fn quote(&self) -> &str {
        &self.inner.quote
    }
    /// The engine's display form, `BASE/QUOTE`.
    #[getter]
    fn symbol(&self) -> String {
        self.inner.symbol()
    }
    fn __repr__(&self) -> String {
        format!("MarketPair({:?}, {:?})", self.inner.base, self.inner.quote)
    }
    fn __hash__(&self) -> u64 {
        hash_of(&self.inner)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        value_richcmp!(self, other, op, MarketPair, inner)
    }
}

impl MarketPair {
    pub fn from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<t::MarketPair> {
        match obj.cast::<MarketPair>() {
            Ok(m) => Ok(m.get().inner.clone()),
            Err(_) => Err(invalid_type(format!(
                "{field}: expected MarketPair, got {}",
                type_name(obj)
            ))),
        }
    }
}

// --- Order ------------------------------------------------------------------

/// An order as the engine holds it.
#[pyclass(frozen, module = "openmatch_persistence._core")]
#[derive(Clone)]
pub struct Order {
    pub inner: t::Order,
}

#[pymethods]
impl Order {
    #[new]
    #[pyo3(signature = (*, id, user_id, market, side, order_type, status, price, quantity,
                        remaining_qty, sr_id, epoch_id, origin_node, sequence, created_at,
                        updated_at))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: &Bound<'_, PyAny>,
        user_id: &Bound<'_, PyAny>,
        market: &Bound<'_, PyAny>,
        side: &Bound<'_, PyAny>,
        order_type: &Bound<'_, PyAny>,
        status: &Bound<'_, PyAny>,
        price: &Bound<'_, PyAny>,
        quantity: &Bound<'_, PyAny>,
        remaining_qty: &Bound<'_, PyAny>,
        sr_id: &Bound<'_, PyAny>,
        epoch_id: &Bound<'_, PyAny>,
        origin_node: &Bound<'_, PyAny>,
        sequence: &Bound<'_, PyAny>,
        created_at: &Bound<'_, PyAny>,
        updated_at: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(Order {
            inner: t::Order {
                id: t::OrderId(uuid_from_py(id, "Order.id")?),
                user_id: t::UserId(uuid_from_py(user_id, "Order.user_id")?),
                market: MarketPair::from_py(market, "Order.market")?,
                side: OrderSide::from_py(side, "Order.side")?,
                order_type: OrderType::from_py(order_type, "Order.order_type")?,
                status: OrderStatus::from_py(status, "Order.status")?,
                price: if price.is_none() {
                    None
                } else {
                    Some(decimal_from_py(price, "Order.price")?)
                },
                quantity: decimal_from_py(quantity, "Order.quantity")?,
                remaining_qty: decimal_from_py(remaining_qty, "Order.remaining_qty")?,
                sr_id: t::SpendRightId(uuid_from_py(sr_id, "Order.sr_id")?),
                epoch_id: if epoch_id.is_none() {
                    None
                } else {
                    Some(t::EpochId(u64_from_py(epoch_id, "Order.epoch_id")?))
                },
                origin_node: t::NodeId(bytes32_from_py(origin_node, "Order.origin_node")?),
                sequence: u64_from_py(sequence, "Order.sequence")?,
                created_at: datetime_from_py(created_at, "Order.created_at")?,
                updated_at: datetime_from_py(updated_at, "Order.updated_at")?,
            },
        })
    }

    #[getter]
    fn id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.id.0)
    }
    #[getter]
    fn user_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.user_id.0)
    }
    #[getter]
    fn market(&self) -> MarketPair {
        MarketPair {
            inner: self.inner.market.clone(),
        }
    }
    #[getter]
    fn side(&self) -> OrderSide {
        self.inner.side.into()
    }
    #[getter]
    fn order_type(&self) -> OrderType {
        self.inner.order_type.into()
    }
    #[getter]
    fn status(&self) -> OrderStatus {
        self.inner.status.into()
    }
    #[getter]
    fn price<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .price
            .as_ref()
            .map(|p| decimal_to_py(py, p))
            .transpose()
    }
    #[getter]
    fn quantity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.quantity)
    }
    #[getter]
    fn remaining_qty<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.remaining_qty)
    }
    #[getter]
    fn sr_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.sr_id.0)
    }
    #[getter]
    fn epoch_id(&self) -> Option<u64> {
        self.inner.epoch_id.map(|e| e.0)
    }
    #[getter]
    fn origin_node<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.origin_node.0)
    }
    #[getter]
    fn sequence(&self) -> u64 {
        self.inner.sequence
    }
    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_to_py(py, &self.inner.created_at)
    }
    #[getter]
    fn updated_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_to_py(py, &self.inner.updated_at)
    }
    #[getter]
    fn created_at_ns(&self) -> PyResult<i64> {
        datetime_to_ns(&self.inner.created_at, "Order.created_at")
    }
    #[getter]
    fn updated_at_ns(&self) -> PyResult<i64> {
        datetime_to_ns(&self.inner.updated_at, "Order.updated_at")
    }
    fn __repr__(&self) -> String {
        let o = &self.inner;
        format!(
            "Order(id={}, market={:?}, side={:?}, order_type={:?}, status={:?}, price={}, quantity={}, remaining_qty={}, epoch_id={}, sequence={})",
            o.id.0,
            o.market.symbol(),
            o.side,
            o.order_type,
            o.status,
            o.price.map(|p| format!("'{p}'")).unwrap_or_else(|| "None".into()),
            o.quantity,
            o.remaining_qty,
            o.epoch_id.map(|e| e.0.to_string()).unwrap_or_else(|| "None".into()),
            o.sequence
        )
    }
    fn __hash__(&self) -> u64 {
        hash_of(&self.inner)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        value_richcmp!(self, other, op, Order, inner)
    }
}

impl Order {
    pub fn from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<t::Order> {
        match obj.cast::<Order>() {
            Ok(o) => Ok(o.get().inner.clone()),
            Err(_) => Err(invalid_type(format!(
                "{field}: expected Order, got {}",
                type_name(obj)
            ))),
        }
    }
}

// --- Trade ------------------------------------------------------------------

/// A trade between a taker and a maker order.
#[pyclass(frozen, module = "openmatch_persistence._core")]
#[derive(Clone)]
pub struct Trade {
    pub inner: t::Trade,
}

#[pymethods]
impl Trade {
    #[new]
    #[pyo3(signature = (*, id, epoch_id, market, taker_order_id, taker_user_id, maker_order_id,
                        maker_user_id, price, quantity, quote_amount, taker_side, matcher_node,
                        executed_at))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: &Bound<'_, PyAny>,
        epoch_id: &Bound<'_, PyAny>,
        market: &Bound<'_, PyAny>,
        taker_order_id: &Bound<'_, PyAny>,
        taker_user_id: &Bound<'_, PyAny>,
        maker_order_id: &Bound<'_, PyAny>,
        maker_user_id: &Bound<'_, PyAny>,
        price: &Bound<'_, PyAny>,
        quantity: &Bound<'_, PyAny>,
        quote_amount: &Bound<'_, PyAny>,
        taker_side: &Bound<'_, PyAny>,
        matcher_node: &Bound<'_, PyAny>,
        executed_at: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(Trade {
            inner: t::Trade {
                id: t::TradeId(uuid_from_py(id, "Trade.id")?),
                epoch_id: t::EpochId(u64_from_py(epoch_id, "Trade.epoch_id")?),
                market: MarketPair::from_py(market, "Trade.market")?,
                taker_order_id: t::OrderId(uuid_from_py(taker_order_id, "Trade.taker_order_id")?),
                taker_user_id: t::UserId(uuid_from_py(taker_user_id, "Trade.taker_user_id")?),
                maker_order_id: t::OrderId(uuid_from_py(maker_order_id, "Trade.maker_order_id")?),
                maker_user_id: t::UserId(uuid_from_py(maker_user_id, "Trade.maker_user_id")?),
                price: decimal_from_py(price, "Trade.price")?,
                quantity: decimal_from_py(quantity, "Trade.quantity")?,
                quote_amount: decimal_from_py(quote_amount, "Trade.quote_amount")?,
                taker_side: OrderSide::from_py(taker_side, "Trade.taker_side")?,
                matcher_node: t::NodeId(bytes32_from_py(matcher_node, "Trade.matcher_node")?),
                executed_at: datetime_from_py(executed_at, "Trade.executed_at")?,
            },
        })
    }

    #[getter]
    fn id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.id.0)
    }
    #[getter]
    fn epoch_id(&self) -> u64 {
        self.inner.epoch_id.0
    }
    #[getter]
    fn market(&self) -> MarketPair {
        MarketPair {
            inner: self.inner.market.clone(),
        }
    }
    #[getter]
    fn taker_order_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.taker_order_id.0)
    }
    #[getter]
    fn taker_user_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.taker_user_id.0)
    }
    #[getter]
    fn maker_order_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.maker_order_id.0)
    }
    #[getter]
    fn maker_user_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.maker_user_id.0)
    }
    #[getter]
    fn price<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.price)
    }
    #[getter]
    fn quantity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.quantity)
    }
    #[getter]
    fn quote_amount<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.quote_amount)
    }
    #[getter]
    fn taker_side(&self) -> OrderSide {
        self.inner.taker_side.into()
    }
    #[getter]
    fn matcher_node<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.matcher_node.0)
    }
    #[getter]
    fn executed_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_to_py(py, &self.inner.executed_at)
    }
    #[getter]
    fn executed_at_ns(&self) -> PyResult<i64> {
        datetime_to_ns(&self.inner.executed_at, "Trade.executed_at")
    }
    fn __repr__(&self) -> String {
        let x = &self.inner;
        format!(
            "Trade(id={}, epoch_id={}, market={:?}, taker_order_id={}, maker_order_id={}, price={}, quantity={}, quote_amount={}, taker_side={:?})",
            x.id.0,
            x.epoch_id.0,
            x.market.symbol(),
            x.taker_order_id.0,
            x.maker_order_id.0,
            x.price,
            x.quantity,
            x.quote_amount,
            x.taker_side
        )
    }
    fn __hash__(&self) -> u64 {
        hash_of(&self.inner)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        value_richcmp!(self, other, op, Trade, inner)
    }
}

impl Trade {
    pub fn from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<t::Trade> {
        match obj.cast::<Trade>() {
            Ok(x) => Ok(x.get().inner.clone()),
            Err(_) => Err(invalid_type(format!(
                "{field}: expected Trade, got {}",
                type_name(obj)
            ))),
        }
    }
}

// --- operations -------------------------------------------------------------

/// The base of the six operation classes: one AOF record. Compare, hash,
/// `kind`; encode with `openmatch_persistence.encode`.
#[pyclass(frozen, subclass, module = "openmatch_persistence._core")]
pub struct Operation {
    pub op: t::AofOperation,
}

#[pymethods]
impl Operation {
    /// The variant's name: `"OrderReceived"`, `"TradeExecuted"`, ...
    #[getter]
    fn kind(&self) -> &'static str {
        self.op.kind()
    }
    fn __hash__(&self) -> u64 {
        hash_of(&self.op)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        value_richcmp!(self, other, op, Operation, op)
    }
    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let json =
            serde_json::to_string(&slf.get().op).unwrap_or_else(|e| format!("<unprintable: {e}>"));
        Ok(format!("<{} {json}>", slf.get().op.kind()))
    }
    /// Pickles as its frame bytes.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let frame = openmatch_aof::encode_frame(&slf.get().op)
            .map_err(|e| crate::errors::invalid_value(e.to_string()))?;
        let decode = py
            .import("openmatch_persistence._core")?
            .getattr("decode")?;
        PyTuple::new(
            py,
            [
                decode,
                PyTuple::new(py, [PyBytes::new(py, &frame)])?.into_any(),
            ],
        )
    }
}

impl Operation {
    /// The Rust operation behind any operation object.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<t::AofOperation> {
        Ok(Self::checked(obj)?.get().op.clone())
    }

    /// A handle on an operation object, through which its operation can be
    /// read without the GIL (the class is frozen).
    pub fn handle(obj: &Bound<'_, PyAny>) -> PyResult<Py<Operation>> {
        Ok(Self::checked(obj)?.clone().unbind())
    }

    /// A copy of the operation behind a handle; needs no GIL.
    pub fn of(handle: &Py<Operation>) -> t::AofOperation {
        handle.get().op.clone()
    }

    fn checked<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, Operation>> {
        obj.cast::<Operation>().map_err(|_| {
            invalid_type(format!(
                "expected an operation (OrderReceived, OrderCancelled, BufferSealed, TradeExecuted, BalanceUpdated, EpochAdvanced), got {}",
                type_name(obj)
            ))
        })
    }

    /// The Python object of the operation's own class.
    pub fn to_py(py: Python<'_>, op: t::AofOperation) -> PyResult<Bound<'_, PyAny>> {
        let kind = op.kind_index();
        let init = PyClassInitializer::from(Operation { op });
        Ok(match kind {
            0 => Bound::new(py, init.add_subclass(OrderReceived))?.into_any(),
            1 => Bound::new(py, init.add_subclass(OrderCancelled))?.into_any(),
            2 => Bound::new(py, init.add_subclass(BufferSealed))?.into_any(),
            3 => Bound::new(py, init.add_subclass(TradeExecuted))?.into_any(),
            4 => Bound::new(py, init.add_subclass(BalanceUpdated))?.into_any(),
            _ => Bound::new(py, init.add_subclass(EpochAdvanced))?.into_any(),
        })
    }
}

fn init<T: pyo3::PyClass<BaseType = Operation>>(
    op: t::AofOperation,
    sub: T,
) -> PyClassInitializer<T> {
    PyClassInitializer::from(Operation { op }).add_subclass(sub)
}

/// The inner value of an operation object whose variant is known by its class.
macro_rules! inner {
    ($slf:ident, $pat:pat => $out:expr) => {{
        match &$slf.as_super().get().op {
            $pat => $out,
            _ => unreachable!("an operation class holds its own variant"),
        }
    }};
}

/// An order entered the engine.
#[pyclass(frozen, extends = Operation, module = "openmatch_persistence._core")]
pub struct OrderReceived;

#[pymethods]
impl OrderReceived {
    #[new]
    fn new(order: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let order = Order::from_py(order, "OrderReceived.order")?;
        Ok(init(t::AofOperation::OrderReceived(order), OrderReceived))
    }
    #[getter]
    fn order(slf: &Bound<'_, Self>) -> Order {
        inner!(slf, t::AofOperation::OrderReceived(o) => Order { inner: o.clone() })
    }
}

/// An order was cancelled.
#[pyclass(frozen, extends = Operation, module = "openmatch_persistence._core")]
pub struct OrderCancelled;

#[pymethods]
impl OrderCancelled {
    #[new]
    fn new(order_id: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let id = t::OrderId(uuid_from_py(order_id, "OrderCancelled.order_id")?);
        Ok(init(t::AofOperation::OrderCancelled(id), OrderCancelled))
    }
    #[getter]
    fn order_id<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        inner!(slf, t::AofOperation::OrderCancelled(id) => uuid_to_py(slf.py(), &id.0))
    }
}

/// A batch's buffer was sealed with its hash.
#[pyclass(frozen, extends = Operation, module = "openmatch_persistence._core")]
pub struct BufferSealed;

#[pymethods]
impl BufferSealed {
    #[new]
    fn new(
        batch_id: &Bound<'_, PyAny>,
        batch_hash: &Bound<'_, PyAny>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let id = t::EpochId(u64_from_py(batch_id, "BufferSealed.batch_id")?);
        let hash = bytes32_from_py(batch_hash, "BufferSealed.batch_hash")?;
        Ok(init(t::AofOperation::BufferSealed(id, hash), BufferSealed))
    }
    #[getter]
    fn batch_id(slf: &Bound<'_, Self>) -> u64 {
        inner!(slf, t::AofOperation::BufferSealed(id, _) => id.0)
    }
    #[getter]
    fn batch_hash<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyBytes> {
        inner!(slf, t::AofOperation::BufferSealed(_, h) => PyBytes::new(slf.py(), h))
    }
}

/// A trade was executed.
#[pyclass(frozen, extends = Operation, module = "openmatch_persistence._core")]
pub struct TradeExecuted;

#[pymethods]
impl TradeExecuted {
    #[new]
    fn new(trade: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let trade = Trade::from_py(trade, "TradeExecuted.trade")?;
        Ok(init(t::AofOperation::TradeExecuted(trade), TradeExecuted))
    }
    #[getter]
    fn trade(slf: &Bound<'_, Self>) -> Trade {
        inner!(slf, t::AofOperation::TradeExecuted(x) => Trade { inner: x.clone() })
    }
}

/// A user's balance of one asset was set.
#[pyclass(frozen, extends = Operation, module = "openmatch_persistence._core")]
pub struct BalanceUpdated;

#[pymethods]
impl BalanceUpdated {
    #[new]
    fn new(
        user_id: &Bound<'_, PyAny>,
        asset: &Bound<'_, PyAny>,
        available: &Bound<'_, PyAny>,
        frozen: &Bound<'_, PyAny>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let op = t::AofOperation::BalanceUpdated(
            t::UserId(uuid_from_py(user_id, "BalanceUpdated.user_id")?),
            string_from_py(asset, "BalanceUpdated.asset")?,
            decimal_from_py(available, "BalanceUpdated.available")?,
            decimal_from_py(frozen, "BalanceUpdated.frozen")?,
        );
        Ok(init(op, BalanceUpdated))
    }
    #[getter]
    fn user_id<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        inner!(slf, t::AofOperation::BalanceUpdated(u, ..) => uuid_to_py(slf.py(), &u.0))
    }
    #[getter]
    fn asset(slf: &Bound<'_, Self>) -> String {
        inner!(slf, t::AofOperation::BalanceUpdated(_, a, ..) => a.clone())
    }
    #[getter]
    fn available<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        inner!(slf, t::AofOperation::BalanceUpdated(_, _, a, _) => decimal_to_py(slf.py(), a))
    }
    #[getter]
    fn frozen<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        inner!(slf, t::AofOperation::BalanceUpdated(_, _, _, f) => decimal_to_py(slf.py(), f))
    }
}

/// The epoch moved to a phase.
#[pyclass(frozen, extends = Operation, module = "openmatch_persistence._core")]
pub struct EpochAdvanced;

#[pymethods]
impl EpochAdvanced {
    #[new]
    fn new(
        epoch_id: &Bound<'_, PyAny>,
        phase: &Bound<'_, PyAny>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let op = t::AofOperation::EpochAdvanced(
            t::EpochId(u64_from_py(epoch_id, "EpochAdvanced.epoch_id")?),
            EpochPhase::from_py(phase, "EpochAdvanced.phase")?,
        );
        Ok(init(op, EpochAdvanced))
    }
    #[getter]
    fn epoch_id(slf: &Bound<'_, Self>) -> u64 {
        inner!(slf, t::AofOperation::EpochAdvanced(e, _) => e.0)
    }
    #[getter]
    fn phase(slf: &Bound<'_, Self>) -> EpochPhase {
        inner!(slf, t::AofOperation::EpochAdvanced(_, p) => (*p).into())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OrderSide>()?;
    m.add_class::<OrderType>()?;
    m.add_class::<OrderStatus>()?;
    m.add_class::<EpochPhase>()?;
    m.add_class::<MarketPair>()?;
    m.add_class::<Order>()?;
    m.add_class::<Trade>()?;
    m.add_class::<Operation>()?;
    m.add_class::<OrderReceived>()?;
    m.add_class::<OrderCancelled>()?;
    m.add_class::<BufferSealed>()?;
    m.add_class::<TradeExecuted>()?;
    m.add_class::<BalanceUpdated>()?;
    m.add_class::<EpochAdvanced>()?;
    Ok(())
}
