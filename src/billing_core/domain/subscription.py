"""A licence subscription and its charge schedule: billed in advance, each billing period charged in full
when it starts, periods as month offsets from the anchor (``periods.add_months``), renewal re-priced from
the list then in effect; a change credits from the amount actually charged for the period it cuts short.
Also the one lifecycle rule with the monthly plan (``end_with_plan``) and the charge history's bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle
from billing_core.domain.errors import Conflict
from billing_core.domain.periods import add_months, months_offset_on_or_before
from billing_core.domain.pricing import PriceList, Prices
from billing_core.domain.proration import days_between, prorate, scale

BASIS_POINTS = 10_000


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"  # renewal was switched off and the term is over


class ChargeKind(StrEnum):
    PERIOD = "licence_period"  # a billing period, in advance
    CREDIT = "change_credit"  # the unused days of a period a change cut short


@dataclass(frozen=True)
class Owner:
    """Who holds the subscription: a partner, or one of the partner's customers (billed to the partner)."""

    partner_id: str
    customer_id: str | None = None


@dataclass(frozen=True)
class PriceSnapshot:
    """The price a subscription is billed at, frozen when it was set: list price of one unit for one
    billing period, from a named price list, less the applied promotion."""

    price_list_version: str
    currency: str
    list_unit_minor: int
    promotion: str | None = None
    percent_off_basis_points: int = 0

    @property
    def unit_minor(self) -> int:
        return self.list_unit_minor - scale(self.list_unit_minor, self.percent_off_basis_points, BASIS_POINTS)


@dataclass(frozen=True)
class Charge:
    """One entry of a subscription's charge schedule: a billing period charged in advance, or the credit
    of a change. ``bill_month`` is the invoice it goes on."""

    seq: int
    kind: ChargeKind
    period_start: date
    period_end: date  # exclusive: the next period's first day
    quantity: int
    unit_minor: int
    amount_minor: int  # a credit is negative
    bill_month: BillingMonth
    cycle: Cycle
    price_list_version: str
    promotion: str | None = None
    # A period: how much later credits gave back, and the day a change cut it short (used [start, ended_on)).
    credited_minor: int = 0
    ended_on: date | None = None
    # A credit: the period charge it gives back from (its seq, period and amount, copied here so the
    # credit's invoice line can name it even after that charge moved to the history).
    credit_for: int | None = None
    credited_period: tuple[date, date] | None = None
    credited_amount_minor: int | None = None

    @property
    def days(self) -> int:
        return days_between(self.period_start, self.period_end)

    @property
    def remaining_minor(self) -> int:
        return self.amount_minor - self.credited_minor


