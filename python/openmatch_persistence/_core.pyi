"""Types of the Rust extension module ``openmatch_persistence._core``."""

import datetime
import decimal
import uuid
from collections.abc import Iterable
from typing import ClassVar, Final, final

__version__: Final[str]
DEFAULT_MAX_PAYLOAD_LEN: Final[int]
HEADER_LEN: Final[int]

#: A timestamp argument: a timezone-aware datetime (microseconds) or int
#: nanoseconds since 1970-01-01T00:00:00Z (exact).
TimestampLike = datetime.datetime | int
DecimalLike = decimal.Decimal | int

# --- model -------------------------------------------------------------------

@final
class OrderSide:
    BUY: ClassVar[OrderSide]
    SELL: ClassVar[OrderSide]
    def __int__(self) -> int: ...

@final
class OrderType:
    LIMIT: ClassVar[OrderType]
    MARKET: ClassVar[OrderType]
    CANCEL: ClassVar[OrderType]
    def __int__(self) -> int: ...

@final
class OrderStatus:
    PENDING_ESCROW: ClassVar[OrderStatus]
    ACTIVE: ClassVar[OrderStatus]
    PARTIALLY_FILLED: ClassVar[OrderStatus]
    FILLED: ClassVar[OrderStatus]
    CANCELLED: ClassVar[OrderStatus]
    REJECTED: ClassVar[OrderStatus]
    EXPIRED: ClassVar[OrderStatus]
    def __int__(self) -> int: ...

@final
class EpochPhase:
    COLLECT: ClassVar[EpochPhase]
    SEAL: ClassVar[EpochPhase]
    MATCH: ClassVar[EpochPhase]
    FINALIZE: ClassVar[EpochPhase]
    def __int__(self) -> int: ...

@final
class MarketPair:
    def __init__(self, base: str, quote: str) -> None: ...
    @property
    def base(self) -> str: ...
    @property
    def quote(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    def __hash__(self) -> int: ...

@final
class Order:
    def __init__(
        self,
        *,
        id: uuid.UUID,
        user_id: uuid.UUID,
        market: MarketPair,
        side: OrderSide,
        order_type: OrderType,
        status: OrderStatus,
        price: DecimalLike | None,
        quantity: DecimalLike,
        remaining_qty: DecimalLike,
        sr_id: uuid.UUID,
        epoch_id: int | None,
        origin_node: bytes,
        sequence: int,
        created_at: TimestampLike,
        updated_at: TimestampLike,
    ) -> None: ...
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def market(self) -> MarketPair: ...
    @property
    def side(self) -> OrderSide: ...
    @property
    def order_type(self) -> OrderType: ...
    @property
    def status(self) -> OrderStatus: ...
    @property
    def price(self) -> decimal.Decimal | None: ...
    @property
    def quantity(self) -> decimal.Decimal: ...
    @property
    def remaining_qty(self) -> decimal.Decimal: ...
    @property
    def sr_id(self) -> uuid.UUID: ...
    @property
    def epoch_id(self) -> int | None: ...
    @property
    def origin_node(self) -> bytes: ...
    @property
    def sequence(self) -> int: ...
    @property
    def created_at(self) -> datetime.datetime: ...
    @property
    def updated_at(self) -> datetime.datetime: ...
    @property
    def created_at_ns(self) -> int: ...
    @property
    def updated_at_ns(self) -> int: ...
    def __hash__(self) -> int: ...

@final
class Trade:
    def __init__(
        self,
        *,
        id: uuid.UUID,
        epoch_id: int,
        market: MarketPair,
        taker_order_id: uuid.UUID,
        taker_user_id: uuid.UUID,
        maker_order_id: uuid.UUID,
        maker_user_id: uuid.UUID,
        price: DecimalLike,
        quantity: DecimalLike,
        quote_amount: DecimalLike,
        taker_side: OrderSide,
        matcher_node: bytes,
        executed_at: TimestampLike,
    ) -> None: ...
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def epoch_id(self) -> int: ...
    @property
    def market(self) -> MarketPair: ...
    @property
    def taker_order_id(self) -> uuid.UUID: ...
    @property
    def taker_user_id(self) -> uuid.UUID: ...
    @property
    def maker_order_id(self) -> uuid.UUID: ...
    @property
    def maker_user_id(self) -> uuid.UUID: ...
    @property
    def price(self) -> decimal.Decimal: ...
    @property
    def quantity(self) -> decimal.Decimal: ...
    @property
    def quote_amount(self) -> decimal.Decimal: ...
    @property
    def taker_side(self) -> OrderSide: ...
    @property
    def matcher_node(self) -> bytes: ...
    @property
    def executed_at(self) -> datetime.datetime: ...
    @property
    def executed_at_ns(self) -> int: ...
    def __hash__(self) -> int: ...

class Operation:
    """One AOF record; the base of the six operation classes."""

    @property
    def kind(self) -> str: ...
    def __hash__(self) -> int: ...

@final
class OrderReceived(Operation):
    def __init__(self, order: Order) -> None: ...
    @property
    def order(self) -> Order: ...

@final
class OrderCancelled(Operation):
    def __init__(self, order_id: uuid.UUID) -> None: ...
    @property
    def order_id(self) -> uuid.UUID: ...

@final
class BufferSealed(Operation):
    def __init__(self, batch_id: int, batch_hash: bytes) -> None: ...
    @property
    def batch_id(self) -> int: ...
    @property
    def batch_hash(self) -> bytes: ...

@final
class TradeExecuted(Operation):
    def __init__(self, trade: Trade) -> None: ...
    @property
    def trade(self) -> Trade: ...

@final
class BalanceUpdated(Operation):
    def __init__(
        self, user_id: uuid.UUID, asset: str, available: DecimalLike, frozen: DecimalLike
    ) -> None: ...
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def asset(self) -> str: ...
    @property
    def available(self) -> decimal.Decimal: ...
    @property
    def frozen(self) -> decimal.Decimal: ...

@final
class EpochAdvanced(Operation):
    def __init__(self, epoch_id: int, phase: EpochPhase) -> None: ...
    @property
    def epoch_id(self) -> int: ...
    @property
    def phase(self) -> EpochPhase: ...

# --- codec -------------------------------------------------------------------

def encode(op: Operation) -> bytes: ...
def encode_many(ops: Iterable[Operation]) -> bytes: ...
def decode(data: bytes | bytearray, *, max_payload: int = ...) -> Operation: ...
def decode_all(data: bytes | bytearray, *, max_payload: int = ...) -> list[Operation]: ...
def to_json(op: Operation) -> str: ...
def from_json(text: str) -> Operation: ...
