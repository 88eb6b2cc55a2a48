"""Anchor-based period dates and the one rounding rule (integer minor units, half to even)."""

from __future__ import annotations

from datetime import date

import pytest

from billing_core.domain.periods import add_months, months_offset_on_or_before
from billing_core.domain.proration import days_between, prorate, scale


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, date(2027, 1, 31)),
        (1, date(2027, 2, 28)),
        (2, date(2027, 3, 31)),
        (3, date(2027, 4, 30)),
        (13, date(2028, 2, 29)),
        (14, date(2028, 3, 31)),
    ],
)
def test_a_31st_anchor_gives_the_end_of_short_months_and_returns_to_the_31st(offset: int, expected: date) -> None:
    """Kill Bill's cycle-day-31 failure: chaining +1 month from 28 February stays on the 28th for ever."""
    assert add_months(date(2027, 1, 31), offset) == expected


@pytest.mark.parametrize(
    ("years", "expected"),
    [(1, date(2029, 2, 28)), (2, date(2030, 2, 28)), (3, date(2031, 2, 28)), (4, date(2032, 2, 29))],
)
def test_a_29_february_anchor_renews_on_28_february_and_on_29_february_in_leap_years(
    years: int, expected: date
) -> None:
    assert add_months(date(2028, 2, 29), 12 * years) == expected


def test_the_offset_on_or_before_a_day() -> None:
    anchor = date(2027, 1, 31)
    assert months_offset_on_or_before(anchor, date(2027, 2, 27)) == 0
    assert months_offset_on_or_before(anchor, date(2027, 2, 28)) == 1
    assert months_offset_on_or_before(anchor, date(2027, 3, 30)) == 1
    assert months_offset_on_or_before(anchor, date(2027, 3, 31)) == 2


@pytest.mark.parametrize(
    ("amount", "numerator", "denominator", "expected"),
    [
        (5, 1, 2, 2),
        (15, 1, 2, 8),
        (25, 1, 2, 12),
        (7, 1, 2, 4),
        (6000, 100, 365, 1644),
        (6000, 265, 365, 4356),
        (-5, 1, 2, -2),
        (-15, 1, 2, -8),
        (1, 1, 3, 0),
        (2, 1, 3, 1),
        (0, 5, 7, 0),
    ],
)
def test_scale_rounds_half_to_even_symmetrically(amount: int, numerator: int, denominator: int, expected: int) -> None:
    assert scale(amount, numerator, denominator) == expected


def test_money_rounding_takes_integers_only() -> None:
    with pytest.raises(TypeError):
        scale(10.0, 1, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        scale(10, 1, 0)


def test_prorate_is_a_part_of_one_period() -> None:
    assert prorate(3100, 10, 31) == 1000
    assert prorate(3100, 31, 31) == 3100
    with pytest.raises(ValueError, match="not part"):
        prorate(3100, 32, 31)
    assert days_between(date(2028, 2, 1), date(2028, 3, 1)) == 29
