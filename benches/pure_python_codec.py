"""A pure-Python implementation of the AOF frame format, for comparison.

The baseline that the Rust core's codec and scanner benchmarks measure
against: the same bytes (``/work/shared/aof-format.md`` sections 1-3) with
only the standard library: ``struct``, ``zlib.crc32``, ``uuid``, ``decimal``,
``datetime``. Self-contained on purpose (it imports nothing from
``openmatch_persistence``) so that it is an independent second reading of
the spec, and any benchmark can import it by path.

API
---
``encode_frame(op) -> bytes``
    One frame for one operation tuple.
``decode_frames(data) -> list[op]``
    Every frame of a buffer of whole frames, in order. Raises
    :class:`PureFrameError` (with ``offset`` and ``cause``) on the first bad
    frame, as the Rust decoder does.

An operation is a tuple whose first item is the variant's name::

    ("OrderReceived", Order(...))
    ("OrderCancelled", order_id: UUID)
    ("BufferSealed", batch_id: int, batch_hash: bytes)       # 32 bytes
    ("TradeExecuted", Trade(...))
    ("BalanceUpdated", user_id: UUID, asset: str, available: Decimal, frozen: Decimal)
    ("EpochAdvanced", epoch_id: int, phase: str)             # "Collect", "Seal", ...

Enums are their variant names as ``str``. A timestamp decodes to a UTC
``datetime`` when it is exact to the microsecond, else to ``int``
nanoseconds since the epoch (``datetime`` cannot hold nanoseconds, and the
format must round-trip exactly); ``encode_frame`` accepts both.
"""

from __future__ import annotations

import builtins
import datetime
import struct
import uuid
import zlib
from decimal import Decimal
from typing import Any, NamedTuple, Union

Timestamp = Union[datetime.datetime, int]

HEADER = struct.Struct("<II")
MAX_PAYLOAD_LEN = 16 * 1024 * 1024

ORDER_SIDES = ("Buy", "Sell")
ORDER_TYPES = ("Limit", "Market", "Cancel")
ORDER_STATUSES = (
    "PendingEscrow",
    "Active",
    "PartiallyFilled",
    "Filled",
    "Cancelled",
    "Rejected",
    "Expired",
)
EPOCH_PHASES = ("Collect", "Seal", "Match", "Finalize")
KINDS = (
    "OrderReceived",
    "OrderCancelled",
    "BufferSealed",
    "TradeExecuted",
    "BalanceUpdated",
    "EpochAdvanced",
)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Order(NamedTuple):
    id: uuid.UUID
    user_id: uuid.UUID
    base: str
    quote: str
    side: str
    order_type: str
    status: str
    price: Decimal | None
    quantity: Decimal
    remaining_qty: Decimal
    sr_id: uuid.UUID
    epoch_id: int | None
    origin_node: bytes
    sequence: int
    created_at: Timestamp
    updated_at: Timestamp


class Trade(NamedTuple):
    id: uuid.UUID
    epoch_id: int
    base: str
    quote: str
    taker_order_id: uuid.UUID
    taker_user_id: uuid.UUID
    maker_order_id: uuid.UUID
    maker_user_id: uuid.UUID
    price: Decimal
    quantity: Decimal
    quote_amount: Decimal
    taker_side: str
    matcher_node: bytes
    executed_at: Timestamp


class PureFrameError(ValueError):
    """A bad frame at ``offset``; ``cause`` as the Rust core names it."""

    def __init__(self, offset: int, cause: str, detail: str = "") -> None:
        super().__init__(f"bad frame at byte offset {offset}: {cause} {detail}".rstrip())
        self.offset = offset
        self.cause = cause


# --- encoding -----------------------------------------------------------------


def _str(out: bytearray, s: str) -> None:
    b = s.encode()
    out += _U64.pack(len(b))
    out += b


def _uuid(out: bytearray, u: uuid.UUID) -> None:
    out += _U64.pack(16)
    out += u.bytes


def _decimal(out: bytearray, d: Decimal) -> None:
    # rust_decimal's canonical text: plain notation, scale kept.
    _str(out, format(d, "f"))


