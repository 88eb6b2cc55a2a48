"""Licence subscriptions, the orders that group them, their charge schedule and billing-frequency
changes (Microsoft Partner Center's rules, seed 002).

A subscription bills in advance: each billing period is charged in full when it starts, on the invoice
of the calendar month the period starts in. Periods are month offsets from the subscription's anchor
(``periods.add_months``), so their dates never drift. The charges already made are kept on the
subscription (its *charge schedule*): a change credits from the amount actually charged for the period
it cuts short, never from today's price, and never more than what is left of that charge.

Changes apply to the whole order (every subscription and add-on in it). The order records the commerce
experience it was bought under, and that decides which changes it may make:

- new experience, scheduled (frequency only): takes effect when the next billing period starts; the
  term and its periods are not reset; the new frequency is billed at the current list price, without
  promotion; it can be withdrawn until it takes effect;
- new experience, immediate (a longer term, with a billing frequency): a new term starts today; the
  unused days of the current period are credited, the first period of the new term is charged at the
  current list price; the promotion stays if it is eligible for the new term, else another eligible one
  applies by itself (the seed's note on term changes);
- legacy experience (frequency only, immediate): the term is reset to 12 months from today at the
  current list price without promotion; the unused days are credited and the new period is charged.

Every change keeps the subscription id, is free of charge and can be repeated; an immediate change
deletes a pending scheduled change. A renewal (the next term of the same cycle) re-prices from the list
in effect on its first day; a promotion survives it only while it still runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.catalog import ALL_CYCLES, BillingFrequency, Cycle, ProductKind, Term
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.domain.invoicing import CreditedCharge, InvoiceLine, LineKind, SubscriptionLineDetail
from billing_core.domain.money import Money
from billing_core.domain.periods import add_months, months_offset_on_or_before
from billing_core.domain.pricing import PriceBook, PriceList
from billing_core.domain.proration import days_between, prorate, scale

BASIS_POINTS = 10_000
# One TransactWriteItems holds at most 100 items; an order is written with its subscriptions and audit event.
MAX_SUBSCRIPTIONS_PER_ORDER = 20
MAX_QUANTITY = 100_000

M, A, T = BillingFrequency.MONTHLY, BillingFrequency.ANNUAL, BillingFrequency.TRIENNIAL

# ---------------------------------------------------------------------------------------------------
# The two eligibility matrices of the seed, as data.
# ---------------------------------------------------------------------------------------------------

# Scheduled change (billing frequency only, effective at the next billing period): the accepted new
# frequencies per current term and frequency.
SCHEDULED_FREQUENCY_CHANGES: dict[Cycle, frozenset[BillingFrequency]] = {
    Cycle(Term.P3Y, M): frozenset({A}),
    Cycle(Term.P3Y, T): frozenset(),
    Cycle(Term.P3Y, A): frozenset({M}),
    Cycle(Term.P1Y, A): frozenset(),
    Cycle(Term.P1Y, M): frozenset(),
    Cycle(Term.P1M, M): frozenset(),
}

# Immediate change (the term, together with a billing frequency): the accepted new cycles.
_P3Y_ANY = frozenset({Cycle(Term.P3Y, M), Cycle(Term.P3Y, A), Cycle(Term.P3Y, T)})
IMMEDIATE_TERM_CHANGES: dict[Cycle, frozenset[Cycle]] = {
    Cycle(Term.P3Y, M): frozenset(),
    Cycle(Term.P3Y, T): frozenset(),
    Cycle(Term.P3Y, A): frozenset(),
    Cycle(Term.P1Y, A): _P3Y_ANY,
    Cycle(Term.P1Y, M): _P3Y_ANY,
    Cycle(Term.P1M, M): frozenset({Cycle(Term.P1Y, M), Cycle(Term.P1Y, A)}) | _P3Y_ANY,
}


# A period is priced from the list in effect on the day it starts: one list, or a book of effective-dated lists.
Prices = PriceList | PriceBook


class CommerceExperience(StrEnum):
    """Seed 002 describes two: which one an order was bought under decides the changes it may make."""

    NEW = "new"  # scheduled frequency-only changes; immediate changes to a longer term
    LEGACY = "legacy"  # immediate frequency changes that reset the term to 12 months


class ChangeMode(StrEnum):
    SCHEDULED = "scheduled"  # new experience: the billing frequency, from the next billing period
    IMMEDIATE = "immediate"  # new experience: a longer term (with a billing frequency), from today
    LEGACY_FREQUENCY = "legacy_frequency"  # legacy experience: the billing frequency now, term reset to P1Y


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
            if sub.ends_at_offset is not None and start >= sub.ends_at_offset:
                sub = replace(sub, state=SubscriptionState.EXPIRED)
                break
            if sub.boundary(start) > through:
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


@dataclass(frozen=True)
class Order:
    """Subscriptions bought together (with their add-ons). A billing-frequency change applies to all."""

    order_id: str
    owner: Owner
    subscription_ids: tuple[str, ...]
    created_at: datetime
    experience: CommerceExperience = CommerceExperience.NEW
    # Exactly-once creation and changes: the request fingerprint of the order's Idempotency-Key, and the
    # keys of the latest changes applied (a replayed change answers without changing anything again).
    request_fingerprint: str = ""
    change_keys: tuple[tuple[str, str], ...] = ()
    version: int | None = None

    def replayed_change(self, key: str, fingerprint: str) -> bool:
        """Whether the change with ``key`` was applied already. The same key with another body is a 422."""
        for known, known_fingerprint in self.change_keys:
            if known == key:
                if known_fingerprint != fingerprint:
                    raise InvalidRequest.for_field("Idempotency-Key", "this key was already used with another change")
                return True
        return False

    def record_change(self, key: str, fingerprint: str) -> Order:
        return replace(self, change_keys=((*self.change_keys, (key, fingerprint)))[-20:])


# ---------------------------------------------------------------------------------------------------
# Buying
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderLine:
    """One subscription to buy. ``field`` names it in errors, e.g. ``items.0`` or ``items.0.add_ons.1``."""

    field: str
    sku: str
    quantity: int
    cycle: Cycle
    add_on_of_field: str | None = None  # the line of its base (add-ons follow their base's cycle)


class PromotionRule(StrEnum):
    """Which promotion a new price carries (seed 002: a change removes promotions; only a term change
    keeps an eligible one or takes another eligible one by itself)."""

    BEST_ELIGIBLE = "best_eligible"  # at purchase
    KEEP_OR_BEST_ELIGIBLE = "keep_or_best_eligible"  # an immediate term change (new experience)
    NONE = "none"  # a frequency change, scheduled or legacy


def list_price_snapshot(
    prices: PriceList,
    sku: str,
    cycle: Cycle,
    currency: str,
    day: date,
    rule: PromotionRule = PromotionRule.BEST_ELIGIBLE,
    current_promotion: str | None = None,
) -> PriceSnapshot | None:
    """The list price of ``sku`` on ``cycle`` on ``prices`` with the promotion ``rule`` gives on ``day``."""
    price = prices.licence_price(sku, cycle, currency)
    if price is None:
        return None
    kept = prices.promotion(current_promotion) if current_promotion else None
    if rule is PromotionRule.NONE:
        promotion = None
    elif rule is PromotionRule.KEEP_OR_BEST_ELIGIBLE and kept is not None and kept.applies_to(sku, cycle, day):
        promotion = kept
    else:
        promotion = prices.best_promotion(sku, cycle, day)
    return PriceSnapshot(
        prices.version,
        currency,
        price.amount_minor,
        promotion.code if promotion else None,
        promotion.percent_off_basis_points if promotion else 0,
    )


def new_subscriptions(
    *,
    order_id: str,
    owner: Owner,
    lines: Sequence[OrderLine],
    subscription_ids: Sequence[str],
    prices: PriceList,
    currency: str,
    now: datetime,
) -> list[Subscription]:
    """The subscriptions of a new order, each with its first billing period charged today. Every problem
    is a 422 naming its field."""
    now = require_utc(now)
    today = now.date()
    if not lines:
        raise InvalidRequest.for_field("items", "an order needs at least one subscription")
    if len(lines) > MAX_SUBSCRIPTIONS_PER_ORDER:
        raise InvalidRequest.for_field("items", f"at most {MAX_SUBSCRIPTIONS_PER_ORDER} subscriptions and add-ons")
    by_field = {line.field: (line, sub_id) for line, sub_id in zip(lines, subscription_ids, strict=True)}
    made: list[Subscription] = []
    for line, subscription_id in zip(lines, subscription_ids, strict=True):
        sku = prices.require_licence_sku(line.sku, field_name=f"{line.field}.sku")
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidRequest.for_field(f"{line.field}.quantity", f"must be between 1 and {MAX_QUANTITY}")
        base_id = None
        if line.add_on_of_field is not None:
            base_line, base_id = by_field[line.add_on_of_field]
            if base_line.sku not in sku.add_on_for:
                allowed = ", ".join(sorted(sku.add_on_for)) or "none"
                raise InvalidRequest.for_field(
                    f"{line.field}.sku", f"{sku.code} is an add-on for {allowed}, not for {base_line.sku}"
                )
            if line.cycle != base_line.cycle:
                # Seed 002 changes an add-on with its base: they must share the cycle (and, one order, one currency).
                what = "term" if line.cycle.term is not base_line.cycle.term else "billing_frequency"
                raise InvalidRequest.for_field(
                    f"{line.field}.{what}",
                    f"an add-on is billed on its base subscription's cycle {base_line.cycle}, not {line.cycle}",
                )
        elif sku.is_add_on:
            raise InvalidRequest.for_field(
                f"{line.field}.sku", f"{sku.code} is an add-on: order it under add_ons of its base subscription"
            )
        snapshot = list_price_snapshot(prices, sku.code, line.cycle, currency, today)
        if snapshot is None:
            offered = ", ".join(str(c) for c in prices.offered_cycles(sku.code, currency)) or "none"
            what = f"{line.add_on_of_field}.term" if line.add_on_of_field else f"{line.field}.billing_frequency"
            raise InvalidRequest.for_field(what, f"{sku.code} is not offered as {line.cycle}; offered: {offered}")
        subscription = Subscription(
            subscription_id=subscription_id,
            order_id=order_id,
            owner=owner,
            sku=sku.code,
            quantity=line.quantity,
            cycle=line.cycle,
            anchor=today,
            price=snapshot,
            created_at=now,
            add_on_of=base_id,
        )
        made.append(subscription.materialise(today, prices))
    return made


# ---------------------------------------------------------------------------------------------------
# Changing the billing frequency (and term)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


@dataclass(frozen=True)
class ChangeOption:
    """One change the order could make now, allowed or refused with the reasons."""

    mode: ChangeMode
    cycle: Cycle
    effective_on: date | None
    refusals: tuple[Refusal, ...]

    @property
    def allowed(self) -> bool:
        return not self.refusals


class ChangeNotAllowed(Conflict):
    code = "change_not_allowed"

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        super().__init__("; ".join(r.message for r in refusals))
        self.refusals = tuple(refusals)
        self.code = refusals[0].code if refusals else self.code


def prerequisite_refusals(
    subscriptions: Sequence[Subscription], prices: PriceList, today: date, *, plan_active: bool
) -> list[Refusal]:
    """Seed 002's prerequisites, for every subscription of the order: active, a paid subscription, on the
    current price list, all on the same billing cycle, licence-based, its promotion (if any) still
    running. Also: the partner's monthly billing plan (which pays for it) is active."""
    refusals: list[Refusal] = []
    if not plan_active:
        refusals.append(Refusal("plan_not_active", "the partner's monthly billing plan is not active"))
    for sub in subscriptions:
        name = sub.subscription_id
        if not sub.materialise(today, prices).active_on(today):
            refusals.append(Refusal("subscription_not_active", f"{name} is not active"))
        sku = prices.catalog.skus.get(sub.sku)
        if sku is None or prices.catalog.product_of(sub.sku).kind is not ProductKind.LICENCE:
            refusals.append(Refusal("not_licence_based", f"{name} ({sub.sku}) is not a licence-based offer"))
        elif sku.trial or sub.price.list_unit_minor == 0:
            refusals.append(Refusal("not_paid", f"{name} ({sub.sku}) is a free trial, not a paid subscription"))
        if not prices.sells(sub.sku, sub.cycle, sub.price.currency):
            # "On the current price list": the offer is still sold, whichever list version priced it.
            refusals.append(
                Refusal(
                    "not_on_current_price_list",
                    f"{name}: {sub.sku} as {sub.cycle} in {sub.price.currency} is no longer sold "
                    f"on the current price list {prices.version}",
                )
            )
        if sub.price.promotion is not None:
            promotion = prices.promotion(sub.price.promotion)
            if promotion is None or not promotion.active_on(today):
                refusals.append(Refusal("promotion_ended", f"the promotion {sub.price.promotion} of {name} has ended"))
    cycles = {(sub.cycle, sub.anchor, sub.materialise(today, prices).next_offset) for sub in subscriptions}
    if len(cycles) > 1:
        listed = ", ".join(f"{s.subscription_id} {s.cycle}" for s in subscriptions)
        refusals.append(
            Refusal("mixed_billing_cycles", f"the order's subscriptions are on different billing cycles: {listed}")
        )
    return refusals


