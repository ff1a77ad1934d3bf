"""A realistic, deterministic OpenMatch workload: users with balances, epochs
cycling COLLECT -> SEAL -> MATCH -> FINALIZE, orders, cancels, and trades
that reduce orders and move balances.

The same seed gives the same operations, so a test can compare a recovered
state with the state of a full replay. Every stream it makes passes the
state's consistency check and fits the database schema (at most 8 decimal
places, short asset and market names). ``Workload.continuing`` makes a
stream that goes on from a recovered state and still passes the check on
top of it.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from openmatch_persistence import _core

MARKETS = (("BTC", "USDT", Decimal("50000")), ("ETH", "USDT", Decimal("3000")))
START_NS = 1_772_228_125_000_000_000  # 2026-02-27T21:35:25Z
EIGHT_PLACES = Decimal("0.00000001")


class StateLike(Protocol):
    """What ``Resume.of`` reads: a ``_core.State`` (``Persistence.state`` is one)."""

    @property
    def position(self) -> int: ...
    @property
    def clock_ns(self) -> int: ...
    def orders(self) -> list[_core.Order]: ...
    def balances(self) -> list[_core.Balance]: ...
    def epochs(self) -> list[_core.Epoch]: ...
    def digest(self) -> str: ...


@dataclass(frozen=True)
class Resume:
    """Where a continuing workload starts: the facts of a recovered state
    that the new operations must not contradict."""

    position: int
    digest: str
    order_count: int
    #: The highest epoch id, finished or not (0 if none).
    last_epoch: int
    #: The newest order or trade timestamp (the state's logical clock).
    clock_ns: int
    #: The highest order sequence number.
    sequence: int
    #: (user, asset) -> (available, frozen).
    balances: Mapping[tuple[uuid.UUID, str], tuple[Decimal, Decimal]]
    #: Order and sr ids of the open orders, which the stream must not reuse
    #: (the ids that left the state are older than any new one: new ids
    #: are UUIDv7 of timestamps after the state's clock).
    used_ids: frozenset[uuid.UUID]

    @property
    def is_empty(self) -> bool:
        return not (self.order_count or self.balances or self.last_epoch or self.used_ids)

    @classmethod
    def of(cls, state: StateLike) -> Resume:
        orders = state.orders()
        epochs = state.epochs()
        return cls(
            position=state.position,
            digest=state.digest(),
            order_count=len(orders),
            # A state that closed epochs holds only the recent ones; the
            # closed ones are below every held one.
            last_epoch=max((e.epoch_id for e in epochs), default=0),
            clock_ns=state.clock_ns,
            sequence=max((o.sequence for o in orders), default=0),
            balances={(b.user_id, b.asset): (b.available, b.frozen) for b in state.balances()},
            used_ids=frozenset([*(o.id for o in orders), *(o.sr_id for o in orders)]),
        )


@dataclass
class _Open:
    order: _core.Order
    remaining: Decimal


@dataclass
class Workload:
    """Yields operations; ``orders_per_epoch`` orders between epoch changes."""

    seed: int = 0
    users: int = 50
    orders_per_epoch: int = 40
    cancel_ratio: float = 0.1
    #: The largest step of the logical clock between two timestamps, in ns
    #: (steps are uniform in 1..max_tick_ns). Larger steps make the id
    #: window (10 minutes of ids, docs/state.md) fill in fewer operations.
    max_tick_ns: int = 2_000_000
    node: bytes = bytes(32)
    #: Epoch ids continue after this one (a recovered state's newest).
    first_epoch: int = 0
    #: A state to continue (see ``continuing``); None starts from scratch.
    resume: Resume | None = None
    _rng: random.Random = field(init=False, repr=False)
    _clock: int = field(init=False, default=START_NS)
    _epoch: int = field(init=False, default=0)
    _sequence: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._balances: dict[tuple[uuid.UUID, str], Decimal] = {}
        self._frozen: dict[tuple[uuid.UUID, str], Decimal] = {}
        self._used: frozenset[uuid.UUID] = frozenset()
        resume = None if self.resume is None or self.resume.is_empty else self.resume
        if resume is None:
            # Nothing to continue: the fresh stream, unchanged, so that a
            # seed keeps giving the operations it always gave.
            self._rng = random.Random(self.seed)
        else:
            # The same seed on another state must give other ids, or a second
            # run would repeat the first run's orders; the same seed on the
            # same state must give the same stream.
            key = f"{self.seed}/{resume.position}/{resume.digest}".encode()
            self._rng = random.Random(hashlib.sha256(key).digest())
            self._used = resume.used_ids
            self._clock = max(self._clock, resume.clock_ns)
            self._sequence = resume.sequence
            for k, (available, frozen) in resume.balances.items():
                self._balances[k] = available
                self._frozen[k] = frozen
        # Users carried over from a state keep their balances: funding them
        # again would reset what earlier trades moved.
        self._fund = not self._balances
        if self._balances:
            self._user_ids = sorted({user for user, _ in self._balances})
        else:
            self._user_ids = [
                uuid.UUID(int=self._rng.getrandbits(128) | (4 << 76)) for _ in range(self.users)
            ]
        self._epoch = max(self.first_epoch, resume.last_epoch if resume else 0)

    @classmethod
    def continuing(cls, state: StateLike, *, seed: int = 0, **options: Any) -> Workload:
        """A workload that goes on from ``state``: new order and trade ids,
        epochs after its last one, its users with their balances (funding
        only when it has none), timestamps after its logical clock."""
        return cls(seed=seed, resume=Resume.of(state), **options)

    def _uuid(self) -> uuid.UUID:
        """A UUIDv7 (RFC 9562) of the workload's clock, as the engine makes
        its ids: the state's id window (docs/state.md) reads their time."""
        ms = self._clock // 1_000_000
        while True:
            rand = self._rng.getrandbits(74)
            value = uuid.UUID(
                int=(ms << 80)
                | (0x7 << 76)
                | ((rand >> 62) << 64)
                | (0b10 << 62)
                | (rand & ((1 << 62) - 1))
            )
            # Random 74-bit tails do not collide in practice; the check
            # makes the promise of fresh ids hold regardless.
            if value not in self._used:
                return value

    def _tick(self) -> int:
        # Nanosecond steps, so that timestamps carry all nine digits.
        self._clock += self._rng.randint(1, self.max_tick_ns)
        return self._clock

    def _balance(self, user: uuid.UUID, asset: str, delta: Decimal) -> _core.BalanceUpdated:
        key = (user, asset)
        value = self._balances.get(key, Decimal(0)) + delta
        assert value >= 0, "the workload never overdraws"
        self._balances[key] = value
        return _core.BalanceUpdated(user, asset, value, self._frozen.get(key, Decimal("0")))

    def __iter__(self) -> Iterator[_core.Operation]:
        for user in self._user_ids if self._fund else []:
            yield self._balance(user, "USDT", Decimal("10000000"))
            for base, _, _ in MARKETS:
                yield self._balance(user, base, Decimal("1000"))
        while True:
            yield from self._epoch_ops()

    def _epoch_ops(self) -> Iterator[_core.Operation]:
        self._epoch += 1
        epoch = self._epoch
        yield _core.EpochAdvanced(epoch, _core.EpochPhase.COLLECT)
        book: list[_Open] = []
        for _ in range(self.orders_per_epoch):
            order = self._order(epoch)
            book.append(_Open(order, order.quantity))
            yield _core.OrderReceived(order)
            if book and self._rng.random() < self.cancel_ratio:
                victim = book.pop(self._rng.randrange(len(book)))
                yield _core.OrderCancelled(victim.order.id)
        digest = hashlib.sha256(b"".join(o.order.id.bytes for o in book)).digest()
        yield _core.BufferSealed(epoch, digest)
        yield _core.EpochAdvanced(epoch, _core.EpochPhase.SEAL)
        yield _core.EpochAdvanced(epoch, _core.EpochPhase.MATCH)
        yield from self._match(epoch, book)
        # What the auction did not fill is cancelled when its batch ends,
        # so the open book (the hot state) stays the size of one batch.
        for left in book:
            if left.remaining > 0:
                yield _core.OrderCancelled(left.order.id)
        yield _core.EpochAdvanced(epoch, _core.EpochPhase.FINALIZE)

    def _order(self, epoch: int) -> _core.Order:
        base, quote, mid = MARKETS[self._rng.randrange(len(MARKETS))]
        side = _core.OrderSide.BUY if self._rng.random() < 0.5 else _core.OrderSide.SELL
        price = (mid * Decimal(self._rng.uniform(0.98, 1.02))).quantize(Decimal("0.01"))
        quantity = Decimal(self._rng.randint(1, 500_000)) * EIGHT_PLACES * 1000
        self._sequence += 1
        at = self._tick()
        return _core.Order(
            id=self._uuid(),
            user_id=self._rng.choice(self._user_ids),
            market=_core.MarketPair(base, quote),
            side=side,
            order_type=_core.OrderType.LIMIT,
            status=_core.OrderStatus.ACTIVE,
            price=price,
            quantity=quantity,
            remaining_qty=quantity,
            sr_id=self._uuid(),
            epoch_id=epoch,
            origin_node=self.node,
            sequence=self._sequence,
            created_at=at,
            updated_at=at,
        )

    def _match(self, epoch: int, book: list[_Open]) -> Iterator[_core.Operation]:
        """Crosses buys and sells of each market at the sell's price."""
        for base, quote, _ in MARKETS:
            symbol = f"{base}/{quote}"
            buys = sorted(
                (o for o in book if o.order.market.symbol == symbol and _is_buy(o)),
                key=lambda o: -(o.order.price or 0),
            )
            sells = sorted(
                (o for o in book if o.order.market.symbol == symbol and not _is_buy(o)),
                key=lambda o: o.order.price or 0,
            )
            while buys and sells and (buys[0].order.price or 0) >= (sells[0].order.price or 0):
                buy, sell = buys[0], sells[0]
                quantity = min(buy.remaining, sell.remaining)
                price = sell.order.price or Decimal(0)
                quote_amount = (price * quantity).quantize(EIGHT_PLACES)
                taker, maker = (buy, sell) if self._rng.random() < 0.5 else (sell, buy)
                yield _core.TradeExecuted(
                    _core.Trade(
                        id=self._uuid(),
                        epoch_id=epoch,
                        market=_core.MarketPair(base, quote),
                        taker_order_id=taker.order.id,
                        taker_user_id=taker.order.user_id,
                        maker_order_id=maker.order.id,
                        maker_user_id=maker.order.user_id,
                        price=price,
                        quantity=quantity,
                        quote_amount=quote_amount,
                        taker_side=taker.order.side,
                        matcher_node=self.node,
                        executed_at=self._tick(),
                    )
                )
                buyer, seller = buy.order.user_id, sell.order.user_id
                if self._balances.get((buyer, quote), Decimal(0)) >= quote_amount and (
                    self._balances.get((seller, base), Decimal(0)) >= quantity
                ):
                    yield self._balance(buyer, quote, -quote_amount)
                    yield self._balance(seller, quote, quote_amount)
                    yield self._balance(seller, base, -quantity)
                    yield self._balance(buyer, base, quantity)
                buy.remaining -= quantity
                sell.remaining -= quantity
                if buy.remaining == 0:
                    buys.pop(0)
                if sell.remaining == 0:
                    sells.pop(0)


def _is_buy(o: _Open) -> bool:
    return o.order.side == _core.OrderSide.BUY


def take(n: int, seed: int = 0, **options: object) -> list[_core.Operation]:
    """The first ``n`` operations of the workload with this seed."""
    ops = []
    for op in Workload(seed=seed, **options):  # type: ignore[arg-type]
        ops.append(op)
        if len(ops) == n:
            break
    return ops
