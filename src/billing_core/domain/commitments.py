"""Minimum commitments with prorated extra units (seed 003), one billing period at a time.

A subscription's plan *includes* a number of units (users, numbers): they are billed for every period in
full, however few are created ("a minimum commitment for invoicing, not a usage requirement"). Creating a
unit beyond the units already paid in the period buys one more *slot*: it is charged from the day of its
creation to the end of the period (daily proration, the one rounding rule of ``proration``) and stays paid
for the whole period even if the unit is deleted (never refunded). The paid slots are a high-water mark
that deletions never lower, so a unit deleted and created again in the same period is not charged twice
(the seed's tip: delete first, then add). Billed units = max(included, high-water mark).

Decision: "for the whole duration of your contract" is read as the billing period in progress: the next
period starts from the units alive then (at least the included ones), billed in advance like any period.
A vendor that wants the mark to hold for a whole term bills that term as one period (P1Y annual).

When an extra slot is invoiced is the plan's choice (``UnitInvoicing``): at once (the seed: "a new invoice
is triggered automatically"), in one digest a day, or on the next regular monthly invoice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.domain.proration import days_between, prorate

MAX_UNITS = 100_000


class UnitInvoicing(StrEnum):
    IMMEDIATE = "immediate"  # the seed: an invoice for the extra units at once
    DAILY_DIGEST = "daily_digest"  # one invoice a day for every slot bought that day
    NEXT_INVOICE = "next_invoice"  # a line on the next regular (monthly) invoice

    def invoice_on(self, bought_on: date) -> date:
        """The day the slot's charge is invoiced (and charged off-session)."""
        if self is UnitInvoicing.IMMEDIATE:
            return bought_on
        if self is UnitInvoicing.DAILY_DIGEST:
            return bought_on + timedelta(days=1)
        return BillingMonth.containing_date(bought_on).next().first_day


@dataclass(frozen=True)
class ExtraUnitCharge:
    """One slot bought beyond the units already paid in the period: charged from ``charged_from`` to the
    period's end, never refunded. ``slot`` numbers the slots beyond the included units (1 = the first)."""

    slot: int
    unit_id: str
    period_start: date
    period_end: date  # exclusive
    charged_from: date
    amount_minor: int
    invoice_on: date

    @property
    def key(self) -> str:
        """What makes the charge unique: at most one charge per slot and period, whatever is retried."""
        return f"slot:{self.period_start.isoformat()}:{self.slot}"


@dataclass(frozen=True)
class CommitmentView:
    """The plan dashboard (seed 003): units created, included in the plan, additional ones, what is paid."""

    created: int
    included: int
    additional: int
    paid_units: int
    extra_charged_minor: int


@dataclass(frozen=True)
class CommittedPeriod:
    """One billing period of a subscription with a unit commitment."""

    included: int
    unit_price_minor: int  # one unit for the whole period (the subscription's price)
    period_start: date
    period_end: date  # exclusive
    live: frozenset[str]
    high_water: int  # units paid this period: never below ``included``, never lowered by a deletion
    invoicing: UnitInvoicing = UnitInvoicing.IMMEDIATE
    charges: tuple[ExtraUnitCharge, ...] = ()

    @classmethod
    def open(
        cls,
        *,
        included: int,
        unit_price_minor: int,
        period_start: date,
        period_end: date,
        live: frozenset[str] = frozenset(),
        invoicing: UnitInvoicing = UnitInvoicing.IMMEDIATE,
    ) -> CommittedPeriod:
        """A new period: billed in advance for max(included, units alive at its start)."""
        if not 0 <= included <= MAX_UNITS:
            raise InvalidRequest.for_field("included_units", f"must be between 0 and {MAX_UNITS}")
        if period_end <= period_start:
            raise ValueError(f"empty period {period_start} .. {period_end}")
        return cls(
            included,
            unit_price_minor,
            period_start,
            period_end,
            live,
            max(included, len(live)),
            invoicing,
        )

    @property
    def billed_units(self) -> int:
        return self.high_water

    @property
    def period_charge_minor(self) -> int:
        """What the period's own (in-advance) charge bills: the paid units at its start, in full."""
        return (self.high_water - len(self.charges)) * self.unit_price_minor

    def create_unit(self, unit_id: str, on: date) -> CommittedPeriod:
        """A unit is created on ``on``: free while a paid slot is free, else one more slot, charged from that
        day to the period's end."""
        if not self.period_start <= on < self.period_end:
            raise ValueError(f"{on} is not in the period {self.period_start} .. {self.period_end}")
        if unit_id in self.live:
            raise Conflict(f"unit {unit_id} exists already", code="unit_exists")
        if len(self.live) >= MAX_UNITS:
            raise Conflict(f"at most {MAX_UNITS} units", code="too_many_units")
        live = self.live | {unit_id}
        if len(live) <= self.high_water:
            return replace(self, live=live)
        slot = self.high_water - self.included + 1
        amount = prorate(
            self.unit_price_minor, days_between(on, self.period_end), days_between(self.period_start, self.period_end)
        )
        charge = ExtraUnitCharge(
            slot, unit_id, self.period_start, self.period_end, on, amount, self.invoicing.invoice_on(on)
        )
        return replace(self, live=live, high_water=self.high_water + 1, charges=(*self.charges, charge))

    def delete_unit(self, unit_id: str) -> CommittedPeriod:
        """Deleting frees the unit's slot for a later unit of the same period; it never credits anything."""
        if unit_id not in self.live:
            raise Conflict(f"unit {unit_id} does not exist", code="unit_not_found")
        return replace(self, live=self.live - {unit_id})

    def next_period(self, period_end: date) -> CommittedPeriod:
        """The following period (ending ``period_end``): the units alive now carry over, the mark restarts."""
        return CommittedPeriod.open(
            included=self.included,
            unit_price_minor=self.unit_price_minor,
            period_start=self.period_end,
            period_end=period_end,
            live=self.live,
            invoicing=self.invoicing,
        )

    def view(self) -> CommitmentView:
        return CommitmentView(
            created=len(self.live),
            included=self.included,
            additional=max(0, len(self.live) - self.included),
            paid_units=self.high_water,
            extra_charged_minor=sum(charge.amount_minor for charge in self.charges),
        )


def committed_seats(seats_used: int, committed_minimum: int) -> int:
    """A metered plan with a committed seat minimum bills max(seats used, commitment) for the month."""
    if committed_minimum < 0 or seats_used < 0:
        raise ValueError("seats and commitments are never negative")
    return max(seats_used, committed_minimum)
