"""validate_for_store refuses, before the append, what the schema cannot hold
exactly; mask_dsn keeps passwords out of messages."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from test_store_support import make_order, make_trade

from openmatch_persistence import (
    BalanceUpdated,
    BufferSealed,
    EpochAdvanced,
    EpochPhase,
    MarketPair,
    OrderCancelled,
    OrderReceived,
    TradeExecuted,
)
from openmatch_persistence.dsn import UNPARSABLE, mask_dsn, scrub
from openmatch_persistence.errors import InvalidValueError
from openmatch_persistence.validate import validate_for_store

MAX = Decimal("99999999999999999999.99999999")  # 20 integer digits, 8 places


def test_values_that_fit_pass() -> None:
    o = make_order(price=MAX, quantity=-MAX, remaining_qty=Decimal("0.00000001"),
                   market=MarketPair("ABCDEFGHIJ", "KLMNOPQRS"))  # fmt: skip
    validate_for_store(OrderReceived(o))
    validate_for_store(TradeExecuted(make_trade(o, o)))
    validate_for_store(BalanceUpdated(uuid.uuid4(), "A" * 10, MAX, Decimal(0)))
    validate_for_store(OrderCancelled(uuid.uuid4()))
    validate_for_store(BufferSealed(2**63 - 1, bytes(32)))
    validate_for_store(EpochAdvanced(2**63 - 1, EpochPhase.MATCH))


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("price", {"price": Decimal("1.123456789")}, r"price: 1\.123456789 has 9 decimal places"),
        ("quantity", {"quantity": Decimal("100000000000000000000")}, "more than 20 integer"),
        ("remaining_qty", {"remaining_qty": Decimal("-0.000000001")}, "remaining_qty"),
        ("market", {"market": MarketPair("ABCDEFGHIJK", "USDTUSDTU")}, r"21 characters"),
        ("market", {"market": MarketPair("BTC\x00", "USDT")}, "NUL"),
        ("epoch_id", {"epoch_id": 2**63}, "BIGINT"),
        ("sequence", {"sequence": 2**64 - 1}, "BIGINT"),
    ],
)
def test_an_order_that_does_not_fit_is_refused(
    field: str, kwargs: dict[str, object], message: str
) -> None:
    order = make_order(**kwargs)
    with pytest.raises(InvalidValueError, match=message) as e:
        validate_for_store(OrderReceived(order))
    assert field in str(e.value) and str(order.id) in str(e.value)


def test_trade_and_balance_values_are_checked() -> None:
    o = make_order()
    with pytest.raises(InvalidValueError, match=r"quote_amount: 0\.000000001"):
        validate_for_store(TradeExecuted(make_trade(o, o, quote_amount=Decimal("1E-9"))))
    with pytest.raises(InvalidValueError, match=r"asset: 'ABCDEFGHIJK' is 11 characters"):
        validate_for_store(BalanceUpdated(uuid.uuid4(), "ABCDEFGHIJK", 1, 0))
    with pytest.raises(InvalidValueError, match="frozen"):
        validate_for_store(BalanceUpdated(uuid.uuid4(), "BTC", 1, Decimal("0.5E-8")))
    with pytest.raises(InvalidValueError, match="batch_id"):
        validate_for_store(BufferSealed(2**63, bytes(32)))
    with pytest.raises(InvalidValueError, match="epoch_id"):
        validate_for_store(EpochAdvanced(2**64 - 1, EpochPhase.SEAL))


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:****@h:5432/db"),
        ("postgres://u:p%40ss@h/db?sslmode=require", "postgres://u:****@h/db?sslmode=require"),
        # libpq reads a query password as the password: it is masked where it is shown.
        (
            "postgresql://u@h/db?password=s3cret&application_name=a",
            "postgresql://u:****@h/db?application_name=a",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:pw@h1:1,[::1]:2/db", "postgresql://u:****@h1:1,[::1]:2/db"),
        ("host=h password=s3cret user=u", "user=u password=**** host=h"),
        ("host=h password = 'se cret' user=u", "user=u password=**** host=h"),
        # A backslash escape belongs to the value: nothing of it is left over.
        ("host=h password=se\\ cret", "password=**** host=h"),
        # Unparsable: shown not at all, since no one can tell where the secret is.
        ("postgresql://postgres:S3cret@[::1:5432/x", UNPARSABLE),
        ("host=h password='unterminated", UNPARSABLE),
        ("sqlite:/tmp/x.db", "sqlite:/tmp/x.db"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_scrub_removes_the_password_from_driver_messages() -> None:
    dsn = "postgresql://u:s3cret@h/db"
    assert "s3cret" not in scrub("failed for postgresql://u:s3cret@h/db", dsn)
    escaped = "postgresql://u:p%40ss@h/db"
    shown = scrub(f"at {escaped}: p@ss or p%40ss", escaped)
    assert shown == "at postgresql://u:****@h/db: **** or ****"


def test_scrub_never_shows_a_message_about_an_unparsable_url() -> None:
    dsn = "postgresql://postgres:S3cret@[::1:5432/x"
    message = f'end of string reached looking for "]" in URI: "{dsn}"'
    assert "S3cret" not in scrub(message, dsn) and UNPARSABLE in scrub(message, dsn)