def _offer_refusals(subscriptions: Sequence[Subscription], cycle: Cycle, prices: PriceList) -> list[Refusal]:
    missing = [s.sku for s in subscriptions if prices.licence_price(s.sku, cycle, s.price.currency) is None]
    if missing:
        return [Refusal("not_offered", f"{', '.join(sorted(set(missing)))} not offered as {cycle} on the price list")]
    return []


def scheduled_refusals(current: Cycle, frequency: BillingFrequency) -> list[Refusal]:
    """The scheduled-change matrix (frequency only, term unchanged)."""
    if frequency is current.frequency:
        return [Refusal("same_billing_frequency", f"the order is already billed {frequency.value}")]
    try:
        target = Cycle(current.term, frequency)
    except ValueError:
        return [Refusal("not_in_matrix", f"a {current.term.value} term cannot be billed {frequency.value}")]
    if target.upfront:
        return [
            Refusal(
                "upfront_only_at_purchase",
                f"{target} is an upfront billing plan: available only at purchase, not as a mid-term change",
            )
        ]
    if frequency not in SCHEDULED_FREQUENCY_CHANGES[current]:
        return [Refusal("not_in_matrix", f"{current} accepts no scheduled change to {frequency.value} billing")]
    return []


def immediate_refusals(current: Cycle, target: Cycle) -> list[Refusal]:
    """The immediate-change matrix (the term, with a billing frequency)."""
    if target.term.months < current.term.months:
        return [
            Refusal(
                "shorter_term",
                f"the term can only get longer: {current.term.value} cannot change to {target.term.value}, "
                "not even days before renewal",
            )
        ]
    if target.term is current.term:
        return [
            Refusal(
                "same_term",
                f"an immediate change changes the term ({current.term.value} now); for the billing frequency "
                "alone use a scheduled change",
            )
        ]
    if target not in IMMEDIATE_TERM_CHANGES[current]:
        return [Refusal("not_in_matrix", f"{current} accepts no immediate change to {target}")]
    return []


