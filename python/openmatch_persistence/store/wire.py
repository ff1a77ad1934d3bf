"""COPY lines for orders and trades, made from their AOF encoding.

Reading an ``Order``'s attributes one by one builds a ``uuid.UUID`` per id
(~2.7 us each) and a ``Decimal`` per amount, and psycopg then formats each
value again: that was most of a flush's cost. ``encode()`` gives the same
values in one Rust call, in the normative bincode layout of aof-format.md
section 3; the fields are sliced out of it here and joined into lines of
PostgreSQL's text COPY format (UUIDs as hex, decimals as their exact text,
which keeps the scale, bytes as ``\\x`` hex).
"""

from __future__ import annotations

import struct

from openmatch_persistence import _core
from openmatch_persistence.errors import StoreError

_U64 = struct.Struct("<Q").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U32X3 = struct.Struct("<III").unpack_from

# Variant order of the Rust enums (aof-format.md section 3).
SIDES = (b"BUY", b"SELL")
ORDER_TYPES = (b"LIMIT", b"MARKET", b"CANCEL")
STATUSES = (
    b"PENDING_ESCROW",
    b"ACTIVE",
    b"PARTIALLY_FILLED",
    b"FILLED",
    b"CANCELLED",
    b"REJECTED",
    b"EXPIRED",
)

_ORDER_RECEIVED = 0
_TRADE_EXECUTED = 3
_START = _core.HEADER_LEN + 4  # the frame header, then the u32 variant index
_NULL = b"\\N"


def _text(b: bytes) -> bytes:
    """A text value escaped for COPY (backslash, tab, newline, CR)."""
    if b.isalnum():
        return b
    return (
        b.replace(b"\\", b"\\\\")
        .replace(b"\t", b"\\t")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
    )


def _bytea(b: bytes) -> bytes:
    return b"\\\\x" + b.hex().encode()


def _check(b: bytes, variant: int, what: str) -> None:
    if _U32(b, _START - 4)[0] != variant:
        raise StoreError(f"unexpected encoding of {what}")


def order_line(o: _core.Order) -> bytes:
    """One line for ``tmp_orders`` (postgres.py): id, user_id, market_base,
    market_quote, side, order_type, status, price, quantity, remaining_qty,
    sr_id, batch_id, sequence, origin_node, created_at_ns, updated_at_ns."""
    b = _core.encode(_core.OrderReceived(o))
    _check(b, _ORDER_RECEIVED, "OrderReceived")
    p = _START
    oid = b[p + 8 : p + 24].hex().encode()
    user = b[p + 32 : p + 48].hex().encode()
    p += 48
    (n,) = _U64(b, p)
    base = _text(b[p + 8 : p + 8 + n])
    p += 8 + n
    (n,) = _U64(b, p)
    quote = _text(b[p + 8 : p + 8 + n])
    p += 8 + n
    side, order_type, status = _U32X3(b, p)
    p += 12
    price = _NULL
    if b[p]:
        (n,) = _U64(b, p + 1)
        price = b[p + 9 : p + 9 + n]
        p += 9 + n
    else:
        p += 1
    (n,) = _U64(b, p)
    quantity = b[p + 8 : p + 8 + n]
    p += 8 + n
    (n,) = _U64(b, p)
    remaining = b[p + 8 : p + 8 + n]
    p += 8 + n
    sr = b[p + 8 : p + 24].hex().encode()
    p += 24
    epoch = _NULL
    if b[p]:
        epoch = b"%d" % _U64(b, p + 1)[0]
        p += 9
    else:
        p += 1
    node = _bytea(b[p : p + 32])
    (sequence,) = _U64(b, p + 32)
    return b"\t".join((
        oid, user, base, quote, SIDES[side], ORDER_TYPES[order_type], STATUSES[status], price,
        quantity, remaining, sr, epoch, b"%d" % sequence, node, b"%d" % o.created_at_ns,
        b"%d" % o.updated_at_ns,
    )) + b"\n"  # fmt: skip


def trade_line(t: _core.Trade) -> bytes:
    """One line for ``tmp_trades`` (postgres.py): id, batch_id, market_base,
    market_quote, taker_order_id, maker_order_id, taker_user_id,
    maker_user_id, price, quantity, quote_amount, taker_side, matcher_node,
    executed_at_ns."""
    b = _core.encode(_core.TradeExecuted(t))
    _check(b, _TRADE_EXECUTED, "TradeExecuted")
    p = _START
    tid = b[p + 8 : p + 24].hex().encode()
    (epoch,) = _U64(b, p + 24)
    p += 32
    (n,) = _U64(b, p)
    base = _text(b[p + 8 : p + 8 + n])
    p += 8 + n
    (n,) = _U64(b, p)
    quote = _text(b[p + 8 : p + 8 + n])
    p += 8 + n
    taker_order = b[p + 8 : p + 24].hex().encode()
    taker_user = b[p + 32 : p + 48].hex().encode()
    maker_order = b[p + 56 : p + 72].hex().encode()
    maker_user = b[p + 80 : p + 96].hex().encode()
    p += 96
    amounts = []
    for _ in range(3):  # price, quantity, quote_amount
        (n,) = _U64(b, p)
        amounts.append(b[p + 8 : p + 8 + n])
        p += 8 + n
    (side,) = _U32(b, p)
    node = _bytea(b[p + 4 : p + 36])
    return b"\t".join((
        tid, b"%d" % epoch, base, quote, taker_order, maker_order, taker_user, maker_user,
        amounts[0], amounts[1], amounts[2], SIDES[side], node, b"%d" % t.executed_at_ns,
    )) + b"\n"  # fmt: skip
