"""Buying: orders (subscriptions bought together with their add-ons, under a commerce experience) and the
price a new subscription starts at (list price and promotion rule)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.calendar import require_utc
from billing_core.domain.catalog import Cycle
from billing_core.domain.errors import InvalidRequest
from billing_core.domain.pricing import PriceList
from billing_core.domain.subscription import Owner, PriceSnapshot, Subscription

# One TransactWriteItems holds at most 100 items; an order is written with its subscriptions and audit event.
MAX_SUBSCRIPTIONS_PER_ORDER = 20
MAX_QUANTITY = 100_000


class CommerceExperience(StrEnum):
    """Seed 002 describes two: which one an order was bought under decides the changes it may make."""

    NEW = "new"  # scheduled frequency-only changes; immediate changes to a longer term
    LEGACY = "legacy"  # immediate frequency changes that reset the term to 12 months


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
