//! The in-memory engine state (`openmatch_aof::state`) as Python classes:
//! `State`, its entities `Balance` and `Epoch` (orders and trades are the
//! `Order`/`Trade` classes of `model`), `StateChanges` and `Violation`.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use openmatch_aof::journal::Journal;

use openmatch_aof::state as st;
use openmatch_aof::types as t;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::convert::*;
use crate::errors::{frame_error, invalid_type, invalid_value};
use crate::model::{EpochPhase, Operation, Order, Trade};

pyo3::import_exception!(openmatch_persistence.errors, ConsistencyError);
pyo3::import_exception!(openmatch_persistence.errors, OperationRefusedError);

fn hash_of<T: Hash>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// `==`/`!=` by value between two objects of one class; anything else is
/// NotImplemented so Python's fallbacks apply.
fn richcmp<T: PartialEq>(py: Python<'_>, a: &T, b: Option<&T>, op: CompareOp) -> Py<PyAny> {
    let answer = |eq: bool| {
        pyo3::types::PyBool::new(py, eq)
            .to_owned()
            .into_any()
            .unbind()
    };
    match (b, op) {
        (Some(b), CompareOp::Eq) => answer(a == b),
        (Some(b), CompareOp::Ne) => answer(a != b),
        _ => py.NotImplemented(),
    }
}

fn optional<'py, T>(
    obj: Option<&Bound<'py, PyAny>>,
    f: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<T>,
) -> PyResult<Option<T>> {
    match obj {
        Some(o) if !o.is_none() => f(o).map(Some),
        _ => Ok(None),
    }
}

// --- Balance ----------------------------------------------------------------

/// One user's holding of one asset.
#[pyclass(frozen, module = "openmatch_persistence._core")]
#[derive(Clone)]
pub struct Balance {
    pub inner: st::Balance,
}

#[pymethods]
impl Balance {
    #[new]
    #[pyo3(signature = (user_id, asset, available, frozen))]
    fn new(
        user_id: &Bound<'_, PyAny>,
        asset: &Bound<'_, PyAny>,
        available: &Bound<'_, PyAny>,
        frozen: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Ok(Balance {
            inner: st::Balance {
                user_id: t::UserId(uuid_from_py(user_id, "Balance.user_id")?),
                asset: string_from_py(asset, "Balance.asset")?,
                available: decimal_from_py(available, "Balance.available")?,
                frozen: decimal_from_py(frozen, "Balance.frozen")?,
            },
        })
    }
    #[getter]
    fn user_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        uuid_to_py(py, &self.inner.user_id.0)
    }
    #[getter]
    fn asset(&self) -> &str {
        &self.inner.asset
    }
    #[getter]
    fn available<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.available)
    }
    #[getter]
    fn frozen<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decimal_to_py(py, &self.inner.frozen)
    }
    fn __repr__(&self) -> String {
        let b = &self.inner;
        format!(
            "Balance(user_id={}, asset={:?}, available={}, frozen={})",
            b.user_id.0, b.asset, b.available, b.frozen
        )
    }
    fn __hash__(&self) -> u64 {
        hash_of(&self.inner)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny> {
        let py = other.py();
        let other = other.cast::<Balance>().ok();
        richcmp(py, &self.inner, other.as_ref().map(|o| &o.get().inner), op)
    }
}

// --- Epoch ------------------------------------------------------------------

/// One epoch (= batch) of the auction.
#[pyclass(frozen, module = "openmatch_persistence._core")]
#[derive(Clone)]
pub struct Epoch {
    pub inner: st::Epoch,
}

