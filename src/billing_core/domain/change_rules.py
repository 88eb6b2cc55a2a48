"""Seed 002's change rules as data and the changes they allow on a whole order: prerequisites, the two
eligibility matrices (scheduled frequency changes, immediate term changes), the legacy experience's
frequency change, the options with reasons, and applying or withdrawing a change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.calendar import require_utc
from billing_core.domain.catalog import ALL_CYCLES, BillingFrequency, Cycle, ProductKind, Term
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.domain.ordering import CommerceExperience, Order, PromotionRule, list_price_snapshot
from billing_core.domain.pricing import PriceList, Prices
from billing_core.domain.subscription import PendingChange, Subscription, credit_unused_days

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


class ChangeMode(StrEnum):
    SCHEDULED = "scheduled"  # new experience: the billing frequency, from the next billing period
    IMMEDIATE = "immediate"  # new experience: a longer term (with a billing frequency), from today
    LEGACY_FREQUENCY = "legacy_frequency"  # legacy experience: the billing frequency now, term reset to P1Y


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
    """The changes the order may make today under the experience it was bought under, judged on the order as
    it is today (a renewal or a scheduled change that took effect since it was stored included)."""
    today_state = [sub.materialise(today, prices) for sub in _whole_order(order, subscriptions)]
    return change_options(today_state, prices, today, plan_active=plan_active, experience=order.experience)


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
    # Judged on the order as it is today: a renewal may have dropped a promotion, a scheduled change taken effect.
    subs = [sub.materialise(require_utc(now).date(), prices) for sub in _whole_order(order, subscriptions)]
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
