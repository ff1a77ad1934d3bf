"""Read access to a live state that other threads are applying to.

The Rust ``State`` is not shareable across threads on its own: a reading
method that releases the GIL (``digest``, ``check``) would make a
concurrent ``apply`` fail with "already borrowed", after its operation was
already durable. Every call here takes the owner's state lock, and the
view has no method that changes the state.
"""

from __future__ import annotations

import threading
import uuid

from openmatch_persistence import _core


class StateView:
    def __init__(self, state: _core.State, lock: threading.Lock) -> None:
        self._state = state
        self._lock = lock

    @property
    def position(self) -> int:
        with self._lock:
            return self._state.position

    @property
    def order_count(self) -> int:
        with self._lock:
            return self._state.order_count

    @property
    def trade_count(self) -> int:
        with self._lock:
            return self._state.trade_count

    @property
    def balance_count(self) -> int:
        with self._lock:
            return self._state.balance_count

    @property
    def epoch_count(self) -> int:
        with self._lock:
            return self._state.epoch_count

    def order(self, order_id: uuid.UUID) -> _core.Order | None:
        with self._lock:
            return self._state.order(order_id)

    def trade(self, trade_id: uuid.UUID) -> _core.Trade | None:
        with self._lock:
            return self._state.trade(trade_id)

    def balance(self, user_id: uuid.UUID, asset: str) -> _core.Balance | None:
        with self._lock:
            return self._state.balance(user_id, asset)

    def epoch(self, epoch_id: int) -> _core.Epoch | None:
        with self._lock:
            return self._state.epoch(epoch_id)

    def orders(self) -> list[_core.Order]:
        with self._lock:
            return self._state.orders()

    def trades(self) -> list[_core.Trade]:
        with self._lock:
            return self._state.trades()

    def balances(self) -> list[_core.Balance]:
        with self._lock:
            return self._state.balances()

    def epochs(self) -> list[_core.Epoch]:
        with self._lock:
            return self._state.epochs()

    def digest(self) -> str:
        with self._lock:
            return self._state.digest()

    def check(self) -> None:
        """Raises ``ConsistencyError`` naming the entity and position of the
        first broken invariant."""
        with self._lock:
            self._state.check()

    def violations(self) -> list[_core.Violation]:
        with self._lock:
            return self._state.violations()