def legacy_refusals(current: Cycle, frequency: BillingFrequency) -> list[Refusal]:
    """The legacy experience: from annual to monthly billing or from monthly to annual, nothing else."""
    if frequency not in (M, A):
        return [Refusal("not_in_experience", "the legacy experience changes between monthly and annual billing only")]
    if frequency is current.frequency:
        return [Refusal("same_billing_frequency", f"the order is already billed {frequency.value}")]
    return []


def _modes_of(experience: CommerceExperience) -> tuple[ChangeMode, ...]:
    if experience is CommerceExperience.LEGACY:
        return (ChangeMode.LEGACY_FREQUENCY,)
    return (ChangeMode.SCHEDULED, ChangeMode.IMMEDIATE)


def change_options(
    subscriptions: Sequence[Subscription],
    prices: Prices,
    today: date,
    *,
    plan_active: bool,
    experience: CommerceExperience = CommerceExperience.NEW,
) -> list[ChangeOption]:
    """Every change the order may make today under its experience, and every one it may not, each with
    its reasons."""
    current = prices.on(today)
    base = subscriptions[0]
    prerequisites = prerequisite_refusals(subscriptions, current, today, plan_active=plan_active)
    options: list[ChangeOption] = []
    if ChangeMode.SCHEDULED in _modes_of(experience):
        next_start = base.next_period_start(today, prices)
        for frequency in BillingFrequency:
            try:
                cycle = Cycle(base.cycle.term, frequency)
            except ValueError:
                continue  # e.g. a one-month term billed annually does not exist
            refusals = scheduled_refusals(base.cycle, frequency)
            if not refusals:
                refusals += _offer_refusals(subscriptions, cycle, current)
                if next_start is None:
                    refusals.append(Refusal("no_next_period", "the subscription ends before another billing period"))
            options.append(ChangeOption(ChangeMode.SCHEDULED, cycle, next_start, tuple(prerequisites + refusals)))
    if ChangeMode.IMMEDIATE in _modes_of(experience):
        for cycle in ALL_CYCLES:
            refusals = immediate_refusals(base.cycle, cycle) or _offer_refusals(subscriptions, cycle, current)
            options.append(ChangeOption(ChangeMode.IMMEDIATE, cycle, today, tuple(prerequisites + refusals)))
    if ChangeMode.LEGACY_FREQUENCY in _modes_of(experience):
        for frequency in (M, A):
            cycle = Cycle(Term.P1Y, frequency)
            refusals = legacy_refusals(base.cycle, frequency) or _offer_refusals(subscriptions, cycle, current)
            options.append(ChangeOption(ChangeMode.LEGACY_FREQUENCY, cycle, today, tuple(prerequisites + refusals)))
    return options