#[pymethods]
impl Epoch {
    #[new]
    #[pyo3(signature = (*, epoch_id, phase, started_at, batch_hash = None, result_hash = None,
                        trade_count = None, completed_at = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        epoch_id: &Bound<'_, PyAny>,
        phase: &Bound<'_, PyAny>,
        started_at: &Bound<'_, PyAny>,
        batch_hash: Option<&Bound<'_, PyAny>>,
        result_hash: Option<&Bound<'_, PyAny>>,
        trade_count: Option<&Bound<'_, PyAny>>,
        completed_at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(Epoch {
            inner: st::Epoch {
                epoch_id: t::EpochId(u64_from_py(epoch_id, "Epoch.epoch_id")?),
                phase: EpochPhase::from_py(phase, "Epoch.phase")?,
                batch_hash: optional(batch_hash, |o| bytes32_from_py(o, "Epoch.batch_hash"))?,
                result_hash: optional(result_hash, |o| bytes32_from_py(o, "Epoch.result_hash"))?,
                trade_count: optional(trade_count, |o| u64_from_py(o, "Epoch.trade_count"))?
                    .unwrap_or(0),
                started_at: datetime_from_py(started_at, "Epoch.started_at")?,
                completed_at: optional(completed_at, |o| {
                    datetime_from_py(o, "Epoch.completed_at")
                })?,
            },
        })
    }
    #[getter]
    fn epoch_id(&self) -> u64 {
        self.inner.epoch_id.0
    }
    #[getter]
    fn phase(&self) -> EpochPhase {
        self.inner.phase.into()
    }
    #[getter]
    fn batch_hash<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.batch_hash.map(|h| PyBytes::new(py, &h))
    }
    #[getter]
    fn result_hash<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.result_hash.map(|h| PyBytes::new(py, &h))
    }
    #[getter]
    fn trade_count(&self) -> u64 {
        self.inner.trade_count
    }
    #[getter]
    fn started_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime_to_py(py, &self.inner.started_at)
    }
    #[getter]
    fn completed_at<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .completed_at
            .as_ref()
            .map(|c| datetime_to_py(py, c))
            .transpose()
    }
    #[getter]
    fn started_at_ns(&self) -> PyResult<i64> {
        datetime_to_ns(&self.inner.started_at, "Epoch.started_at")
    }
    #[getter]
    fn completed_at_ns(&self) -> PyResult<Option<i64>> {
        self.inner
            .completed_at
            .as_ref()
            .map(|c| datetime_to_ns(c, "Epoch.completed_at"))
            .transpose()
    }
    fn __repr__(&self) -> String {
        let e = &self.inner;
        format!(
            "Epoch(epoch_id={}, phase={:?}, trade_count={}, started_at={}, completed_at={})",
            e.epoch_id.0,
            e.phase,
            e.trade_count,
            e.started_at.to_rfc3339(),
            e.completed_at
                .map(|c| c.to_rfc3339())
                .unwrap_or_else(|| "None".into())
        )
    }
    fn __hash__(&self) -> u64 {
        hash_of(&self.inner)
    }
    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny> {
        let py = other.py();
        let other = other.cast::<Epoch>().ok();
        richcmp(py, &self.inner, other.as_ref().map(|o| &o.get().inner), op)
    }
}

// --- Violation --------------------------------------------------------------

/// One broken invariant: `kind` (e.g. `"fill_mismatch"`), the `entity`
/// (`"order"`, `"trade"`, `"balance"`, `"epoch"`) and its `entity_id`
/// (a UUID, `(user_id, asset)` or an epoch number), and the AOF `position`
/// of the operation that broke it.
#[pyclass(frozen, module = "openmatch_persistence._core")]
pub struct Violation {
    pub(crate) inner: st::Violation,
}

#[pymethods]
impl Violation {
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.name()
    }
    #[getter]
    fn entity(&self) -> &'static str {
        self.inner.entity.kind()
    }
    #[getter]
    fn entity_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        entity_id_to_py(py, &self.inner.entity)
    }
    #[getter]
    fn position(&self) -> u64 {
        self.inner.position
    }
    /// What is wrong, in words.
    #[getter]
    fn detail(&self) -> &str {
        &self.inner.detail
    }
    fn __str__(&self) -> String {
        self.inner.to_string()
    }
    fn __repr__(&self) -> String {
        format!(
            "Violation(kind={:?}, entity={:?}, position={}, detail={:?})",
            self.inner.kind.name(),
            self.inner.entity.to_string(),
            self.inner.position,
            self.inner.detail
        )
    }
}

