"""Random operations round-trip byte-identically through the codec and the
JSON form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import openmatch_persistence as om

from strategies import decimals, operations


@settings(max_examples=300)
@given(operations)
def test_encode_decode_encode_is_byte_identical(op: om.Operation) -> None:
    frame = om.encode(op)
    back = om.decode(frame)
    assert back == op
    assert type(back) is type(op)
    assert om.encode(back) == frame


@settings(max_examples=300)
@given(operations)
def test_json_round_trip(op: om.Operation) -> None:
    text = om.to_json(op)
    back = om.from_json(text)
    assert back == op
    assert om.encode(back) == om.encode(op)
    assert om.to_json(back) == text


@settings(max_examples=50)
@given(st.lists(operations, max_size=20))
def test_many_frames_round_trip(ops: list[om.Operation]) -> None:
    data = om.encode_many(ops)
    assert om.decode_all(data) == ops
    assert om.encode_many(om.decode_all(data)) == data


@given(decimals())
def test_decimals_keep_value_and_scale(value: object) -> None:
    op = om.BalanceUpdated(__import__("uuid").UUID(int=1), "X", value, 0)  # type: ignore[arg-type]
    assert str(op.available) == str(value)