def _require(refusals: list[Refusal]) -> None:
    if refusals:
        raise ChangeNotAllowed(refusals)


def schedule_frequency_change(
    subscriptions: Sequence[Subscription],
    frequency: BillingFrequency,
    prices: Prices,
    now: datetime,
    *,
    plan_active: bool,
) -> list[Subscription]:
    """From the next billing period on, bill every subscription of the order ``frequency`` (same term,
    periods not reset) at the current list price, without promotion (a change removes it)."""
    today = require_utc(now).date()
    current = prices.on(today)
    base = subscriptions[0]
    target = Cycle(base.cycle.term, frequency) if frequency.months <= base.cycle.term.months else base.cycle
    _require(
        prerequisite_refusals(subscriptions, current, today, plan_active=plan_active)
        + scheduled_refusals(base.cycle, frequency)
        + _offer_refusals(subscriptions, target, current)
    )
    changed = []
    for subscription in subscriptions:
        sub = subscription.materialise(today, prices)
        effective_on = sub.next_period_start(today, prices)
        if effective_on is None:
            raise ChangeNotAllowed([Refusal("no_next_period", f"{sub.subscription_id} ends before another period")])
        snapshot = list_price_snapshot(current, sub.sku, target, sub.price.currency, effective_on, PromotionRule.NONE)
        assert snapshot is not None  # checked by _offer_refusals
        pending = PendingChange(frequency, sub.next_offset, effective_on, snapshot, require_utc(now))
        changed.append(replace(sub, pending_change=pending, changes_made=sub.changes_made + 1))
    return changed