fn entity_id_to_py<'py>(py: Python<'py>, e: &st::EntityRef) -> PyResult<Bound<'py, PyAny>> {
    Ok(match e {
        st::EntityRef::Order(id) => uuid_to_py(py, &id.0)?,
        st::EntityRef::Trade(id) => uuid_to_py(py, &id.0)?,
        st::EntityRef::Balance(u, a) => {
            PyTuple::new(py, [uuid_to_py(py, &u.0)?, a.into_pyobject(py)?.into_any()])?.into_any()
        }
        st::EntityRef::Epoch(id) => id.0.into_pyobject(py)?.into_any(),
    })
}

/// `ConsistencyError` for these violations (at least one): the message
/// names the first and how many there are; `violations` lists them all.
fn consistency_error(py: Python<'_>, violations: Vec<st::Violation>) -> PyErr {
    let n = violations.len();
    let mut msg = match violations.first() {
        Some(v) => v.to_string(),
        None => "inconsistent state".to_string(),
    };
    if n > 1 {
        msg.push_str(&format!(" (and {} more violations)", n - 1));
    }
    let build = || -> PyResult<PyErr> {
        let list = PyList::empty(py);
        for v in violations {
            list.append(Violation { inner: v })?;
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("violations", list)?;
        let cls = py.get_type::<ConsistencyError>();
        Ok(PyErr::from_value(cls.call((msg.clone(),), Some(&kwargs))?))
    };
    build().unwrap_or_else(|e| e)
}

// --- StateChanges -----------------------------------------------------------

/// The entities changed since the previous `State.take_changes()`, each
/// once, as their current values: `orders`, `balances`, `epochs` sorted by
/// key, `trades` in the order they were applied (orders and epochs that
/// left the hot state come with their final row); `position` is the AOF
/// position of the last applied operation, which the changes cover;
/// `clock_ns` and `closed_epochs_through` are the state's logical clock and
/// highest closed epoch there (the database keeps them with its checkpoint).
///
/// The rows stay Rust values until a list is asked for, so a flusher that
/// folds takes together (`absorb`) and hands them to a store's row builder
/// never makes a Python object per row it merges.
#[pyclass(frozen, module = "openmatch_persistence._core")]
pub struct StateChanges {
    inner: Mutex<st::Changes>,
}

impl StateChanges {
    pub(crate) fn new(changes: st::Changes) -> Self {
        StateChanges {
            inner: Mutex::new(changes),
        }
    }

    /// The changes, locked. Nothing under the lock can panic halfway (it
    /// reads, clones or merges), so a poisoned lock is used as it is.
    ///
    /// Deadlock rule: a thread holding this lock never needs the GIL (no
    /// Python object is made under it), since a thread that holds the GIL
    /// may be waiting for the lock.
    pub(crate) fn lock(&self) -> MutexGuard<'_, st::Changes> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `other`, refused when it is this set: locking both would deadlock.
    fn other<'a>(&self, other: &'a Bound<'_, StateChanges>, what: &str) -> PyResult<&'a Self> {
        let other = other.get();
        if std::ptr::eq(other, self) {
            return Err(invalid_value(format!("a change set cannot {what}")));
        }
        Ok(other)
    }
}

#[pymethods]
impl StateChanges {
    /// Changes made of rows (by default none, at position 0: a set to
    /// `absorb` takes into): each key once, its last row in the lists
    /// winning; sorted as a take's are.
    #[new]
    #[pyo3(signature = (orders = None, trades = None, balances = None, epochs = None, position = 0))]
    fn from_rows(
        orders: Option<&Bound<'_, PyList>>,
        trades: Option<&Bound<'_, PyList>>,
        balances: Option<&Bound<'_, PyList>>,
        epochs: Option<&Bound<'_, PyList>>,
        position: u64,
    ) -> PyResult<Self> {
        let mut c = st::Changes {
            position,
            ..st::Changes::default()
        };
        let mut keyed_orders = BTreeMap::new();
        if let Some(list) = orders {
            each(
                list,
                "orders",
                |o: &Order| &o.inner,
                |o| {
                    keyed_orders.insert(o.id, o.clone());
                    Ok(())
                },
            )?;
        }
        c.orders = keyed_orders.into_values().collect();
        if let Some(list) = trades {
            each(
                list,
                "trades",
                |x: &Trade| &x.inner,
                |x| {
                    c.trades.push(x.clone());
                    Ok(())
                },
            )?;
        }
        let mut keyed_balances = BTreeMap::new();
        if let Some(list) = balances {
            each(
                list,
                "balances",
                |b: &Balance| &b.inner,
                |b| {
                    keyed_balances.insert((b.user_id, b.asset.clone()), b.clone());
                    Ok(())
                },
            )?;
        }
        c.balances = keyed_balances.into_values().collect();
        let mut keyed_epochs = BTreeMap::new();
        if let Some(list) = epochs {
            each(
                list,
                "epochs",
                |e: &Epoch| &e.inner,
                |e| {
                    keyed_epochs.insert(e.epoch_id, e.clone());
                    Ok(())
                },
            )?;
        }
        c.epochs = keyed_epochs.into_values().collect();
        Ok(StateChanges::new(c))
    }
    #[getter]
    fn orders<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v = self.lock().orders.clone();
        orders_list(py, v)
    }
    #[getter]
    fn trades<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v = self.lock().trades.clone();
        trades_list(py, v)
    }
    #[getter]
    fn balances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v = self.lock().balances.clone();
        balances_list(py, v)
    }
    #[getter]
    fn epochs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v = self.lock().epochs.clone();
        epochs_list(py, v)
    }
    #[getter]
    fn position(&self) -> u64 {
        self.lock().position
    }
    #[getter]
    fn clock_ns(&self) -> PyResult<i64> {
        datetime_to_ns(&self.lock().clock, "clock")
    }
    #[getter]
    fn closed_epochs_through(&self) -> Option<u64> {
        self.lock().closed_through.map(|e| e.0)
    }
    /// `(orders, trades, balances, epochs)`: how many of each changed.
    fn counts(&self) -> (usize, usize, usize, usize) {
        let c = self.lock();
        (
            c.orders.len(),
            c.trades.len(),
            c.balances.len(),
            c.epochs.len(),
        )
    }
    /// Folds in `newer`, changes taken after these: where both hold a row
    /// of one key, `newer`'s wins; the trades of both are kept, these
    /// first; position, clock and closed epochs become the later side's.
    /// `newer` is left as it was.
    fn absorb(&self, py: Python<'_>, newer: &Bound<'_, StateChanges>) -> PyResult<()> {
        let newer = self.other(newer, "absorb itself")?;
        let taken = newer.lock().clone();
        py.detach(|| self.lock().absorb(taken));
        Ok(())
    }
    /// Moves every change of these into `target`, which takes them as
    /// newer (see `absorb`); these are left empty, at position 0. One call,
    /// so that no exception raised by a Python signal handler can land
    /// between the two halves: the changes are here or there, never lost.
    fn drain_into(&self, py: Python<'_>, target: &Bound<'_, StateChanges>) -> PyResult<()> {
        let target = self.other(target, "drain into itself")?;
        let moved = std::mem::take(&mut *self.lock());
        py.detach(|| target.lock().absorb(moved));
        Ok(())
    }
    /// Folds in `older`, changes taken before these (a batch that failed
    /// to write, put back): where both hold a row of one key, these win;
    /// `older`'s trades come first; position, clock and closed epochs stay
    /// the later side's. `older` is left empty. One call, as `drain_into`.
    fn absorb_older(&self, py: Python<'_>, older: &Bound<'_, StateChanges>) -> PyResult<()> {
        let older = self.other(older, "absorb itself")?;
        let mut merged = std::mem::take(&mut *older.lock());
        py.detach(|| {
            let mut mine = self.lock();
            merged.absorb(std::mem::take(&mut *mine));
            *mine = merged;
        });
        Ok(())
    }
    /// How many entities changed.
    fn __len__(&self) -> usize {
        self.lock().len()
    }
    fn __repr__(&self) -> String {
        let c = self.lock();
        format!(
            "StateChanges(orders={}, trades={}, balances={}, epochs={}, position={})",
            c.orders.len(),
            c.trades.len(),
            c.balances.len(),
            c.epochs.len(),
            c.position
        )
    }
}

