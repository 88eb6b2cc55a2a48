"""Property: for any sequence of billing-frequency changes, what the charge schedule bills (period
charges minus change credits) equals the price of the service actually delivered, within half a minor
unit per rounded amount (each change credit, and each period a term end cut short, is rounded once).

The delivered price comes from an independent oracle kept in plain numbers: its own copy of the price
list and promotions, its own calendar arithmetic, and the timeline of cycles the accepted changes put in
force (a scheduled change from the next period start, at the list price without promotion; an
immediate change from its day, with the best promotion eligible then, which also drops a pending
scheduled change; a renewal keeps a promotion only while it still runs). Each delivered day is worth the
unit price x quantity / the days of the full billing period it falls in (exact fractions). The run also
checks that the charged periods tile the delivered days (no gap, no day charged twice) and that no credit
exceeds its charge.

``PROPERTY_EXAMPLES`` (default 400) sizes the run; ``PROPERTY_RESULTS=path.json`` writes the figures.
"""

from __future__ import annotations

import calendar
import itertools
import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.subscriptions import (
    ChangeNotAllowed,
    ChargeKind,
    OrderLine,
    Owner,
    change_term_now,
    new_subscriptions,
    schedule_frequency_change,
)
from tests.helpers import PRICE_LIST_2026_01

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "400"))
RESULTS = os.environ.get("PROPERTY_RESULTS")
FIGURES: Counter[str] = Counter()

# The oracle's copy of the price list (USD, one unit, one billing period) and promotions.
LIST_PRICES = {
    "edr-business": {
        ("P1M", "monthly"): 600,
        ("P1Y", "monthly"): 500,
        ("P1Y", "annual"): 6000,
        ("P3Y", "monthly"): 450,
        ("P3Y", "annual"): 5400,
        ("P3Y", "triennial"): 16200,
    },
    "backup-standard": {
        ("P1M", "monthly"): 1200,
        ("P1Y", "monthly"): 1000,
        ("P1Y", "annual"): 12000,
        ("P3Y", "monthly"): 900,
        ("P3Y", "annual"): 10800,
    },
}
PROMOTIONS = [  # (sku, term, percent, first day, last day)
    ("edr-business", "P1Y", 20, date(2026, 1, 1), date(2026, 6, 30)),
    ("edr-business", "P3Y", 10, date(2026, 1, 1), date(2028, 12, 31)),
]
MONTHS = {"P1M": 1, "P1Y": 12, "P3Y": 36, "monthly": 1, "annual": 12, "triennial": 36}
CYCLES = [(term, frequency) for term in ("P1M", "P1Y", "P3Y") for frequency in ("monthly", "annual", "triennial")]


def plus_months(day: date, months: int) -> date:
    year = day.year + (day.month - 1 + months) // 12
    month = (day.month - 1 + months) % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def best_promotion(sku: str, term: str, on: date) -> tuple[int, date] | None:
    """(percent off, last day) of the best promotion running on ``on``."""
    running = [(p, last) for s, t, p, first, last in PROMOTIONS if s == sku and t == term and first <= on <= last]
    return max(running) if running else None


@dataclass
class Segment:
    """A stretch of the timeline under one cycle: periods from ``base`` months after ``anchor``."""

    starts: date
    anchor: date
    base: int
    term: str
    frequency: str
    list_unit: int
    promotion: tuple[int, date] | None  # (percent off, last day)

    def unit(self, start_offset: int) -> int:
        """The unit price of the period starting ``start_offset`` months after the anchor: the promotion
        counts until a renewal (a term boundary) after its last day."""
        term = MONTHS[self.term]
        renewals = [r for r in range(term, start_offset + 1, term)]
        percent = 0
        if self.promotion is not None:
            percent, last = self.promotion
            if renewals and plus_months(self.anchor, renewals[-1]) > last:
                percent = 0
        return round(Fraction(self.list_unit * (100 - percent), 100))  # half to even


