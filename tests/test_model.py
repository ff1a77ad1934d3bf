"""The Python model: values at the surface, and bad input refused with the
package's own typed errors before anything is encoded."""

from __future__ import annotations

import datetime as dt
import pickle
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import openmatch_persistence as om

U = uuid.UUID(int=1)
NODE = bytes(range(32))


def order(**overrides: Any) -> om.Order:
    fields: dict[str, Any] = dict(
        id=U,
        user_id=U,
        market=om.MarketPair("BTC", "USDT"),
        side=om.OrderSide.BUY,
        order_type=om.OrderType.LIMIT,
        status=om.OrderStatus.ACTIVE,
        price=Decimal("50000.5"),
        quantity=Decimal("1.25"),
        remaining_qty=Decimal("1.25"),
        sr_id=U,
        epoch_id=7,
        origin_node=NODE,
        sequence=1,
        created_at=dt.datetime(2026, 2, 27, 21, 35, 25, 123456, tzinfo=dt.timezone.utc),
        updated_at=1_772_228_125_123_456_789,
    )
    fields.update(overrides)
    return om.Order(**fields)


def test_values_at_the_surface() -> None:
    o = order()
    assert isinstance(o.id, uuid.UUID)
    assert isinstance(o.price, Decimal) and str(o.price) == "50000.5"
    assert o.created_at == dt.datetime(2026, 2, 27, 21, 35, 25, 123456, tzinfo=dt.timezone.utc)
    assert o.updated_at_ns == 1_772_228_125_123_456_789
    assert o.updated_at.microsecond == 123456  # datetime shows microseconds
    assert o.market.symbol == "BTC/USDT"
    assert o.side is om.OrderSide.BUY


def test_aware_datetimes_in_other_zones_become_utc() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    o = order(created_at=dt.datetime(2026, 1, 1, 2, 0, tzinfo=plus2))
    assert o.created_at == dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.timezone.utc)
    assert '"created_at":"2026-01-01T00:00:00Z"' in om.to_json(om.OrderReceived(o))


def test_equality_hash_repr_pickle() -> None:
    a, b = om.OrderReceived(order()), om.OrderReceived(order())
    assert a == b and hash(a) == hash(b)
    assert a != om.OrderReceived(order(sequence=2))
    assert a != "not an op"  # type: ignore[comparison-overlap]
    assert pickle.loads(pickle.dumps(a)) == a
    assert "OrderReceived" in repr(a)
    assert order() == order() and hash(order()) == hash(order())
    assert om.MarketPair("A", "B") == om.MarketPair("A", "B")


@pytest.mark.parametrize(
    "value, words",
    [
        (Decimal("1E-29"), "29 decimal places"),
        (Decimal("0E-30"), "30 decimal places"),
        (Decimal(2**96), r"2\^96"),
        (Decimal(-(2**96)), r"2\^96"),
        (Decimal("NaN"), "not finite"),
        (Decimal("sNaN"), "not finite"),
        (Decimal("Infinity"), "not finite"),
        (Decimal("-Infinity"), "not finite"),
    ],
)
def test_decimals_rust_decimal_cannot_hold_are_refused(value: Decimal, words: str) -> None:
    with pytest.raises(om.InvalidValueError, match=words) as info:
        order(quantity=value)
    assert isinstance(info.value, ValueError)
    assert "Order.quantity" in str(info.value)


def test_decimal_edges_that_fit_are_exact() -> None:
    assert str(order(price=Decimal(2**96 - 1)).price) == str(2**96 - 1)
    assert str(order(price=Decimal("1E-28")).price) == "1E-28"
    assert str(order(price=Decimal("1E+5")).price) == "100000"
    assert str(order(price=Decimal("-0.00")).price) == "-0.00"  # the engine's sign, kept
    assert order(price=7).price == Decimal(7)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("price", 1.5, om.InvalidTypeError),
        ("price", "1.5", om.InvalidTypeError),
        ("quantity", True, om.InvalidTypeError),
        ("id", str(U), om.InvalidTypeError),
        ("market", "BTC/USDT", om.InvalidTypeError),
        ("side", "BUY", om.InvalidTypeError),
        ("epoch_id", -1, om.InvalidValueError),
        ("epoch_id", 2**64, om.InvalidValueError),
        ("sequence", 1.0, om.InvalidTypeError),
        ("origin_node", bytes(31), om.InvalidValueError),
        ("origin_node", bytes(33), om.InvalidValueError),
        ("origin_node", "x" * 32, om.InvalidTypeError),
        ("created_at", dt.datetime(2026, 1, 1), om.InvalidValueError),
        ("created_at", dt.date(2026, 1, 1), om.InvalidTypeError),
        ("created_at", 2**63, om.InvalidValueError),
    ],
)
def test_bad_fields_are_refused_with_typed_errors(
    field: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        order(**{field: value})
    assert isinstance(info.value, om.OpenMatchPersistenceError)
    assert f"Order.{field}" in str(info.value)
    if error is om.InvalidTypeError:
        assert isinstance(info.value, TypeError)


def test_naive_datetime_message_says_what_to_do() -> None:
    with pytest.raises(om.InvalidValueError, match="naive datetime"):
        om.Trade(
            id=U,
            epoch_id=1,
            market=om.MarketPair("A", "B"),
            taker_order_id=U,
            taker_user_id=U,
            maker_order_id=U,
            maker_user_id=U,
            price=Decimal(1),
            quantity=Decimal(1),
            quote_amount=Decimal(1),
            taker_side=om.OrderSide.SELL,
            matcher_node=NODE,
            executed_at=dt.datetime(2026, 1, 1),
        )


def test_batch_hash_must_be_32_bytes() -> None:
    with pytest.raises(om.InvalidValueError, match="exactly 32 bytes"):
        om.BufferSealed(1, b"short")


def test_encode_refuses_non_operations_and_encodes_nothing_on_failure() -> None:
    with pytest.raises(om.InvalidTypeError, match="expected an operation"):
        om.encode("nope")  # type: ignore[arg-type]
    with pytest.raises(om.InvalidTypeError):
        om.encode_many([om.OrderCancelled(U), 42])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"Bad":1}',
        '{"OrderCancelled":"not-a-uuid"}',
        '{"EpochAdvanced":[7,"Sealed"]}',
        '{"EpochAdvanced":[-1,"Seal"]}',
        '{"BalanceUpdated":["0190f3c2-7b1e-7c00-8000-0000000000aa","USDT",1.5,"0"]}',
        '{"BufferSealed":[1,[1,2,3]]}',
        '{"EpochAdvanced":[7,"Seal"]} trailing',
    ],
)
def test_malformed_json_is_refused(text: str) -> None:
    with pytest.raises(om.JsonFormatError) as info:
        om.from_json(text)
    assert isinstance(info.value, ValueError)


