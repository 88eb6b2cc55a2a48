from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from billing_core.domain.calendar import BillingMonth, parse_iso, require_utc, to_iso
from billing_core.domain.money import CurrencyMismatch, Money


def test_billing_month_rolls_over_the_year() -> None:
    assert BillingMonth(2026, 12).next() == BillingMonth(2027, 1)
    assert BillingMonth(2026, 11).next() == BillingMonth(2026, 12)


@pytest.mark.parametrize(
    ("month", "last_day"),
    [
        (BillingMonth(2028, 2), date(2028, 2, 29)),
        (BillingMonth(2026, 2), date(2026, 2, 28)),
        (BillingMonth(2026, 12), date(2026, 12, 31)),
        (BillingMonth(2026, 4), date(2026, 4, 30)),
    ],
)
def test_last_day_of_month(month: BillingMonth, last_day: date) -> None:
    assert month.last_day == last_day


def test_month_containing_uses_utc_not_local_offset() -> None:
    # 00:30 on 1 Dec in UTC+02:00 is still 30 November in UTC.
    moment = datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert BillingMonth.containing(moment) == BillingMonth(2026, 11)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        require_utc(datetime(2026, 11, 1))


def test_iso_round_trip() -> None:
    moment = datetime(2026, 11, 22, 15, 0, 1, tzinfo=UTC)
    assert to_iso(moment) == "2026-11-22T15:00:01Z"
    assert parse_iso(to_iso(moment)) == moment


def test_month_parse_and_format() -> None:
    assert str(BillingMonth.parse("2026-03")) == "2026-03"
    with pytest.raises(ValueError):
        BillingMonth.parse("2026-3")


def test_money_is_integer_minor_units() -> None:
    assert Money(1000, "USD").format() == "USD 10.00"
    assert Money(-5, "EUR").format() == "EUR -0.05"
    assert Money(250, "USD").times(3) == Money(750, "USD")
    assert Money(1, "USD") + Money(2, "USD") == Money(3, "USD")
    with pytest.raises(TypeError):
        Money(10.0, "USD")  # type: ignore[arg-type]
    with pytest.raises(CurrencyMismatch):
        _ = Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(ValueError, match="unsupported currency"):
        Money(1, "XYZ")