class Oracle:
    def __init__(self, sku: str, quantity: int, term: str, frequency: str, bought: date) -> None:
        self.sku, self.quantity = sku, quantity
        self.segments = [
            Segment(
                bought,
                bought,
                0,
                term,
                frequency,
                LIST_PRICES[sku][(term, frequency)],
                best_promotion(sku, term, bought),
            )
        ]
        self.pending: Segment | None = None
        self.cut_periods: set[tuple[int, int]] = set()

    def period_of(self, segment: Segment, day: date) -> tuple[int, int, int]:
        """(start offset, end offset, days of the full period) of the period containing ``day``."""
        term, step, offset = MONTHS[segment.term], MONTHS[segment.frequency], segment.base
        while True:
            end = min(offset + step, (offset // term + 1) * term)
            if plus_months(segment.anchor, end) > day:
                full = (plus_months(segment.anchor, offset + step) - plus_months(segment.anchor, offset)).days
                return offset, end, full
            offset = end

    def current(self, day: date) -> Segment:
        self.settle(day)
        return self.segments[-1]

    def settle(self, day: date) -> None:
        if self.pending is not None and self.pending.starts <= day:
            self.segments.append(self.pending)
            self.pending = None

    def scheduled(self, frequency: str, today: date) -> None:
        segment = self.current(today)
        _, end, _ = self.period_of(segment, today)
        starts = plus_months(segment.anchor, end)
        # A change removes the promotion: the new frequency is billed at the list price.
        unit = LIST_PRICES[self.sku][(segment.term, frequency)]
        self.pending = Segment(starts, segment.anchor, end, segment.term, frequency, unit, None)

    def immediate(self, term: str, frequency: str, today: date) -> None:
        self.settle(today)
        self.pending = None
        unit = LIST_PRICES[self.sku][(term, frequency)]
        self.segments.append(Segment(today, today, 0, term, frequency, unit, best_promotion(self.sku, term, today)))

    def delivered_value(self, until: date) -> Fraction:
        """The price of every day from the purchase until ``until`` (exclusive)."""
        self.settle(until - timedelta(days=1))
        total = Fraction(0)
        for index, segment in enumerate(self.segments):
            last = self.segments[index + 1].starts if index + 1 < len(self.segments) else until
            day = segment.starts
            while day < min(last, until):
                start, end, full = self.period_of(segment, day)
                if end - start < MONTHS[segment.frequency]:
                    self.cut_periods.add((index, start))
                total += Fraction(segment.unit(start) * self.quantity, full)
                day += timedelta(days=1)
        return total


STEP = st.tuples(
    st.integers(0, 200),  # days since the previous step
    st.sampled_from(("scheduled", "immediate")),
    st.sampled_from(CYCLES),
)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
@given(
    sku=st.sampled_from(("edr-business", "backup-standard")),
    quantity=st.integers(1, 250),
    start=st.sampled_from(
        [(term, frequency) for term, frequency in CYCLES if (term, frequency) in LIST_PRICES["backup-standard"]]
    ),
    bought=st.dates(date(2026, 1, 1), date(2028, 12, 31)),
    steps=st.lists(STEP, max_size=8),
    tail=st.integers(0, 400),
)
def test_charges_minus_credits_equal_the_price_of_the_service_delivered(
    sku: str,
    quantity: int,
    start: tuple[str, str],
    bought: date,
    steps: list[tuple[int, str, tuple[str, str]]],
    tail: int,
) -> None:
    FIGURES["examples"] += 1
    cycle = Cycle(Term(start[0]), BillingFrequency(start[1]))
    (sub,) = new_subscriptions(
        order_id="ord",
        owner=Owner("p"),
        lines=[OrderLine("items.0", sku, quantity, cycle)],
        subscription_ids=["sub"],
        prices=PRICE_LIST_2026_01,
        currency="USD",
        now=datetime(bought.year, bought.month, bought.day, 8, tzinfo=UTC),
    )
    oracle = Oracle(sku, quantity, *start, bought)
    today = bought
    for gap, mode, (term, frequency) in steps:
        today += timedelta(days=gap)
        now = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
        try:
            if mode == "scheduled":
                (sub,) = schedule_frequency_change(
                    [sub], BillingFrequency(frequency), PRICE_LIST_2026_01, now, plan_active=True
                )
                oracle.scheduled(frequency, today)
            else:
                target = Cycle(Term(term), BillingFrequency(frequency)) if MONTHS[frequency] <= MONTHS[term] else None
                if target is None:
                    continue
                (sub,) = change_term_now([sub], target, PRICE_LIST_2026_01, now, plan_active=True)
                oracle.immediate(term, frequency, today)
            FIGURES[f"changes.{mode}"] += 1
        except ChangeNotAllowed as refused:
            FIGURES[f"refused.{refused.code}"] += 1

    sub = sub.materialise(today + timedelta(days=tail), PRICE_LIST_2026_01)
    charges = sub.charges
    periods = sorted((c for c in charges if c.kind is ChargeKind.PERIOD), key=lambda c: (c.period_start, c.seq))
    until = max(c.period_end for c in periods if c.ended_on is None)
    # The delivered spans tile [purchase, until): every day charged once, no gap.
    spans = [
        (c.period_start, c.ended_on or c.period_end) for c in periods if (c.ended_on or c.period_end) > c.period_start
    ]
    assert spans[0][0] == bought and spans[-1][1] == until
    assert all(left[1] == right[0] for left, right in itertools.pairwise(spans)), spans
    for period in periods:
        credits = [c for c in charges if c.credit_for == period.seq]
        assert -sum(c.amount_minor for c in credits) == period.credited_minor <= period.amount_minor

    billed = sum(c.amount_minor for c in charges)
    delivered = oracle.delivered_value(until)
    rounded = sum(1 for c in charges if c.kind is ChargeKind.CREDIT) + len(oracle.cut_periods)
    error = abs(billed - delivered)
    assert error <= Fraction(rounded, 2), (billed, float(delivered), rounded, charges)
    FIGURES["rounded_amounts"] += rounded
    FIGURES["max_error_in_hundredths_of_a_minor_unit"] = max(
        FIGURES["max_error_in_hundredths_of_a_minor_unit"], int(error * 100)
    )
    FIGURES["charges"] += len(charges)
    if RESULTS:
        Path(RESULTS).write_text(json.dumps(dict(sorted(FIGURES.items())), indent=1) + "\n")