@dataclass(frozen=True)
class PendingChange:
    """A scheduled frequency change: from the period starting at ``effective_offset`` (months from the
    anchor) the subscription bills ``frequency`` at ``price``."""

    frequency: BillingFrequency
    effective_offset: int
    effective_on: date
    price: PriceSnapshot
    requested_at: datetime


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    order_id: str
    owner: Owner
    sku: str
    quantity: int
    cycle: Cycle
    # First day of the current term series: the purchase, or the last immediate change. Every period and
    # term boundary is the anchor plus whole calendar months.
    anchor: date
    price: PriceSnapshot
    created_at: datetime
    add_on_of: str | None = None  # the base subscription of an add-on
    auto_renew: bool = True
    # Renewal switched off: the subscription ends at this boundary (months from the anchor: a term end).
    ends_at_offset: int | None = None
    # Months from the anchor of the first billing period not in the charge schedule yet.
    next_offset: int = 0
    state: SubscriptionState = SubscriptionState.ACTIVE
    pending_change: PendingChange | None = None
    # The charges still open: current and future periods and what is not invoiced yet (settled ones move
    # to the store's history, see ``settle_charge_history``); ``last_charge_seq`` numbers them all.
    charges: tuple[Charge, ...] = ()
    last_charge_seq: int = 0
    changes_made: int = 0
    version: int | None = None

    # -- dates -----------------------------------------------------------------------------------
    def boundary(self, offset: int) -> date:
        return add_months(self.anchor, offset)

    def term_bounds_at(self, offset: int) -> tuple[int, int]:
        """Start and end offsets of the term that contains ``offset``."""
        months = self.cycle.term.months
        start = offset // months * months
        return start, start + months

    def term_at(self, day: date) -> tuple[date, date]:
        """The term containing ``day`` (first day, first day after it)."""
        start, end = self.term_bounds_at(months_offset_on_or_before(self.anchor, max(day, self.anchor)))
        return self.boundary(start), self.boundary(end)

    @property
    def expires_on(self) -> date | None:
        """With renewal off: the first day the subscription no longer runs."""
        return self.boundary(self.ends_at_offset) if self.ends_at_offset is not None else None

    def active_on(self, day: date) -> bool:
        expires = self.expires_on
        return self.state is SubscriptionState.ACTIVE and day >= self.anchor and (expires is None or day < expires)

    # -- the charge schedule ---------------------------------------------------------------------
    def materialise(self, through: date, prices: Prices) -> Subscription:
        """Add every billing period starting on or before ``through`` to the charge schedule.

        Deterministic: the result depends only on the subscription's state and the published price lists
        (never rewritten), never on when it is computed, so the monthly run and every change see the same
        charges. Every state change first materialises through its own day, so a period is always charged
        with the state it started in. A period that starts a new term (a renewal) is re-priced first."""
        sub = self
        while sub.state is SubscriptionState.ACTIVE:
            start = sub.next_offset
            if sub.boundary(start) > through:
                break
            # Expired once its end day is reached, not when its last period is charged: that period is paid.
            if sub.ends_at_offset is not None and start >= sub.ends_at_offset:
                sub = replace(sub, state=SubscriptionState.EXPIRED)
                break
            pending = sub.pending_change
            if pending is not None and pending.effective_offset == start:
                sub = replace(
                    sub,
                    cycle=Cycle(sub.cycle.term, pending.frequency),
                    price=pending.price,
                    pending_change=None,
                )
            if start > 0 and start % sub.cycle.term.months == 0:
                sub = replace(sub, price=sub.renewal_price(prices.on(sub.boundary(start))))
            sub = sub._charge_period(start)
        return sub

    def _charge_period(self, start: int) -> Subscription:
        frequency = self.cycle.frequency.months
        _, term_end = self.term_bounds_at(start)
        end = min(start + frequency, term_end)  # a period never runs past its term's end
        first, last = self.boundary(start), self.boundary(end)
        full = self.price.unit_minor * self.quantity
        # A period cut short by the term end (a frequency change mid-term) is charged for its days only.
        amount = (
            full
            if end == start + frequency
            else prorate(full, days_between(first, last), days_between(first, self.boundary(start + frequency)))
        )
        charge = Charge(
            seq=self.last_charge_seq + 1,
            kind=ChargeKind.PERIOD,
            period_start=first,
            period_end=last,
            quantity=self.quantity,
            unit_minor=self.price.unit_minor,
            amount_minor=amount,
            bill_month=BillingMonth.containing_date(first),
            cycle=self.cycle,
            price_list_version=self.price.price_list_version,
            promotion=self.price.promotion,
        )
        return replace(self, charges=(*self.charges, charge), next_offset=end, last_charge_seq=charge.seq)

    def renewal_price(self, prices: PriceList) -> PriceSnapshot:
        """The price of a renewed term: the list price then current, and the promotion only if that list
        still runs it for this offer on the renewal day. An offer no longer sold renews at the list price
        it was last billed at (existing subscriptions are never cut off by a new price list)."""
        renewal_day = self.boundary(self.next_offset)
        price = prices.licence_price(self.sku, self.cycle, self.price.currency)
        base = (
            PriceSnapshot(prices.version, self.price.currency, price.amount_minor)
            if price is not None
            else replace(self.price, promotion=None, percent_off_basis_points=0)
        )
        promotion = prices.promotion(self.price.promotion) if self.price.promotion else None
        if promotion is not None and promotion.applies_to(self.sku, self.cycle, renewal_day):
            return replace(base, promotion=promotion.code, percent_off_basis_points=promotion.percent_off_basis_points)
        return base

    def charges_billed_in(self, month: BillingMonth, prices: Prices) -> list[Charge]:
        """What the invoice of ``month`` carries for this subscription."""
        return [c for c in self.materialise(month.last_day, prices).charges if c.bill_month == month]

    def current_period(self, day: date, prices: Prices) -> Charge | None:
        """The period charge that covers ``day`` (after materialising through it)."""
        for charge in reversed(self.materialise(day, prices).charges):
            if (
                charge.kind is ChargeKind.PERIOD
                and charge.ended_on is None
                and charge.period_start <= day < charge.period_end
            ):
                return charge
        return None

    def next_period_start(self, today: date, prices: Prices) -> date | None:
        """When the next billing period starts (None: the subscription ends first)."""
        sub = self.materialise(today, prices)
        if sub.state is not SubscriptionState.ACTIVE:
            return None
        if sub.ends_at_offset is not None and sub.next_offset >= sub.ends_at_offset:
            return None
        return sub.boundary(sub.next_offset)

    # -- renewal ---------------------------------------------------------------------------------
    def set_renewal(self, auto_renew: bool, today: date, prices: Prices) -> Subscription:
        sub = self.materialise(today, prices)
        if sub.state is not SubscriptionState.ACTIVE:
            raise Conflict(f"subscription {self.subscription_id} has expired", code="subscription_not_active")
        if auto_renew:
            return replace(sub, auto_renew=True, ends_at_offset=None)
        _, term_end = sub.term_bounds_at(months_offset_on_or_before(sub.anchor, today))
        return replace(sub, auto_renew=False, ends_at_offset=term_end)