def withdraw_scheduled_change(
    subscriptions: Sequence[Subscription], prices: Prices, now: datetime
) -> list[Subscription]:
    """Withdraw the order's pending scheduled change before it takes effect: the order bills on as before."""
    today = require_utc(now).date()
    materialised = [sub.materialise(today, prices) for sub in subscriptions]
    if all(sub.pending_change is None for sub in materialised):
        _require([Refusal("no_pending_change", "the order has no scheduled change waiting to take effect")])
    return [replace(sub, pending_change=None) for sub in materialised]


def change_term_now(
    subscriptions: Sequence[Subscription],
    target: Cycle,
    prices: Prices,
    now: datetime,
    *,
    plan_active: bool,
) -> list[Subscription]:
    """Start a new (longer) term today for every subscription of the order: credit the unused days of the
    current period from what was charged for it, charge the new term's first period at the current list
    price (keeping the promotion if eligible for the new term, else the best eligible one), and drop any
    scheduled change."""
    today = require_utc(now).date()
    current = prices.on(today)
    _require(
        prerequisite_refusals(subscriptions, current, today, plan_active=plan_active)
        + immediate_refusals(subscriptions[0].cycle, target)
        + _offer_refusals(subscriptions, target, current)
    )
    return _restart_term(subscriptions, target, prices, today, PromotionRule.KEEP_OR_BEST_ELIGIBLE)