def _timestamp(out: bytearray, t: Timestamp) -> None:
    if isinstance(t, datetime.datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime")
        delta = t - _EPOCH
        ns = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    else:
        ns = t
    seconds, frac = divmod(ns, 10**9)
    whole = _EPOCH + datetime.timedelta(seconds=seconds)
    text = whole.strftime("%Y-%m-%dT%H:%M:%S")
    # The shortest of 0, 3, 6 or 9 digits that is exact.
    if frac:
        if frac % 10**6 == 0:
            text += f".{frac // 10**6:03d}"
        elif frac % 10**3 == 0:
            text += f".{frac // 10**3:06d}"
        else:
            text += f".{frac:09d}"
    _str(out, text + "Z")


def _order(out: bytearray, o: Order) -> None:
    _uuid(out, o.id)
    _uuid(out, o.user_id)
    _str(out, o.base)
    _str(out, o.quote)
    out += _U32.pack(ORDER_SIDES.index(o.side))
    out += _U32.pack(ORDER_TYPES.index(o.order_type))
    out += _U32.pack(ORDER_STATUSES.index(o.status))
    if o.price is None:
        out += b"\x00"
    else:
        out += b"\x01"
        _decimal(out, o.price)
    _decimal(out, o.quantity)
    _decimal(out, o.remaining_qty)
    _uuid(out, o.sr_id)
    if o.epoch_id is None:
        out += b"\x00"
    else:
        out += b"\x01" + _U64.pack(o.epoch_id)
    out += _bytes32(o.origin_node)
    out += _U64.pack(o.sequence)
    _timestamp(out, o.created_at)
    _timestamp(out, o.updated_at)


def _trade(out: bytearray, t: Trade) -> None:
    _uuid(out, t.id)
    out += _U64.pack(t.epoch_id)
    _str(out, t.base)
    _str(out, t.quote)
    for u in (t.taker_order_id, t.taker_user_id, t.maker_order_id, t.maker_user_id):
        _uuid(out, u)
    _decimal(out, t.price)
    _decimal(out, t.quantity)
    _decimal(out, t.quote_amount)
    out += _U32.pack(ORDER_SIDES.index(t.taker_side))
    out += _bytes32(t.matcher_node)
    _timestamp(out, t.executed_at)


def _bytes32(b: bytes) -> bytes:
    if len(b) != 32:
        raise ValueError(f"expected 32 bytes, got {len(b)}")
    return bytes(b)


def encode_payload(op: tuple[Any, ...]) -> bytes:
    """The bincode payload of one operation tuple."""
    kind = op[0]
    out = bytearray(_U32.pack(KINDS.index(kind)))
    if kind == "OrderReceived":
        _order(out, op[1])
    elif kind == "OrderCancelled":
        _uuid(out, op[1])
    elif kind == "BufferSealed":
        out += _U64.pack(op[1]) + _bytes32(op[2])
    elif kind == "TradeExecuted":
        _trade(out, op[1])
    elif kind == "BalanceUpdated":
        _uuid(out, op[1])
        _str(out, op[2])
        _decimal(out, op[3])
        _decimal(out, op[4])
    else:  # EpochAdvanced
        out += _U64.pack(op[1]) + _U32.pack(EPOCH_PHASES.index(op[2]))
    return bytes(out)


def encode_frame(op: tuple[Any, ...]) -> bytes:
    """One frame: ``[length u32 LE][crc32 u32 LE][payload]``."""
    payload = encode_payload(op)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


# --- decoding -----------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise EOFError
        b = self.data[self.pos : end]
        self.pos = end
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        v: int = _U32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return v

    def u64(self) -> int:
        v: int = _U64.unpack_from(self.data, self.pos)[0]
        self.pos += 8
        return v

    def str(self) -> str:
        return self.take(self.u64()).decode()

    def uuid(self) -> uuid.UUID:
        if self.u64() != 16:
            raise ValueError("uuid length is not 16")
        return uuid.UUID(bytes=self.take(16))

    def decimal(self) -> Decimal:
        return Decimal(self.str())

    def option_tag(self) -> bool:
        tag = self.u8()
        if tag > 1:
            raise ValueError("bad Option tag")
        return tag == 1

    # builtins.str: inside this class, `str` is the method above.
    def enum(self, names: tuple[builtins.str, ...]) -> builtins.str:
        return names[self.u32()]

    def timestamp(self) -> Timestamp:
        text = self.str()
        if not text.endswith("Z"):
            raise ValueError("timestamp without Z")
        whole, _, frac = text[:-1].partition(".")
        base = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc
        )
        if len(frac) > 9 or (frac and not frac.isdigit()):
            raise ValueError("bad timestamp fraction")
        ns = int(frac.ljust(9, "0")) if frac else 0
        if ns % 1000 == 0:
            return base.replace(microsecond=ns // 1000)
        delta = base - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 10**9 + ns


def _decode_order(r: _Reader) -> Order:
    return Order(
        id=r.uuid(),
        user_id=r.uuid(),
        base=r.str(),
        quote=r.str(),
        side=r.enum(ORDER_SIDES),
        order_type=r.enum(ORDER_TYPES),
        status=r.enum(ORDER_STATUSES),
        price=r.decimal() if r.option_tag() else None,
        quantity=r.decimal(),
        remaining_qty=r.decimal(),
        sr_id=r.uuid(),
        epoch_id=r.u64() if r.option_tag() else None,
        origin_node=r.take(32),
        sequence=r.u64(),
        created_at=r.timestamp(),
        updated_at=r.timestamp(),
    )


def _decode_trade(r: _Reader) -> Trade:
    return Trade(
        id=r.uuid(),
        epoch_id=r.u64(),
        base=r.str(),
        quote=r.str(),
        taker_order_id=r.uuid(),
        taker_user_id=r.uuid(),
        maker_order_id=r.uuid(),
        maker_user_id=r.uuid(),
        price=r.decimal(),
        quantity=r.decimal(),
        quote_amount=r.decimal(),
        taker_side=r.enum(ORDER_SIDES),
        matcher_node=r.take(32),
        executed_at=r.timestamp(),
    )


def decode_payload(payload: bytes) -> tuple[Any, ...]:
    """One operation tuple from its payload; raises ``ValueError``."""
    r = _Reader(payload)
    try:
        kind = r.enum(KINDS)
        op: tuple[Any, ...]
        if kind == "OrderReceived":
            op = (kind, _decode_order(r))
        elif kind == "OrderCancelled":
            op = (kind, r.uuid())
        elif kind == "BufferSealed":
            op = (kind, r.u64(), r.take(32))
        elif kind == "TradeExecuted":
            op = (kind, _decode_trade(r))
        elif kind == "BalanceUpdated":
            op = (kind, r.uuid(), r.str(), r.decimal(), r.decimal())
        else:
            op = (kind, r.u64(), r.enum(EPOCH_PHASES))
    except (EOFError, IndexError, struct.error, UnicodeDecodeError, ArithmeticError) as e:
        raise ValueError(f"undecodable payload: {e!r}") from None
    if r.pos != len(payload):
        raise ValueError(f"{len(payload) - r.pos} bytes left over")
    return op


def decode_frames(data: bytes, max_payload: int = MAX_PAYLOAD_LEN) -> list[tuple[Any, ...]]:
    """Every operation of a buffer of whole frames, in order."""
    ops: list[tuple[Any, ...]] = []
    view = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < 8:
            raise PureFrameError(pos, "torn")
        length, crc = HEADER.unpack_from(data, pos)
        if length == 0:
            raise PureFrameError(pos, "zero_length")
        if length > max_payload:
            raise PureFrameError(pos, "oversized_length")
        if pos + 8 + length > end:
            raise PureFrameError(pos, "torn")
        payload = bytes(view[pos + 8 : pos + 8 + length])
        if zlib.crc32(payload) != crc:
            raise PureFrameError(pos, "checksum_mismatch")
        try:
            ops.append(decode_payload(payload))
        except ValueError as e:
            raise PureFrameError(pos, "undecodable_payload", str(e)) from None
        pos += 8 + length
    return ops


__all__ = [
    "KINDS",
    "Order",
    "PureFrameError",
    "Trade",
    "decode_frames",
    "decode_payload",
    "encode_frame",
    "encode_payload",
]