// --- State ------------------------------------------------------------------

/// The engine's state in memory, built by applying AOF operations in order.
///
/// Either a state of its own, or the read-only view of a live journal's
/// state (`Persistence.state`): each call on a view takes the journal's
/// lock and waits, without the GIL, until everything it shows is
/// acknowledged (write-ahead).
#[pyclass(module = "openmatch_persistence._core")]
pub struct State {
    pub(crate) inner: Held,
}

/// What a `State` object holds. (One `State` per Python object, so the
/// size of the owned variant costs nothing worth a box.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Held {
    Owned(st::State),
    Live(Arc<Journal>),
}

impl State {
    pub(crate) fn owned(state: st::State) -> Self {
        State {
            inner: Held::Owned(state),
        }
    }

    pub(crate) fn live(journal: Arc<Journal>) -> Self {
        State {
            inner: Held::Live(journal),
        }
    }

    /// Runs `f` on the state; for a live view, as the journal's reader.
    fn with<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&st::State) -> R + Send) -> PyResult<R> {
        match &self.inner {
            Held::Owned(s) => Ok(f(s)),
            Held::Live(j) => py
                .detach(|| j.read(f))
                .map_err(|e| crate::journal::journal_error(py, e)),
        }
    }

    /// The state to change; a live view refuses (the journal applies).
    pub(crate) fn owned_mut(&mut self) -> PyResult<&mut st::State> {
        match &mut self.inner {
            Held::Owned(s) => Ok(s),
            Held::Live(_) => Err(invalid_value(
                "this State is the read-only view of a journal's state: append through the journal",
            )),
        }
    }
}