def change_billing_frequency_legacy(
    subscriptions: Sequence[Subscription],
    frequency: BillingFrequency,
    prices: Prices,
    now: datetime,
    *,
    plan_active: bool,
) -> list[Subscription]:
    """The legacy experience: change the billing frequency now. Promotions and discounts are removed, the
    term is reset to 12 months from today and the price to the current list; the next invoice carries the
    prorated credit of the current period and the new monthly or annual charge."""
    today = require_utc(now).date()
    current = prices.on(today)
    target = Cycle(Term.P1Y, frequency) if frequency in (M, A) else subscriptions[0].cycle
    _require(
        prerequisite_refusals(subscriptions, current, today, plan_active=plan_active)
        + legacy_refusals(subscriptions[0].cycle, frequency)
        + _offer_refusals(subscriptions, target, current)
    )
    return _restart_term(subscriptions, target, prices, today, PromotionRule.NONE)


def _restart_term(
    subscriptions: Sequence[Subscription], target: Cycle, prices: Prices, today: date, promotions: PromotionRule
) -> list[Subscription]:
    current = prices.on(today)
    changed = []
    for subscription in subscriptions:
        sub = credit_unused_days(subscription.materialise(today, prices), today, prices)
        snapshot = list_price_snapshot(
            current, sub.sku, target, sub.price.currency, today, promotions, current_promotion=sub.price.promotion
        )
        assert snapshot is not None  # checked by _offer_refusals
        restarted = replace(
            sub,
            cycle=target,
            anchor=today,
            next_offset=0,
            price=snapshot,
            pending_change=None,  # a mid-term change deletes a pending scheduled change
            ends_at_offset=None if sub.auto_renew else target.term.months,
            changes_made=sub.changes_made + 1,
        )
        changed.append(restarted.materialise(today, prices))
    return changed


@dataclass(frozen=True)
class ChangeRequest:
    """A change of an order: the mode, the new billing frequency and, for an immediate change, the new term
    (frequency changes keep the term, or reset it to P1Y in the legacy experience)."""

    mode: ChangeMode
    frequency: BillingFrequency
    term: Term | None = None


def _whole_order(order: Order, subscriptions: Sequence[Subscription]) -> list[Subscription]:
    """The order's subscriptions in the order's own sequence; every one of them must be there."""
    by_id = {sub.subscription_id: sub for sub in subscriptions}
    if set(by_id) != set(order.subscription_ids) or any(s.order_id != order.order_id for s in subscriptions):
        raise ValueError(f"a change of order {order.order_id} takes exactly its subscriptions {order.subscription_ids}")
    return [by_id[sub_id] for sub_id in order.subscription_ids]


