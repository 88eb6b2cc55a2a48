"""Seed 003 on the domain: a unit floor billed in full, extra units prorated from their creation to the
period's end, never refunded, a deleted-then-recreated unit not charged twice in a period (a high-water
mark deletions never lower), and when each extra slot is invoiced."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.commitments import CommittedPeriod, UnitInvoicing, committed_seats
from billing_core.domain.errors import Conflict

# 10 users included at 8.00 per user and month.
MARCH = dict(included=10, unit_price_minor=800, period_start=date(2027, 3, 1), period_end=date(2027, 4, 1))


def period_with(units: int, **overrides: object) -> CommittedPeriod:
    return CommittedPeriod.open(**(MARCH | overrides), live=frozenset(f"u{n}" for n in range(units)))  # type: ignore[arg-type]


def test_fewer_units_than_included_are_billed_as_the_commitment() -> None:
    """A minimum commitment, not a usage requirement: 3 users created, 10 billed."""
    period = period_with(3)
    assert (period.billed_units, period.period_charge_minor) == (10, 10 * 800)
    assert period.view().created == 3 and period.view().additional == 0


def test_an_extra_unit_is_charged_from_its_creation_to_the_end_of_the_period() -> None:
    """Worked example 1: the 11th user created on 20 March pays 12 of March's 31 days:
    800 x 12 / 31 = 309.67... -> 310 (3.10)."""
    period = period_with(10).create_unit("u10", date(2027, 3, 20))
    (charge,) = period.charges
    assert (charge.slot, charge.charged_from, charge.amount_minor) == (1, date(2027, 3, 20), 310)
    assert period.view() == period.view().__class__(
        created=11, included=10, additional=1, paid_units=11, extra_charged_minor=310
    )


def test_creation_on_the_last_day_pays_one_day_and_leap_years_count_their_day() -> None:
    """Worked example 2: created on 29 February 2028, the last day of a 29-day period: 800 x 1 / 29 = 27.58... -> 28."""
    february = period_with(10, period_start=date(2028, 2, 1), period_end=date(2028, 3, 1))
    assert february.create_unit("late", date(2028, 2, 29)).charges[0].amount_minor == 28
    with pytest.raises(ValueError, match="not in the period"):
        february.create_unit("late", date(2028, 3, 1))


def test_deleting_never_credits_and_a_recreated_unit_is_not_charged_twice_in_the_period() -> None:
    period = period_with(10).create_unit("u10", date(2027, 3, 5))
    period = period.delete_unit("u10").create_unit("u10", date(2027, 3, 6))
    assert len(period.charges) == 1 and period.billed_units == 11
    # The seed's tip: delete the user no longer needed first, then add the new one: no extra charge.
    tip = period_with(10).delete_unit("u3").create_unit("new", date(2027, 3, 9))
    assert tip.charges == () and tip.billed_units == 10


def test_each_slot_is_charged_once_and_named_for_exactly_once_charging() -> None:
    period = period_with(10).create_unit("a", date(2027, 3, 2)).create_unit("b", date(2027, 3, 2))
    assert [(c.slot, c.key) for c in period.charges] == [(1, "slot:2027-03-01:1"), (2, "slot:2027-03-01:2")]
    with pytest.raises(Conflict) as exists:
        period.create_unit("a", date(2027, 3, 3))
    assert exists.value.code == "unit_exists"
    with pytest.raises(Conflict):
        period.delete_unit("nobody")


def test_the_next_period_bills_the_units_alive_then_and_restarts_the_mark() -> None:
    march = period_with(10).create_unit("a", date(2027, 3, 2)).create_unit("b", date(2027, 3, 2)).delete_unit("a")
    april = march.next_period(date(2027, 5, 1))
    assert (april.period_start, april.billed_units, april.period_charge_minor, april.charges) == (
        date(2027, 4, 1),
        11,
        11 * 800,
        (),
    )


@pytest.mark.parametrize(
    ("mode", "invoice_on"),
    [
        (UnitInvoicing.IMMEDIATE, date(2027, 3, 20)),
        (UnitInvoicing.DAILY_DIGEST, date(2027, 3, 21)),
        (UnitInvoicing.NEXT_INVOICE, date(2027, 4, 1)),
    ],
)
def test_the_plan_chooses_when_extra_units_are_invoiced(mode: UnitInvoicing, invoice_on: date) -> None:
    period = period_with(10, invoicing=mode).create_unit("x", date(2027, 3, 20))
    assert period.charges[0].invoice_on == invoice_on


def test_a_metered_plan_bills_at_least_its_committed_seats() -> None:
    assert (committed_seats(3, 10), committed_seats(12, 10), committed_seats(0, 0)) == (10, 12, 0)


OPERATIONS = st.lists(
    st.tuples(st.sampled_from(("create", "delete")), st.integers(0, 15), st.integers(0, 30)), max_size=40
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(included=st.integers(0, 8), operations=OPERATIONS, start_units=st.integers(0, 6))
def test_charges_are_monotone_never_refunded_and_follow_the_high_water_mark(
    included: int, operations: list[tuple[str, int, int]], start_units: int
) -> None:
    period = CommittedPeriod.open(
        **(MARCH | {"included": included}),  # type: ignore[arg-type]
        live=frozenset(f"u{n}" for n in range(start_units)),
    )
    peak = len(period.live)
    charged_before = 0
    for operation, unit, day in operations:
        unit_id, on = f"u{unit}", date(2027, 3, 1 + day)
        if operation == "create" and unit_id not in period.live:
            period = period.create_unit(unit_id, on)
        elif operation == "delete" and unit_id in period.live:
            period = period.delete_unit(unit_id)
        peak = max(peak, len(period.live))
        charged = sum(c.amount_minor for c in period.charges)
        assert charged >= charged_before and all(c.amount_minor >= 0 for c in period.charges)  # nothing refunded
        charged_before = charged
        assert period.billed_units == max(included, peak)  # billed = max(included, high-water mark)
    # Each slot costs what its days are worth (daily proration, one rounding each), never more than a period.
    for charge in period.charges:
        exact = Fraction(800 * (date(2027, 4, 1) - charge.charged_from).days, 31)
        assert abs(charge.amount_minor - exact) <= Fraction(1, 2) and charge.amount_minor <= 800
    assert len({c.key for c in period.charges}) == len(period.charges)