fn orders_list<'py>(
    py: Python<'py>,
    v: impl IntoIterator<Item = t::Order>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, v.into_iter().map(|inner| Order { inner }))
}
fn trades_list<'py>(
    py: Python<'py>,
    v: impl IntoIterator<Item = t::Trade>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, v.into_iter().map(|inner| Trade { inner }))
}
fn balances_list<'py>(
    py: Python<'py>,
    v: impl IntoIterator<Item = st::Balance>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, v.into_iter().map(|inner| Balance { inner }))
}
fn epochs_list<'py>(
    py: Python<'py>,
    v: impl IntoIterator<Item = st::Epoch>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, v.into_iter().map(|inner| Epoch { inner }))
}

fn position_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<u64> {
    u64_from_py(obj, field)
}

/// Every item of an iterable, converted; the first bad one fails the call.
fn collect<T>(
    items: &Bound<'_, PyAny>,
    what: &str,
    mut f: impl FnMut(&Bound<'_, PyAny>, &str) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().unwrap_or(0));
    for (i, item) in items
        .try_iter()
        .map_err(|_| invalid_type(format!("{what}: expected an iterable")))?
        .enumerate()
    {
        out.push(f(&item?, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

#[pymethods]
impl State {
    /// An empty state. `track_changes=False` keeps no rows for
    /// `take_changes()` (what leaves the hot state is dropped): for a replay
    /// that only checks a log, whose memory must not grow with it.
    #[new]
    #[pyo3(signature = (*, track_changes = true))]
    fn new(track_changes: bool) -> Self {
        let s = st::State::new();
        State::owned(if track_changes {
            s
        } else {
            s.without_change_tracking()
        })
    }

    /// Applies one operation; its `position` is the AOF position just past
    /// its frame (docs/recovery.md). An operation that would break an
    /// invariant is recorded as a violation and skipped (`try_apply`
    /// refuses it instead).
    fn apply(&mut self, op: &Bound<'_, PyAny>, position: &Bound<'_, PyAny>) -> PyResult<()> {
        let op = Operation::from_py(op)?;
        let position = position_from_py(position, "position")?;
        self.owned_mut()?.apply_owned(op, position);
        Ok(())
    }

    /// Applies one operation, or raises `OperationRefusedError` (naming the
    /// kind, the entity and the position) and changes nothing: the rule
    /// the journal applies before every append and recovery on replay.
    fn try_apply(&mut self, op: &Bound<'_, PyAny>, position: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = op.py();
        let op = Operation::from_py(op)?;
        let position = position_from_py(position, "position")?;
        self.owned_mut()?
            .try_apply_owned(op, position)
            .map_err(|v| refused_error(py, v, None))
    }

    /// Applies `(operation, position)` pairs in order; returns how many.
    /// All or nothing: a bad item fails the call before anything is applied.
    fn apply_many(&mut self, items: &Bound<'_, PyAny>) -> PyResult<usize> {
        let ops = collect(items, "apply_many", |item, field| {
            let pair = item.cast::<PyTuple>().map_err(|_| {
                invalid_type(format!(
                    "{field}: expected an (operation, position) tuple, got {}",
                    type_name(item)
                ))
            })?;
            if pair.len() != 2 {
                return Err(invalid_value(format!(
                    "{field}: expected an (operation, position) pair, got {} items",
                    pair.len()
                )));
            }
            let op = Operation::from_py(&pair.get_item(0)?)?;
            let position = position_from_py(&pair.get_item(1)?, &format!("{field} position"))?;
            Ok((op, position))
        })?;
        let n = ops.len();
        let inner = self.owned_mut()?;
        for (op, position) in ops {
            inner.apply_owned(op, position);
        }
        Ok(n)
    }

    /// Decodes `data` (whole frames, the first starting at AOF position
    /// `base_position`) and applies every operation as `apply` does, each
    /// at the position just past its frame, without a Python object per
    /// operation. All or nothing for frames: a bad frame raises its
    /// `FrameError` (offset = the AOF position where it starts) and nothing
    /// is applied. Returns how many operations were applied.
    #[pyo3(signature = (data, base_position = 0, *, max_payload = openmatch_aof::DEFAULT_MAX_PAYLOAD_LEN))]
    fn apply_frames(
        &mut self,
        py: Python<'_>,
        data: PyBackedBytes,
        base_position: u64,
        max_payload: u32,
    ) -> PyResult<usize> {
        let bytes: &[u8] = &data;
        let inner = self.owned_mut()?;
        py.detach(|| inner.apply_frames(bytes, base_position, max_payload))
            .map_err(|e| frame_error(py, &e, None))
    }

    /// SHA-256 of the state's content, as hex: equal content, equal digest.
    fn digest(&self, py: Python<'_>) -> PyResult<String> {
        let d = self.with(py, |s| s.digest())?;
        Ok(d.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Raises `ConsistencyError` when an invariant is broken.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        let v = self.with(py, |s| s.violations())?;
        if v.is_empty() {
            Ok(())
        } else {
            Err(consistency_error(py, v))
        }
    }

    /// Every broken invariant, by position.
    fn violations(&self, py: Python<'_>) -> PyResult<Vec<Violation>> {
        let v = self.with(py, |s| s.violations())?;
        Ok(v.into_iter().map(|inner| Violation { inner }).collect())
    }

    /// Apply-time violations past the first 1024, counted but not kept.
    #[getter]
    fn violations_dropped(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |s| s.violations_dropped())
    }

    /// The AOF position just past the last applied operation; 0 before any.
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |s| s.position())
    }
    #[getter]
    fn order_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |s| s.order_count())
    }
    /// Ids of terminal orders and applied trades kept for the duplicate
    /// checks (the id window, docs/state.md).
    #[getter]
    fn retired_id_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |s| s.retired_id_count())
    }
    /// The highest epoch that left the hot state (closed), or None.
    #[getter]
    fn closed_epochs_through(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        self.with(py, |s| s.closed_through().map(|e| e.0))
    }
    /// The logical clock, in nanoseconds since the Unix epoch.
    #[getter]
    fn clock_ns(&self, py: Python<'_>) -> PyResult<i64> {
        let clock = self.with(py, |s| s.clock())?;
        datetime_to_ns(&clock, "clock")
    }
    /// `"order"` or `"trade"` when `id` is a retired order's or trade's id
    /// (inside the id window), else None.
    fn retired(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<Option<&'static str>> {
        let id = uuid_from_py(id, "id")?;
        let kind = self.with(py, |s| s.retired(id))?;
        Ok(kind.map(|k| match k {
            st::RetiredKind::Order => "order",
            st::RetiredKind::Trade => "trade",
        }))
    }
    #[getter]
    fn balance_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |s| s.balance_count())
    }
    #[getter]
    fn epoch_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |s| s.epoch_count())
    }
    /// True when something changed since the last `take_changes()`.
    #[getter]
    fn has_changes(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |s| s.has_changes())
    }

    fn order(&self, py: Python<'_>, order_id: &Bound<'_, PyAny>) -> PyResult<Option<Order>> {
        let id = t::OrderId(uuid_from_py(order_id, "order_id")?);
        let o = self.with(py, |s| s.order(&id).cloned())?;
        Ok(o.map(|inner| Order { inner }))
    }
    fn balance(
        &self,
        py: Python<'_>,
        user_id: &Bound<'_, PyAny>,
        asset: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Balance>> {
        let user = t::UserId(uuid_from_py(user_id, "user_id")?);
        let asset = string_from_py(asset, "asset")?;
        let b = self.with(py, |s| s.balance(user, &asset).cloned())?;
        Ok(b.map(|inner| Balance { inner }))
    }
    fn epoch(&self, py: Python<'_>, epoch_id: &Bound<'_, PyAny>) -> PyResult<Option<Epoch>> {
        let id = t::EpochId(u64_from_py(epoch_id, "epoch_id")?);
        let e = self.with(py, |s| s.epoch(id).cloned())?;
        Ok(e.map(|inner| Epoch { inner }))
    }

    /// The open orders, sorted by id (terminal ones are in the database).
    fn orders<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v: Vec<t::Order> =
            self.with(py, |s| s.orders_sorted().into_iter().cloned().collect())?;
        orders_list(py, v)
    }
    /// All balances, sorted by (user_id, asset).
    fn balances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v: Vec<st::Balance> =
            self.with(py, |s| s.balances_sorted().into_iter().cloned().collect())?;
        balances_list(py, v)
    }
    /// The held epochs (not finalized, and the last finalized), by id.
    fn epochs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let v: Vec<st::Epoch> =
            self.with(py, |s| s.epochs_sorted().into_iter().cloned().collect())?;
        epochs_list(py, v)
    }

    /// The entities changed since the previous call; resets the tracking.
    fn take_changes(&mut self) -> PyResult<StateChanges> {
        let c = self.owned_mut()?.take_changes();
        Ok(StateChanges::new(c))
    }

    /// As `take_changes`, folded into `target` as newer changes in the same
    /// call (see `StateChanges.drain_into`): what a flusher takes is in
    /// the state or in its set, whatever exception a signal raises.
    /// Returns how many entities were taken.
    fn take_changes_into(&mut self, target: &Bound<'_, StateChanges>) -> PyResult<usize> {
        let c = self.owned_mut()?.take_changes();
        let taken = c.len();
        target.get().lock().absorb(c);
        Ok(taken)
    }

    /// A state from entities: exported ones (`orders()`, `balances()`,
    /// `epochs()` of another state) or a history (rows of a store). Open
    /// orders are held; terminal orders and the trades give their ids to
    /// the id window; epochs past the kept finalized ones are closed.
    /// `clock_ns` defaults to the latest timestamp of the entities.
    /// `retired_order_ids` / `retired_trade_ids`: more ids for the window
    /// (a store's rows recovery gives ids rather than whole rows). The
    /// state starts with no pending changes. Raises `InvalidValueError`
    /// for a key given twice.
    #[staticmethod]
    #[pyo3(signature = (orders, trades, balances, epochs, position, *, clock_ns = None,
                        closed_epochs_through = None, retired_order_ids = None,
                        retired_trade_ids = None))]
    #[allow(clippy::too_many_arguments)]
    fn from_snapshot(
        py: Python<'_>,
        orders: &Bound<'_, PyAny>,
        trades: &Bound<'_, PyAny>,
        balances: &Bound<'_, PyAny>,
        epochs: &Bound<'_, PyAny>,
        position: &Bound<'_, PyAny>,
        clock_ns: Option<&Bound<'_, PyAny>>,
        closed_epochs_through: Option<&Bound<'_, PyAny>>,
        retired_order_ids: Option<&Bound<'_, PyAny>>,
        retired_trade_ids: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<State> {
        let clock = clock_ns
            .map(|c| datetime_from_py(c, "clock_ns"))
            .transpose()?;
        let closed = closed_epochs_through
            .map(|e| u64_from_py(e, "closed_epochs_through").map(t::EpochId))
            .transpose()?;
        let ids = |items: Option<&Bound<'_, PyAny>>, what: &str| match items {
            Some(items) => collect(items, what, uuid_from_py),
            None => Ok(Vec::new()),
        };
        let retired_orders = ids(retired_order_ids, "retired_order_ids")?;
        let retired_trades = ids(retired_trade_ids, "retired_trade_ids")?;
        let mut snapshot = st::Snapshot::from_history(
            collect(orders, "orders", Order::from_py)?,
            collect(trades, "trades", Trade::from_py)?,
            collect(balances, "balances", |o, f| match o.cast::<Balance>() {
                Ok(b) => Ok(b.get().inner.clone()),
                Err(_) => Err(invalid_type(format!(
                    "{f}: expected Balance, got {}",
                    type_name(o)
                ))),
            })?,
            collect(epochs, "epochs", |o, f| match o.cast::<Epoch>() {
                Ok(e) => Ok(e.get().inner.clone()),
                Err(_) => Err(invalid_type(format!(
                    "{f}: expected Epoch, got {}",
                    type_name(o)
                ))),
            })?,
            position_from_py(position, "position")?,
            clock,
            closed,
        );
        snapshot
            .retired_orders
            .extend(retired_orders.into_iter().map(t::OrderId));
        snapshot
            .retired_trades
            .extend(retired_trades.into_iter().map(t::TradeId));
        let inner = py
            .detach(|| st::State::from_snapshot(snapshot))
            .map_err(|e| invalid_value(e.to_string()))?;
        Ok(State::owned(inner))
    }

    /// The whole state as one checksummed image (`openmatch_aof::state_image`),
    /// for the database to keep beside its rows.
    fn to_image<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let snapshot = self.with(py, |s| s.export())?;
        let image = py.detach(|| openmatch_aof::state_image::encode_image(&snapshot));
        Ok(PyBytes::new(py, &image))
    }

    /// The state of an image made by `to_image`. Raises `InvalidValueError`
    /// for a damaged image (bad magic, version, checksum or body).
    /// `track_changes=False`: a copy nobody takes changes from (see `State()`).
    #[staticmethod]
    #[pyo3(signature = (data, *, track_changes = true))]
    fn from_image(py: Python<'_>, data: PyBackedBytes, track_changes: bool) -> PyResult<State> {
        let bytes: &[u8] = &data;
        let inner = py
            .detach(|| {
                openmatch_aof::state_image::decode_image(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|snap| st::State::from_snapshot(snap).map_err(|e| e.to_string()))
            })
            .map_err(invalid_value)?;
        Ok(State::owned(if track_changes {
            inner
        } else {
            inner.without_change_tracking()
        }))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |s| {
            format!(
                "State(position={}, open orders={}, retired ids={}, balances={}, epochs={})",
                s.position(),
                s.order_count(),
                s.retired_id_count(),
                s.balance_count(),
                s.epoch_count()
            )
        })
    }
}

/// `OperationRefusedError` for an operation the state's rule refuses;
/// `index` is its place in an appended batch.
pub(crate) fn refused_error(py: Python<'_>, v: st::Violation, index: Option<usize>) -> PyErr {
    let msg = match index {
        Some(i) => format!("operation {i} of the batch is refused, nothing was appended: {v}"),
        None => format!("refused: {v}"),
    };
    let build = || -> PyResult<PyErr> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("violations", PyList::new(py, [Violation { inner: v }])?)?;
        kwargs.set_item("index", index)?;
        let cls = py.get_type::<OperationRefusedError>();
        Ok(PyErr::from_value(cls.call((msg,), Some(&kwargs))?))
    };
    build().unwrap_or_else(|e| e)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ID_WINDOW_MS", st::ID_WINDOW_MS)?;
    m.add("FINALIZED_EPOCHS_KEPT", st::FINALIZED_EPOCHS_KEPT)?;
    m.add_class::<Balance>()?;
    m.add_class::<Epoch>()?;
    m.add_class::<Violation>()?;
    m.add_class::<StateChanges>()?;
    m.add_class::<State>()?;
    Ok(())
}