def order_change_options(
    order: Order, subscriptions: Sequence[Subscription], prices: Prices, today: date, *, plan_active: bool
) -> list[ChangeOption]:
    """The changes the order may make today under the experience it was bought under."""
    return change_options(
        _whole_order(order, subscriptions), prices, today, plan_active=plan_active, experience=order.experience
    )


def change_order(
    order: Order,
    subscriptions: Sequence[Subscription],
    request: ChangeRequest,
    prices: Prices,
    now: datetime,
    *,
    plan_active: bool,
) -> list[Subscription]:
    """Apply ``request`` to every subscription and add-on of ``order``; a change its experience does not
    offer is refused with the reason (nothing changes)."""
    subs = _whole_order(order, subscriptions)
    if request.mode not in _modes_of(order.experience):
        offered = ", ".join(mode.value for mode in _modes_of(order.experience))
        _require(
            [
                Refusal(
                    "not_in_experience",
                    f"order {order.order_id} was bought under the {order.experience.value} experience, "
                    f"which offers {offered} changes, not {request.mode.value}",
                )
            ]
        )
    if request.mode is ChangeMode.SCHEDULED:
        return schedule_frequency_change(subs, request.frequency, prices, now, plan_active=plan_active)
    if request.mode is ChangeMode.IMMEDIATE:
        if request.term is None:
            raise InvalidRequest.for_field("term", "an immediate change names the new term")
        try:
            target = Cycle(request.term, request.frequency)
        except ValueError as error:
            raise ChangeNotAllowed([Refusal("not_in_matrix", str(error))]) from None
        return change_term_now(subs, target, prices, now, plan_active=plan_active)
    return change_billing_frequency_legacy(subs, request.frequency, prices, now, plan_active=plan_active)


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


def charge_line(sub: Subscription, charge: Charge, prices: PriceList) -> InvoiceLine:
    """The invoice line of one charge-schedule entry."""
    sku = prices.catalog.skus.get(sub.sku)
    name = sku.name if sku else sub.sku
    through = last_day(charge.period_end).isoformat()
    span = f"{charge.period_start.isoformat()} to {through}"
    if charge.kind is ChargeKind.PERIOD:
        kind, description = LineKind.LICENCE_PERIOD, f"{name}, {charge.cycle}: {span}"
    else:
        kind, description = LineKind.CHANGE_CREDIT, f"{name}, {charge.cycle}: credit for the unused days {span}"
    currency = sub.price.currency
    return InvoiceLine(
        workspace_id="",
        description=description,
        edition=sub.sku,
        seats=0,
        devices=0,
        unit_price=Money(charge.unit_minor, currency),
        amount=Money(charge.amount_minor, currency),
        month=charge.bill_month,
        line_kind=kind,
        subscription=SubscriptionLineDetail(
            subscription_id=sub.subscription_id,
            order_id=sub.order_id,
            period_start=charge.period_start,
            period_end=charge.period_end,
            quantity=charge.quantity,
            cycle=str(charge.cycle),
            customer_id=sub.owner.customer_id,
            charge_seq=charge.seq,
            price_list_version=charge.price_list_version,
            promotion=charge.promotion,
            credit_for=_credited(charge, currency),
        ),
    )


def _credited(charge: Charge, currency: str) -> CreditedCharge | None:
    if charge.credit_for is None or charge.credited_period is None or charge.credited_amount_minor is None:
        return None
    start, end = charge.credited_period
    return CreditedCharge(charge.credit_for, start, end, Money(charge.credited_amount_minor, currency))


def subscription_invoice_lines(
    subscriptions: Sequence[Subscription], month: BillingMonth, prices: Prices
) -> list[InvoiceLine]:
    """Every licence charge and change credit the invoice of ``month`` carries, in a stable order."""
    lines = [
        charge_line(sub, charge, prices.on(month.last_day))
        for sub in sorted(subscriptions, key=lambda s: (s.order_id, s.add_on_of is not None, s.subscription_id))
        for charge in sub.charges_billed_in(month, prices)
    ]
    return lines


def last_day(period_end: date) -> date:
    """The last day of a half-open period."""
    return period_end - timedelta(days=1)