def test_frame_errors_name_offset_and_cause() -> None:
    good = om.encode(om.EpochAdvanced(1, om.EpochPhase.SEAL))
    cases: list[tuple[bytes, type[om.FrameError], str, int]] = [
        (good[:-1], om.TornFrameError, "torn", 0),
        (good + good[:5], om.TornFrameError, "torn", len(good)),
        (good[:8] + bytes([good[8] ^ 1]) + good[9:], om.ChecksumMismatchError, "checksum", 0),
        (b"\xff\xff\xff\xff" + bytes(12), om.OversizedFrameError, "oversized", 0),
        (bytes(16), om.CorruptFrameError, "zero_length", 0),
    ]
    for data, error, cause, offset in cases:
        with pytest.raises(error) as info:
            om.decode_all(data)
        assert info.value.offset == offset
        assert cause in info.value.cause
        assert f"offset {offset}" in str(info.value)
        # A length past the reader's limit is not corruption: ``except
        # CorruptFrameError`` does not catch it.
        corrupt = error not in (om.TornFrameError, om.OversizedFrameError)
        assert isinstance(info.value, om.CorruptFrameError) == corrupt
    with pytest.raises(om.TrailingBytesError) as trailing:
        om.decode(good + b"\x00")
    assert trailing.value.offset == len(good)


def test_an_oversized_frame_is_not_corruption_and_names_its_limit() -> None:
    good = om.encode(om.EpochAdvanced(1, om.EpochPhase.SEAL))
    limit = len(good) - 9
    with pytest.raises(om.OversizedFrameError) as info:
        om.decode(good, max_payload=limit)
    e = info.value
    assert not isinstance(e, om.CorruptFrameError) and isinstance(e, om.FrameError)
    assert (e.cause, e.length, e.limit, e.offset) == ("oversized_length", len(good) - 8, limit, 0)
    assert f"oversized (limit {limit})" in str(e) and "max_payload" in str(e)
    assert om.decode(good, max_payload=limit + 1) == om.EpochAdvanced(1, om.EpochPhase.SEAL)


def test_undecodable_payload_with_a_good_checksum() -> None:
    import zlib

    payload = (9).to_bytes(4, "little")  # variant index 9 does not exist
    frame = len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little")
    with pytest.raises(om.UndecodablePayloadError, match="variant"):
        om.decode(frame + payload)


def test_cli_encode_bad_line_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "ops.jsonl"
    src.write_text('{"EpochAdvanced":[7,"Seal"]}\n{"EpochAdvanced":[7,"Sael"]}\n')
    out = tmp_path / "out.aof"
    run = subprocess.run(
        [sys.executable, "-m", "openmatch_persistence", "aof", "encode", str(src), str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert f"{src}:2:" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]


def test_cli_encode_then_dump_round_trips(tmp_path: Path) -> None:
    golden = Path(__file__).parent / "fixtures" / "golden.jsonl"
    out = tmp_path / "out.aof"
    cli = [sys.executable, "-m", "openmatch_persistence", "aof"]
    subprocess.run([*cli, "encode", str(golden), str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (golden.parent / "golden.aof").read_bytes()
    assert out.stat().st_mode & 0o777 == 0o600
    dump = subprocess.run([*cli, "dump", str(out)], check=True, capture_output=True, text=True)
    assert dump.stdout == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("n", [0, 1, 2**64 - 1, 2**64, 2**127 + 12345, 2**128 - 1])
def test_a_decoded_uuid_is_a_uuid_in_every_respect(n: int) -> None:
    # The binding makes UUIDs as pickle does (bare instance, slots set),
    # not through the constructor: the result must be indistinguishable.
    op = om.decode(om.encode(om.OrderCancelled(uuid.UUID(int=n))))
    assert isinstance(op, om.OrderCancelled)
    decoded = op.order_id
    made = uuid.UUID(int=n)
    assert type(decoded) is uuid.UUID
    assert (decoded, hash(decoded), str(decoded), repr(decoded)) == (
        made, hash(made), str(made), repr(made),
    )  # fmt: skip
    assert (decoded.int, decoded.bytes, decoded.version, decoded.variant) == (
        made.int, made.bytes, made.version, made.variant,
    )  # fmt: skip
    assert decoded.is_safe is made.is_safe is uuid.SafeUUID.unknown
    assert pickle.loads(pickle.dumps(decoded)) == made
    with pytest.raises(TypeError):
        decoded.int = 5  # type: ignore[misc]
