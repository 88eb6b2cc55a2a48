"""Top-ups of a running reseller subscription (seed 004): extra licences bought within a period are charged,
per licence, the months left to the period's end rounded up to whole calendar months, at the
subscription's price. Calendar months, not days / 30: the smallest n with day + n months >= the period
end (50 days left -> 2 months); a renewal bills the full period as usual.
"""

from __future__ import annotations

from datetime import date

from billing_core.domain.periods import add_months
from billing_core.domain.proration import scale


def months_left_rounded_up(day: date, period_end: date) -> int:
    """The smallest n with ``day`` + n calendar months (clamped, ``periods.add_months``) >= ``period_end``
    (exclusive end: the first day after the period)."""
    if day >= period_end:
        return 0
    months = max(0, (period_end.year - day.year) * 12 + period_end.month - day.month - 1)
    while add_months(day, months) < period_end:
        months += 1
    return months


def top_up_amount(*, unit_price_minor: int, period_months: int, quantity: int, day: date, period_end: date) -> int:
    """What ``quantity`` extra licences bought on ``day`` cost until ``period_end``: the period's price of one
    licence x quantity x months left (rounded up, never more than the period) / months of the period, rounded
    once (``proration.scale``)."""
    if quantity < 1 or period_months < 1:
        raise ValueError("a top-up buys at least one licence of a period of at least one month")
    months = min(months_left_rounded_up(day, period_end), period_months)
    return scale(unit_price_minor * quantity, months, period_months)
