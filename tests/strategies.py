"""Hypothesis strategies for the engine's values and operations, over the
whole range the wire format can hold."""

from __future__ import annotations

import uuid
from decimal import Decimal

from hypothesis import strategies as st

import openmatch_persistence as om

MAX_MANTISSA = 2**96 - 1
# int nanoseconds since 1970 that a datetime can also show (years 1678-2261).
NANOS = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)

uuids = st.uuids(version=None) | st.just(uuid.UUID(int=0)) | st.just(uuid.UUID(int=2**128 - 1))
u64s = st.integers(min_value=0, max_value=2**64 - 1)
texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=24)
bytes32 = st.binary(min_size=32, max_size=32)


@st.composite
def decimals(draw: st.DrawFn) -> Decimal:
    """Any value rust_decimal holds: 96-bit mantissa, scale 0..=28, a sign.
    Built from a tuple so that no context precision rounds it."""
    mantissa = draw(
        st.integers(min_value=0, max_value=MAX_MANTISSA) | st.sampled_from([0, 1, MAX_MANTISSA])
    )
    scale = draw(st.integers(min_value=0, max_value=28))
    negative = draw(st.booleans()) and mantissa != 0
    digits = tuple(int(c) for c in str(mantissa))
    return Decimal((1 if negative else 0, digits, -scale))


STATUSES = [
    om.OrderStatus.PENDING_ESCROW,
    om.OrderStatus.ACTIVE,
    om.OrderStatus.PARTIALLY_FILLED,
    om.OrderStatus.FILLED,
    om.OrderStatus.CANCELLED,
    om.OrderStatus.REJECTED,
    om.OrderStatus.EXPIRED,
]
markets = st.builds(om.MarketPair, texts, texts)
sides = st.sampled_from([om.OrderSide.BUY, om.OrderSide.SELL])
phases = st.sampled_from(
    [om.EpochPhase.COLLECT, om.EpochPhase.SEAL, om.EpochPhase.MATCH, om.EpochPhase.FINALIZE]
)

orders = st.builds(
    om.Order,
    id=uuids,
    user_id=uuids,
    market=markets,
    side=sides,
    order_type=st.sampled_from([om.OrderType.LIMIT, om.OrderType.MARKET, om.OrderType.CANCEL]),
    status=st.sampled_from(STATUSES),
    price=st.none() | decimals(),
    quantity=decimals(),
    remaining_qty=decimals(),
    sr_id=uuids,
    epoch_id=st.none() | u64s,
    origin_node=bytes32,
    sequence=u64s,
    created_at=NANOS,
    updated_at=NANOS,
)

trades = st.builds(
    om.Trade,
    id=uuids,
    epoch_id=u64s,
    market=markets,
    taker_order_id=uuids,
    taker_user_id=uuids,
    maker_order_id=uuids,
    maker_user_id=uuids,
    price=decimals(),
    quantity=decimals(),
    quote_amount=decimals(),
    taker_side=sides,
    matcher_node=bytes32,
    executed_at=NANOS,
)

operations: st.SearchStrategy[om.Operation] = st.one_of(
    st.builds(om.OrderReceived, orders),
    st.builds(om.OrderCancelled, uuids),
    st.builds(om.BufferSealed, u64s, bytes32),
    st.builds(om.TradeExecuted, trades),
    st.builds(om.BalanceUpdated, uuids, texts, decimals(), decimals()),
    st.builds(om.EpochAdvanced, u64s, phases),
)
