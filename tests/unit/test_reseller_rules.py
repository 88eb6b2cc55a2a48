"""Seed 004 on the domain: top-ups charged by whole calendar months left (rounded up), and the EU VAT
treatment decided from the bill-to party with the VAT id's validation kept as evidence."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.eu_vat import TaxTreatment, VatRates, check_vat_id, decide_tax
from billing_core.domain.money import Money
from billing_core.domain.periods import add_months
from billing_core.domain.topups import months_left_rounded_up, top_up_amount

NOW = datetime(2027, 3, 4, 10, tzinfo=UTC)
RATES = VatRates("2027-01", date(2027, 1, 1), {"DE": 1900, "AT": 2000, "FR": 2000})


# ---------------------------------------------------------------- top-ups


def test_fifty_days_left_are_two_calendar_months() -> None:
    period_end = date(2027, 12, 1)
    day = period_end - timedelta(days=50)  # 12 October
    assert months_left_rounded_up(day, period_end) == 2
    # An annual licence of 120.00: 3 licences x 2 of 12 months = 60.00.
    assert top_up_amount(unit_price_minor=12000, period_months=12, quantity=3, day=day, period_end=period_end) == 6000


def test_calendar_months_not_days_divided_by_thirty() -> None:
    """31 January + 1 month is 28 February: from 31 January to 1 March is two months (a day too long for one)."""
    assert months_left_rounded_up(date(2027, 1, 31), date(2027, 3, 1)) == 2
    assert months_left_rounded_up(date(2027, 1, 31), date(2027, 2, 28)) == 1
    assert months_left_rounded_up(date(2027, 2, 28), date(2027, 3, 28)) == 1  # 28 days: one month, not 0.93
    assert months_left_rounded_up(date(2027, 3, 1), date(2027, 3, 1)) == 0


def test_a_top_up_never_costs_more_than_the_period() -> None:
    assert (
        top_up_amount(
            unit_price_minor=500, period_months=1, quantity=2, day=date(2027, 3, 2), period_end=date(2027, 4, 1)
        )
        == 1000
    )
    with pytest.raises(ValueError):
        top_up_amount(
            unit_price_minor=500, period_months=1, quantity=0, day=date(2027, 3, 2), period_end=date(2027, 4, 1)
        )


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(day=st.dates(date(2024, 1, 1), date(2030, 12, 31)), days_left=st.integers(1, 800))
def test_the_months_are_the_smallest_whole_number_that_reaches_the_period_end(day: date, days_left: int) -> None:
    period_end = day + timedelta(days=days_left)
    months = months_left_rounded_up(day, period_end)
    assert add_months(day, months) >= period_end
    assert months == 0 or add_months(day, months - 1) < period_end
    assert months >= days_left // 31  # never fewer months than whole 31-day spans


# ---------------------------------------------------------------- EU VAT


def test_a_vat_id_is_validated_offline_and_the_evidence_kept() -> None:
    valid = check_vat_id("ATU 1358 5627", NOW)
    assert (valid.vat_id, valid.valid, valid.country, valid.checked_at, valid.method) == (
        "ATU13585627",
        True,
        "AT",
        NOW,
        "offline",
    )
    assert not check_vat_id("DE136695977", NOW).valid  # checksum
    assert not check_vat_id("XX123", NOW).valid  # no member state
    assert check_vat_id("EL094259216", NOW).country == "GR"  # Greece's prefix is EL


def test_reverse_charge_for_a_valid_vat_id_of_another_member_state() -> None:
    decision = decide_tax(
        vendor_country="DE", buyer_country="AT", vat_id_check=check_vat_id("ATU13585627", NOW), rates=RATES
    )
    assert (decision.treatment, decision.rate_basis_points) == (TaxTreatment.REVERSE_CHARGE, 0)
    assert "Reverse Charge" in decision.legal_note["de"] and "Reverse charge" in decision.legal_note["en"]
    assert decision.tax_on(Money(10000, "EUR")) == Money(0, "EUR")


@pytest.mark.parametrize(
    ("buyer_country", "vat_id", "treatment", "tax"),
    [
        ("DE", "DE136695976", TaxTreatment.DOMESTIC, 1900),  # same country as the vendor: domestic VAT
        ("AT", None, TaxTreatment.DOMESTIC, 1900),  # no VAT id: the vendor's VAT
        ("AT", "ATU13585628", TaxTreatment.DOMESTIC, 1900),  # an invalid id never earns reverse charge
        ("AT", "FR40303265045", TaxTreatment.DOMESTIC, 1900),  # another country's id than the address
        ("US", None, TaxTreatment.OUTSIDE_EU, 0),
        ("CH", None, TaxTreatment.OUTSIDE_EU, 0),
    ],
)
def test_the_other_cases(buyer_country: str, vat_id: str | None, treatment: TaxTreatment, tax: int) -> None:
    check = check_vat_id(vat_id, NOW) if vat_id else None
    decision = decide_tax(vendor_country="DE", buyer_country=buyer_country, vat_id_check=check, rates=RATES)
    assert decision.treatment is treatment
    assert decision.tax_on(Money(10000, "EUR")) == Money(tax, "EUR")
    assert decision.vat_id_check == check


def test_tax_is_one_rounding_half_to_even_of_the_net() -> None:
    decision = decide_tax(vendor_country="DE", buyer_country="DE", vat_id_check=None, rates=RATES)
    assert decision.tax_on(Money(1050, "EUR")) == Money(200, "EUR")  # 199.5 -> 200
    assert decision.tax_on(Money(1150, "EUR")) == Money(218, "EUR")  # 218.5 -> 218 (half to even)
