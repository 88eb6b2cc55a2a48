"""The one rounding rule of every amount that is not a whole number of prices: integer minor units
scaled by a fraction and rounded half to even, in integer arithmetic only (floats never enter).

Daily proration (a change credit, a period cut short by a term end) and percentage discounts both go
through ``scale``; nothing else in the code base rounds money.
"""

from __future__ import annotations

from datetime import date


def scale(amount_minor: int, numerator: int, denominator: int) -> int:
    """``amount_minor`` x ``numerator`` / ``denominator``, rounded half to even to the minor unit.

    Rounding is symmetric (a credit of -x rounds like a charge of x), so the sum of a charge and the
    credit that reverses it exactly is zero."""
    if type(amount_minor) is not int or type(numerator) is not int or type(denominator) is not int:
        raise TypeError("scale takes integers only")
    if denominator <= 0:
        raise ValueError(f"denominator must be positive, got {denominator}")
    if numerator < 0:
        raise ValueError(f"numerator must not be negative, got {numerator}")
    product = amount_minor * numerator
    quotient, remainder = divmod(abs(product), denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient if product >= 0 else -quotient


def days_between(start: date, end: date) -> int:
    """Days of the half-open span [start, end): a period's days, or the unused days after a change."""
    if end < start:
        raise ValueError(f"span ends before it starts: {start} .. {end}")
    return (end - start).days


def prorate(amount_minor: int, days: int, period_days: int) -> int:
    """The part of ``amount_minor`` charged for a whole period of ``period_days`` that ``days`` of it are
    worth (daily proration). ``days`` may not exceed the period."""
    if not 0 <= days <= period_days:
        raise ValueError(f"{days} days is not part of a {period_days}-day period")
    return scale(amount_minor, days, period_days)