def credit_unused_days(sub: Subscription, day: date, prices: Prices) -> Subscription:
    """End the current period on ``day`` and credit its unused days [day, period end): the amount charged
    for the period x unused days / the period's days, and never more than what is left of that charge."""
    current = sub.current_period(day, prices)
    if current is None:
        return sub
    unused = days_between(day, current.period_end)
    credit = min(prorate(current.amount_minor, unused, current.days), current.remaining_minor)
    cut = replace(current, ended_on=day, credited_minor=current.credited_minor + credit)
    charges = tuple(cut if c.seq == current.seq else c for c in sub.charges)
    last_seq = sub.last_charge_seq
    if credit:
        last_seq += 1
        charges += (
            Charge(
                seq=last_seq,
                kind=ChargeKind.CREDIT,
                period_start=day,
                period_end=current.period_end,
                quantity=current.quantity,
                unit_minor=current.unit_minor,
                amount_minor=-credit,
                bill_month=BillingMonth.containing_date(day),
                cycle=current.cycle,
                price_list_version=current.price_list_version,
                promotion=current.promotion,
                credit_for=current.seq,
                credited_period=(current.period_start, current.period_end),
                credited_amount_minor=current.amount_minor,
            ),
        )
    return replace(sub, charges=charges, last_charge_seq=last_seq)


def end_with_plan(sub: Subscription, plan_ends_on: date, prices: Prices) -> Subscription:
    """The one lifecycle rule between the monthly plan and its subscriptions: when the plan that pays for
    them ends (``plan_ends_on``, its last day), the term in progress that day is a commitment that runs to
    its end and is billed, period by period, on invoices after the plan's final month; nothing renews
    after it. An end already set earlier (renewal switched off) stays. Only the end fields change, so the
    stored charge schedule stays small."""
    current = sub.materialise(plan_ends_on, prices)
    if current.state is not SubscriptionState.ACTIVE or plan_ends_on < current.anchor:
        return sub
    _, term_end = current.term_bounds_at(months_offset_on_or_before(current.anchor, plan_ends_on))
    if sub.ends_at_offset is not None and sub.ends_at_offset <= term_end and sub.anchor == current.anchor:
        return sub
    return replace(sub, auto_renew=False, ends_at_offset=term_end)


def last_bill_month(subscriptions: Sequence[Subscription], prices: Prices) -> BillingMonth | None:
    """The last month any of the subscriptions bills in (all must end; else ``ValueError``)."""
    last: BillingMonth | None = None
    for sub in subscriptions:
        if sub.state is SubscriptionState.ACTIVE and sub.expires_on is None:
            raise ValueError(f"{sub.subscription_id} renews without end")
        if sub.expires_on is None:
            continue
        for charge in sub.materialise(sub.expires_on, prices).charges:
            last = charge.bill_month if last is None or charge.bill_month > last else last
    return last


def settle_charge_history(
    sub: Subscription, invoiced_through: BillingMonth | None, today: date
) -> tuple[Subscription, tuple[Charge, ...]]:
    """Split off the charges that can no longer change: invoiced already (billed in ``invoiced_through``
    or before) and not the current or a future period (a change may still credit those). They move to
    the store's charge history, so a subscription's own item stays small however long it runs."""
    if invoiced_through is None:
        return sub, ()

    def still_open(charge: Charge) -> bool:
        current = charge.kind is ChargeKind.PERIOD and charge.ended_on is None and charge.period_end > today
        return charge.bill_month > invoiced_through or current

    settled = tuple(c for c in sub.charges if not still_open(c))
    return replace(sub, charges=tuple(c for c in sub.charges if still_open(c))), settled


def new_charges(before: Sequence[Subscription], after: Sequence[Subscription]) -> list[tuple[Subscription, Charge]]:
    """The charge-schedule entries ``after`` has that ``before`` had not: what a change adds to invoices."""
    known = {(s.subscription_id, c.seq) for s in before for c in s.charges}
    return [(s, c) for s in after for c in s.charges if (s.subscription_id, c.seq) not in known]
