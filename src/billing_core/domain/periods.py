"""Dates of terms and billing periods, always computed from an anchor date.

A period boundary is the anchor plus a whole number of calendar months, the day clamped to the month's
length: never the previous boundary plus a month. A subscription anchored on 31 January renews monthly
on 28 (29) February and again on 31 March; one anchored on 29 February 2028 renews yearly on
28 February 2029 and on 29 February 2032. (Chaining month by month would drift to the 28th for ever,
the cycle-day-31 failure of some billing systems.)
"""

from __future__ import annotations

import calendar
from datetime import date


def add_months(anchor: date, months: int) -> date:
    """``anchor`` plus ``months`` calendar months; the day is the anchor's, clamped to the target month."""
    if months < 0:
        raise ValueError("months must not be negative")
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


def boundary(anchor: date, offset_months: int) -> date:
    """The boundary ``offset_months`` after the anchor (0: the anchor itself)."""
    return add_months(anchor, offset_months)


def months_offset_on_or_before(anchor: date, day: date) -> int:
    """The largest month offset whose boundary is on or before ``day`` (``day`` >= anchor)."""
    if day < anchor:
        raise ValueError(f"{day} is before the anchor {anchor}")
    offset = (day.year - anchor.year) * 12 + (day.month - anchor.month)
    while offset > 0 and add_months(anchor, offset) > day:
        offset -= 1
    return offset
