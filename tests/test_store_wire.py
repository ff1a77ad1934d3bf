"""The COPY lines that rows.rs builds (``_core.pg_copy_orders`` /
``pg_copy_trades``) hold exactly the attributes."""

from __future__ import annotations

import uuid
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from test_store_support import make_order, make_trade

from openmatch_persistence import MarketPair, OrderSide, OrderStatus, OrderType, _core
from openmatch_persistence.store.rows import SIDE_NAME, STATUS_NAME, TYPE_NAME


def _at_most_8_places(d: Decimal) -> Decimal:
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    return d if exponent >= -8 else d.quantize(Decimal("0.00000001"))


decimals = st.decimals(
    min_value=Decimal("-99999999999999999999.99999999"),
    max_value=Decimal("99999999999999999999.99999999"),
    allow_nan=False,
    allow_infinity=False,
).map(_at_most_8_places)
names = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=9
)


def _unescape(field: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(field):
        c = field[i : i + 1]
        if c == b"\\":
            nxt = field[i + 1 : i + 2]
            out += {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"\\": b"\\"}[nxt]
            i += 2
        else:
            out += c
            i += 1
    return bytes(out)


def _fields(line: bytes) -> list[bytes | None]:
    assert line.endswith(b"\n")
    return [None if f == b"\\N" else _unescape(f) for f in line[:-1].split(b"\t")]


def _dec(d: Decimal | None) -> bytes | None:
    return None if d is None else format(d, "f").encode()


@settings(max_examples=150, deadline=None)
@given(
    base=names,
    quote=names,
    price=st.none() | decimals,
    quantity=decimals,
    remaining=decimals,
    epoch=st.none() | st.integers(0, 2**63 - 1),
    sequence=st.integers(0, 2**63 - 1),
    node=st.binary(min_size=32, max_size=32),
    side=st.sampled_from([OrderSide.BUY, OrderSide.SELL]),
    status=st.sampled_from(list(STATUS_NAME)),
    order_type=st.sampled_from([OrderType.LIMIT, OrderType.MARKET, OrderType.CANCEL]),
    created=st.integers(-(2**62), 2**62),
)
def test_order_line_matches_the_attributes(
    base: str, quote: str, price: Decimal | None, quantity: Decimal, remaining: Decimal,
    epoch: int | None, sequence: int, node: bytes, side: OrderSide, status: OrderStatus,
    order_type: OrderType, created: int,
) -> None:  # fmt: skip
    o = make_order(
        market=MarketPair(base, quote), price=price, quantity=quantity, remaining_qty=remaining,
        epoch_id=epoch, sequence=sequence, origin_node=node, side=side, status=status,
        order_type=order_type, created_at=created, updated_at=created + 1,
    )  # fmt: skip
    f = _fields(_core.pg_copy_orders(_core.StateChanges([o])))
    assert f == [
        o.id.hex.encode(), o.user_id.hex.encode(), base.encode(), quote.encode(),
        SIDE_NAME[side].encode(), TYPE_NAME[order_type].encode(), STATUS_NAME[status].encode(),
        _dec(o.price), _dec(o.quantity), _dec(o.remaining_qty), o.sr_id.hex.encode(),
        None if epoch is None else str(epoch).encode(), str(sequence).encode(),
        b"\\x" + node.hex().encode(), str(created).encode(), str(created + 1).encode(),
    ]  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(base=names, quote=names, price=decimals, quantity=decimals, amount=decimals,
       epoch=st.integers(0, 2**63 - 1), node=st.binary(min_size=32, max_size=32))  # fmt: skip
def test_trade_line_matches_the_attributes(
    base: str, quote: str, price: Decimal, quantity: Decimal, amount: Decimal, epoch: int,
    node: bytes,
) -> None:  # fmt: skip
    a, b = make_order(), make_order()
    t = make_trade(a, b, market=MarketPair(base, quote), price=price, quantity=quantity,
                   quote_amount=amount, epoch_id=epoch, matcher_node=node,
                   taker_side=OrderSide.SELL, id=uuid.uuid4())  # fmt: skip
    assert _fields(_core.pg_copy_trades(_core.StateChanges(trades=[t]))) == [
        t.id.hex.encode(), str(epoch).encode(), base.encode(), quote.encode(),
        a.id.hex.encode(), b.id.hex.encode(), a.user_id.hex.encode(), b.user_id.hex.encode(),
        _dec(t.price), _dec(t.quantity), _dec(t.quote_amount), b"SELL",
        b"\\x" + node.hex().encode(), str(t.executed_at_ns).encode(),
    ]  # fmt: skip
