"""Use cases of licence subscriptions (seed 002): buy an order, list and read subscriptions, the changes an
order may make now (each refused one with its reasons), preview a change's invoice lines, apply it,
withdraw a pending scheduled change.

Exactly once: an order's id derives from the partner and the request's ``Idempotency-Key`` and is created
only if absent, so a retried purchase returns the same order; a change records its key on the order in the
same transaction as the change, so a retried change answers without changing anything again. The same key
with another body is a 422. Every write goes with its audit event; a refusal changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date, datetime

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.errors import Conflict, InvalidRequest, NotFound
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.money import Money
from billing_core.domain.plan import PlanState
from billing_core.domain.pricing import Prices
from billing_core.domain.subscriptions import (
    ChangeMode,
    ChangeRequest,
    ChargeKind,
    CommerceExperience,
    Order,
    OrderLine,
    Owner,
    PendingChange,
    PriceSnapshot,
    Subscription,
    change_order,
    charge_line,
    end_with_plan,
    new_charges,
    new_subscriptions,
    order_change_options,
    settle_charge_history,
    withdraw_scheduled_change,
)
from billing_core.ports import Clock, InvoiceStore, PlanStore, SubscriptionStore
from billing_core.services.views import money_view
from billing_core.subscription_schemas import (
    ChangeLineView,
    ChangeOptionsView,
    ChangeOptionView,
    ChangeOrderRequest,
    ChangePreviewView,
    ChangeResultView,
    CreateOrderRequest,
    OrderView,
    PendingChangeView,
    PriceView,
    RefusalView,
    SubscriptionView,
)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def order_id_for(partner_id: str, idempotency_key: str) -> str:
    """The id of the order a partner buys with ``idempotency_key``: a retry names the same order."""
    return f"ord_{_digest(partner_id, idempotency_key)[:24]}"


class SubscriptionService:
    def __init__(
        self,
        *,
        plans: PlanStore,
        subscriptions: SubscriptionStore,
        invoices: InvoiceStore,
        clock: Clock,
        prices: Prices,
    ) -> None:
        self.plans = plans
        self.invoices = invoices
        self.store = subscriptions
        self.clock = clock
        self.prices = prices

    # -- buying --------------------------------------------------------------------------------
    def buy_order(self, identity: PartnerIdentity, idempotency_key: str, request: CreateOrderRequest) -> OrderView:
        identity.require_billing_rights()
        fingerprint = _digest(request.model_dump_json())
        order_id = order_id_for(identity.partner_id, idempotency_key)
        existing = self.store.load_order(identity.partner_id, order_id)
        if existing is not None:
            return self._replay(existing, fingerprint)
        now = self.clock.now()
        plan = self.plans.load_plan(identity.partner_id)
        if plan.state is not PlanState.ACTIVE or plan.currency is None:
            raise Conflict(
                "subscriptions are billed on the monthly plan's invoice: activate the monthly billing option first",
                code="plan_not_active",
            )
        lines = self._order_lines(request)
        owner = Owner(identity.partner_id, request.customer_id)
        # One stem per order, the position last: ids sort in the order's own sequence (a base before its add-ons).
        subscription_ids = [f"sub_{_digest(order_id)[:24]}{index:02d}" for index in range(len(lines))]
        subscriptions = new_subscriptions(
            order_id=order_id,
            owner=owner,
            lines=lines,
            subscription_ids=subscription_ids,
            prices=self.prices.on(now.date()),
            currency=plan.currency,
            now=now,
        )
        order = Order(
            order_id=order_id,
            owner=owner,
            subscription_ids=tuple(subscription_ids),
            created_at=now,
            experience=CommerceExperience(request.experience),
            request_fingerprint=fingerprint,
        )
        audit = self._audit(identity, "order_created", now, order_id=order_id, subscriptions=subscription_ids)
        try:
            order, subscriptions = self.store.save_order(order, subscriptions, audit=audit)
        except Conflict:
            raced = self.store.load_order(identity.partner_id, order_id)  # the same key, at the same moment
            if raced is None:
                raise
            return self._replay(raced, fingerprint)
        return self._order_view(order, subscriptions)

    def _replay(self, existing: tuple[Order, list[Subscription]], fingerprint: str) -> OrderView:
        order, subscriptions = existing
        if order.request_fingerprint != fingerprint:
            raise InvalidRequest.for_field("Idempotency-Key", "this key was already used with another order")
        return self._order_view(order, subscriptions)

    @staticmethod
    def _order_lines(request: CreateOrderRequest) -> list[OrderLine]:
        lines: list[OrderLine] = []
        for index, item in enumerate(request.items):
            field = f"items.{index}"
            cycle = _cycle(item.term, item.billing_frequency, field)
            lines.append(OrderLine(field, item.sku, item.quantity, cycle))
            for add_index, add_on in enumerate(item.add_ons):
                add_field = f"{field}.add_ons.{add_index}"
                add_cycle = _cycle(
                    add_on.term or item.term, add_on.billing_frequency or item.billing_frequency, add_field
                )
                lines.append(OrderLine(add_field, add_on.sku, add_on.quantity, add_cycle, add_on_of_field=field))
        return lines

    # -- reading -------------------------------------------------------------------------------
    def list_subscriptions(self, identity: PartnerIdentity) -> list[SubscriptionView]:
        identity.require_billing_rights()
        today = self.clock.now().date()
        subscriptions = sorted(
            self.store.list_subscriptions(identity.partner_id), key=lambda s: (s.created_at, s.subscription_id)
        )
        return [self._subscription_view(sub, today) for sub in subscriptions]

    def get_subscription(self, identity: PartnerIdentity, subscription_id: str) -> SubscriptionView:
        identity.require_billing_rights()
        today = self.clock.now().date()
        for sub in self.store.list_subscriptions(identity.partner_id):
            if sub.subscription_id == subscription_id:
                return self._subscription_view(sub, today)
        raise NotFound("subscription not found")

    def get_order(self, identity: PartnerIdentity, order_id: str) -> OrderView:
        identity.require_billing_rights()
        order, subscriptions = self._load(identity, order_id)
        return self._order_view(order, subscriptions)

    # -- changes -------------------------------------------------------------------------------
    def change_options(self, identity: PartnerIdentity, order_id: str) -> ChangeOptionsView:
        identity.require_billing_rights()
        order, subscriptions = self._load(identity, order_id)
        today = self.clock.now().date()
        options = order_change_options(
            order, subscriptions, self.prices, today, plan_active=self._plan_active(identity)
        )
        return ChangeOptionsView(
            order_id=order.order_id,
            experience=order.experience.value,
            pending_change=self._pending_view(subscriptions[0].materialise(today, self.prices).pending_change),
            options=[
                ChangeOptionView(
                    mode=option.mode.value,
                    term=option.cycle.term.value,
                    billing_frequency=option.cycle.frequency.value,
                    effective_on=option.effective_on,
                    allowed=option.allowed,
                    refusals=[RefusalView(code=r.code, message=r.message) for r in option.refusals],
                )
                for option in options
            ],
        )

    def preview_change(
        self, identity: PartnerIdentity, order_id: str, request: ChangeOrderRequest
    ) -> ChangePreviewView:
        """The invoice lines the change would add, without changing anything."""
        identity.require_billing_rights()
        order, subscriptions = self._load(identity, order_id)
        now = self.clock.now()
        changed = change_order(
            order,
            subscriptions,
            self._change_request(request),
            self.prices,
            now,
            plan_active=self._plan_active(identity),
        )
        return self._preview(order, subscriptions, changed, now)

    def apply_change(
        self, identity: PartnerIdentity, order_id: str, idempotency_key: str, request: ChangeOrderRequest
    ) -> ChangeResultView:
        identity.require_billing_rights()
        order, subscriptions = self._load(identity, order_id)
        now = self.clock.now()
        fingerprint = _digest(request.model_dump_json())
        if order.replayed_change(idempotency_key, fingerprint):
            # Already applied: the answer is the order as it is, with no lines added again.
            empty = self._preview(order, subscriptions, subscriptions, now)
            return ChangeResultView(**empty.model_dump(), order=self._order_view(order, subscriptions))
        changed = change_order(
            order,
            subscriptions,
            self._change_request(request),
            self.prices,
            now,
            plan_active=self._plan_active(identity),
        )
        preview = self._preview(order, subscriptions, changed, now)
        saved_order, saved = self._save_change(
            identity,
            order.record_change(idempotency_key, fingerprint),
            changed,
            now,
            "order_changed",
            mode=request.mode,
            term=request.term,
            billing_frequency=request.billing_frequency,
        )
        return ChangeResultView(**preview.model_dump(), order=self._order_view(saved_order, saved))

    def withdraw_change(self, identity: PartnerIdentity, order_id: str) -> OrderView:
        identity.require_billing_rights()
        order, subscriptions = self._load(identity, order_id)
        now = self.clock.now()
        withdrawn = withdraw_scheduled_change(subscriptions, self.prices, now)
        saved_order, saved = self._save_change(identity, order, withdrawn, now, "scheduled_change_withdrawn")
        return self._order_view(saved_order, saved)

    # -- helpers -------------------------------------------------------------------------------
    def _load(self, identity: PartnerIdentity, order_id: str) -> tuple[Order, list[Subscription]]:
        loaded = self.store.load_order(identity.partner_id, order_id)
        if loaded is None:
            raise NotFound("order not found")
        return loaded

    def _plan_active(self, identity: PartnerIdentity) -> bool:
        return self.plans.load_plan(identity.partner_id).state is PlanState.ACTIVE

    @staticmethod
    def _change_request(request: ChangeOrderRequest) -> ChangeRequest:
        mode = ChangeMode(request.mode)
        if mode is not ChangeMode.IMMEDIATE and request.term is not None:
            raise InvalidRequest.for_field("term", f"a {mode.value} change keeps the term: leave it out")
        term = Term(request.term) if request.term is not None else None
        return ChangeRequest(mode, BillingFrequency(request.billing_frequency), term)

    def _save_change(
        self,
        identity: PartnerIdentity,
        order: Order,
        subscriptions: list[Subscription],
        now: datetime,
        event_type: str,
        **details: object,
    ) -> tuple[Order, list[Subscription]]:
        invoiced_through = self._invoiced_through(identity.partner_id)
        trimmed: list[Subscription] = []
        settled = []
        for sub in subscriptions:
            kept, moved = settle_charge_history(sub, invoiced_through, now.date())
            trimmed.append(kept)
            settled.append((sub.subscription_id, moved))
        audit = self._audit(identity, event_type, now, order_id=order.order_id, **details)
        return self.store.save_order(order, trimmed, audit=audit, settled=settled)

    def _invoiced_through(self, partner_id: str) -> BillingMonth | None:
        """The last month whose invoice is made. The run closes a month before it writes the invoice: if it
        died in between, that month's charges must stay on the subscriptions for the redelivered run."""
        closed = self.plans.load_plan(partner_id).last_charged_month
        if closed is None or self.invoices.load_invoice(partner_id, closed) is not None:
            return closed
        return closed.previous()

    def _preview(
        self, order: Order, before: Sequence[Subscription], after: Sequence[Subscription], now: datetime
    ) -> ChangePreviewView:
        today = now.date()
        materialised = [sub.materialise(today, self.prices) for sub in before]
        added = new_charges(materialised, after)
        currency = after[0].price.currency
        prices = self.prices.on(today)
        lines = []
        for sub, charge in added:
            line = charge_line(sub, charge, prices)
            lines.append(
                ChangeLineView(
                    kind="licence_period" if charge.kind is ChargeKind.PERIOD else "change_credit",
                    subscription_id=sub.subscription_id,
                    description=line.description,
                    period_start=charge.period_start,
                    period_end=date.fromordinal(charge.period_end.toordinal() - 1),
                    quantity=charge.quantity,
                    amount=money_view(Money(charge.amount_minor, currency)),
                    invoice_month=str(charge.bill_month),
                    credit_for_period_start=charge.credited_period[0] if charge.credited_period else None,
                )
            )
        total = sum(c.amount_minor for _, c in added)
        return ChangePreviewView(
            order_id=order.order_id, lines=lines, total=money_view(Money(total, currency)), effective_on=today
        )

    def _order_view(self, order: Order, subscriptions: Sequence[Subscription]) -> OrderView:
        today = self.clock.now().date()
        return OrderView(
            order_id=order.order_id,
            customer_id=order.owner.customer_id,
            experience=order.experience.value,
            created_at=order.created_at,
            subscriptions=[self._subscription_view(sub, today) for sub in subscriptions],
        )

    def _subscription_view(self, subscription: Subscription, today: date) -> SubscriptionView:
        ends_on = self.plans.load_plan(subscription.owner.partner_id).ends_on
        if ends_on is not None:  # shown as it will be billed: ending with the plan (``end_with_plan``)
            subscription = end_with_plan(subscription, ends_on, self.prices)
        sub = subscription.materialise(today, self.prices)
        term_start, term_end = sub.term_at(today)
        sku = self.prices.on(today).catalog.skus.get(sub.sku)
        return SubscriptionView(
            subscription_id=sub.subscription_id,
            order_id=sub.order_id,
            customer_id=sub.owner.customer_id,
            sku=sub.sku,
            name=sku.name if sku else sub.sku,
            quantity=sub.quantity,
            term=sub.cycle.term.value,
            billing_frequency=sub.cycle.frequency.value,
            add_on_of=sub.add_on_of,
            state=sub.state.value,
            term_started_on=term_start,
            term_ends_on=term_end,
            next_period_starts_on=sub.next_period_start(today, self.prices),
            auto_renew=sub.auto_renew,
            price=_price_view(sub.price),
            pending_change=self._pending_view(sub.pending_change),
        )

    @staticmethod
    def _pending_view(pending: PendingChange | None) -> PendingChangeView | None:
        if pending is None:
            return None
        return PendingChangeView(
            billing_frequency=pending.frequency.value,
            effective_on=pending.effective_on,
            price=_price_view(pending.price),
        )

    @staticmethod
    def _audit(identity: PartnerIdentity, event_type: str, now: datetime, **details: object) -> AuditEvent:
        return AuditEvent(identity.partner_id, event_type, now, identity.subject, dict(details))


def _price_view(price: PriceSnapshot) -> PriceView:
    return PriceView(
        unit_price=money_view(Money(price.unit_minor, price.currency)),
        list_price=money_view(Money(price.list_unit_minor, price.currency)),
        promotion=price.promotion,
        price_list_version=price.price_list_version,
    )


def _cycle(term: str, frequency: str, field: str) -> Cycle:
    try:
        return Cycle(Term(term), BillingFrequency(frequency))
    except ValueError:
        raise InvalidRequest.for_field(
            f"{field}.billing_frequency" if field else "billing_frequency",
            f"a {term} term cannot be billed {frequency}",
        ) from None
