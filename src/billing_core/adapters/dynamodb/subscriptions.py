"""Orders and licence subscriptions on the billing table.

Every write is one ``TransactWriteItems``: the order and its subscriptions (each guarded by its version,
new ones by ``attribute_not_exists``), their audit event and the settled charges moved to the history,
so a change is all or nothing and two racing changes cannot both apply. Reads are strongly consistent
base-table reads (they decide money).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

from pynamodb.connection import Connection

from billing_core.adapters.dynamodb.models import (
    AuditItem,
    OrderItem,
    SubscriptionChargesItem,
    SubscriptionItem,
    partner_pk,
)
from billing_core.adapters.dynamodb.repositories import GuardedTransaction, audit_item
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth, parse_iso, to_iso
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.subscriptions import (
    Charge,
    ChargeKind,
    CommerceExperience,
    Order,
    Owner,
    PendingChange,
    PriceSnapshot,
    Subscription,
    SubscriptionState,
)

ORDER_PREFIX = "ORDER#"
SUBSCRIPTION_PREFIX = "SUBSCRIPTION#"
HISTORY_PREFIX = "SUBCHARGES#"


def _cycle_text(cycle: Cycle) -> str:
    return f"{cycle.term.value}/{cycle.frequency.value}"


def _cycle_of(text: str) -> Cycle:
    term, _, frequency = text.partition("/")
    return Cycle(Term(term), BillingFrequency(frequency))


def _price_to_json(price: PriceSnapshot) -> dict[str, Any]:
    return {
        "price_list_version": price.price_list_version,
        "currency": price.currency,
        "list_unit_minor": price.list_unit_minor,
        "promotion": price.promotion,
        "percent_off_basis_points": price.percent_off_basis_points,
    }


def _price_from_json(data: dict[str, Any]) -> PriceSnapshot:
    return PriceSnapshot(
        data["price_list_version"],
        data["currency"],
        int(data["list_unit_minor"]),
        data.get("promotion"),
        int(data.get("percent_off_basis_points", 0)),
    )


def charge_to_json(charge: Charge) -> dict[str, Any]:
    return {
        "seq": charge.seq,
        "kind": charge.kind.value,
        "period_start": charge.period_start.isoformat(),
        "period_end": charge.period_end.isoformat(),
        "quantity": charge.quantity,
        "unit_minor": charge.unit_minor,
        "amount_minor": charge.amount_minor,
        "bill_month": str(charge.bill_month),
        "cycle": _cycle_text(charge.cycle),
        "price_list_version": charge.price_list_version,
        "promotion": charge.promotion,
        "credited_minor": charge.credited_minor,
        "ended_on": charge.ended_on.isoformat() if charge.ended_on else None,
        "credit_for": charge.credit_for,
        "credited_period": [day.isoformat() for day in charge.credited_period] if charge.credited_period else None,
        "credited_amount_minor": charge.credited_amount_minor,
    }


def charge_from_json(data: dict[str, Any]) -> Charge:
    return Charge(
        seq=int(data["seq"]),
        kind=ChargeKind(data["kind"]),
        period_start=date.fromisoformat(data["period_start"]),
        period_end=date.fromisoformat(data["period_end"]),
        quantity=int(data["quantity"]),
        unit_minor=int(data["unit_minor"]),
        amount_minor=int(data["amount_minor"]),
        bill_month=BillingMonth.parse(data["bill_month"]),
        cycle=_cycle_of(data["cycle"]),
        price_list_version=data["price_list_version"],
        promotion=data.get("promotion"),
        credited_minor=int(data.get("credited_minor", 0)),
        ended_on=date.fromisoformat(data["ended_on"]) if data.get("ended_on") else None,
        credit_for=int(data["credit_for"]) if data.get("credit_for") is not None else None,
        credited_period=(
            (date.fromisoformat(data["credited_period"][0]), date.fromisoformat(data["credited_period"][1]))
            if data.get("credited_period")
            else None
        ),
        credited_amount_minor=int(data["credited_amount_minor"])
        if data.get("credited_amount_minor") is not None
        else None,
    )


def _pending_to_json(pending: PendingChange | None) -> dict[str, Any] | None:
    if pending is None:
        return None
    return {
        "frequency": pending.frequency.value,
        "effective_offset": pending.effective_offset,
        "effective_on": pending.effective_on.isoformat(),
        "price": _price_to_json(pending.price),
        "requested_at": to_iso(pending.requested_at),
    }


def _pending_from_json(data: dict[str, Any] | None) -> PendingChange | None:
    if not data:
        return None
    return PendingChange(
        BillingFrequency(data["frequency"]),
        int(data["effective_offset"]),
        date.fromisoformat(data["effective_on"]),
        _price_from_json(data["price"]),
        parse_iso(data["requested_at"]),
    )


def subscription_item(sub: Subscription) -> SubscriptionItem:
    item = SubscriptionItem(
        partner_pk(sub.owner.partner_id),
        f"{SUBSCRIPTION_PREFIX}{sub.subscription_id}",
        subscription_id=sub.subscription_id,
        order_id=sub.order_id,
        partner_id=sub.owner.partner_id,
        customer_id=sub.owner.customer_id,
        sku=sub.sku,
        quantity=sub.quantity,
        term=sub.cycle.term.value,
        frequency=sub.cycle.frequency.value,
        anchor=sub.anchor.isoformat(),
        price=_price_to_json(sub.price),
        created_at=sub.created_at,
        add_on_of=sub.add_on_of,
        auto_renew=sub.auto_renew,
        ends_at_offset=sub.ends_at_offset,
        next_offset=sub.next_offset,
        state=sub.state.value,
        pending_change=_pending_to_json(sub.pending_change),
        charges=[charge_to_json(c) for c in sub.charges],
        last_charge_seq=sub.last_charge_seq,
        changes_made=sub.changes_made,
    )
    if sub.version is not None:  # unset for a new subscription: the write then requires that none exists
        item.version = sub.version
    return item


def subscription_from_item(item: SubscriptionItem) -> Subscription:
    return Subscription(
        subscription_id=item.subscription_id,
        order_id=item.order_id,
        owner=Owner(item.partner_id, item.customer_id),
        sku=item.sku,
        quantity=int(item.quantity),
        cycle=Cycle(Term(item.term), BillingFrequency(item.frequency)),
        anchor=date.fromisoformat(item.anchor),
        price=_price_from_json(item.price),
        created_at=item.created_at,
        add_on_of=item.add_on_of,
        auto_renew=bool(item.auto_renew),
        ends_at_offset=int(item.ends_at_offset) if item.ends_at_offset is not None else None,
        next_offset=int(item.next_offset),
        state=SubscriptionState(item.state),
        pending_change=_pending_from_json(item.pending_change),
        charges=tuple(charge_from_json(c) for c in item.charges),
        last_charge_seq=int(item.last_charge_seq),
        changes_made=int(item.changes_made),
        version=item.version,
    )


def order_item(order: Order) -> OrderItem:
    item = OrderItem(
        partner_pk(order.owner.partner_id),
        f"{ORDER_PREFIX}{order.order_id}",
        order_id=order.order_id,
        partner_id=order.owner.partner_id,
        customer_id=order.owner.customer_id,
        subscription_ids=list(order.subscription_ids),
        experience=order.experience.value,
        created_at=order.created_at,
        request_fingerprint=order.request_fingerprint,
        change_keys=[list(pair) for pair in order.change_keys],
    )
    if order.version is not None:
        item.version = order.version
    return item


def order_from_item(item: OrderItem) -> Order:
    return Order(
        order_id=item.order_id,
        owner=Owner(item.partner_id, item.customer_id),
        subscription_ids=tuple(item.subscription_ids),
        created_at=item.created_at,
        experience=CommerceExperience(item.experience),
        request_fingerprint=item.request_fingerprint,
        change_keys=tuple((str(key), str(fingerprint)) for key, fingerprint in item.change_keys),
        version=item.version,
    )


class DynamoSubscriptionStore:
    def __init__(self, region: str) -> None:
        self._connection = Connection(region=region)

    def save_order(
        self,
        order: Order,
        subscriptions: Sequence[Subscription],
        *,
        audit: AuditEvent,
        settled: Sequence[tuple[str, Sequence[Charge]]] = (),
    ) -> tuple[Order, list[Subscription]]:
        """Write the order, its subscriptions, the audit event and the settled charges in one transaction:
        new items only if absent, existing ones only if unchanged since loaded (else
        ``ConcurrentModification``)."""
        order_record = order_item(order)
        sub_records = [subscription_item(sub) for sub in subscriptions]
        with GuardedTransaction(self._connection, f"order {order.order_id}") as transaction:
            transaction.save(order_record)  # VersionAttribute adds the optimistic-lock condition
            for record in sub_records:
                transaction.save(record)
            for subscription_id, charges in settled:
                if charges:
                    history = SubscriptionChargesItem(
                        partner_pk(order.owner.partner_id),
                        f"{HISTORY_PREFIX}{subscription_id}#{min(c.seq for c in charges):08d}",
                        subscription_id=subscription_id,
                        charges=[charge_to_json(c) for c in charges],
                    )
                    transaction.save(history, condition=SubscriptionChargesItem.pk.does_not_exist())
            transaction.save(audit_item(audit), condition=AuditItem.pk.does_not_exist())
        saved = [replace(sub, version=record.version) for sub, record in zip(subscriptions, sub_records, strict=True)]
        return replace(order, version=order_record.version), saved

    def load_order(self, partner_id: str, order_id: str) -> tuple[Order, list[Subscription]] | None:
        try:
            item = OrderItem.get(partner_pk(partner_id), f"{ORDER_PREFIX}{order_id}", consistent_read=True)
        except OrderItem.DoesNotExist:
            return None
        order = order_from_item(item)
        keys = [(partner_pk(partner_id), f"{SUBSCRIPTION_PREFIX}{sub_id}") for sub_id in order.subscription_ids]
        subs = {
            sub.subscription_id: sub
            for sub in (subscription_from_item(i) for i in SubscriptionItem.batch_get(keys, consistent_read=True))
        }
        return order, [subs[sub_id] for sub_id in order.subscription_ids if sub_id in subs]

    def list_subscriptions(self, partner_id: str) -> list[Subscription]:
        items = SubscriptionItem.query(
            partner_pk(partner_id), SubscriptionItem.sk.startswith(SUBSCRIPTION_PREFIX), consistent_read=True
        )
        return [subscription_from_item(item) for item in items]

    def list_orders(self, partner_id: str) -> list[Order]:
        items = OrderItem.query(partner_pk(partner_id), OrderItem.sk.startswith(ORDER_PREFIX), consistent_read=True)
        return [order_from_item(item) for item in items]

    def charge_history(self, partner_id: str, subscription_id: str) -> list[Charge]:
        """Every settled charge of the subscription, oldest first (the open ones are on its item)."""
        items = SubscriptionChargesItem.query(
            partner_pk(partner_id),
            SubscriptionChargesItem.sk.startswith(f"{HISTORY_PREFIX}{subscription_id}#"),
            consistent_read=True,
        )
        return sorted((charge_from_json(c) for item in items for c in item.charges), key=lambda c: c.seq)
