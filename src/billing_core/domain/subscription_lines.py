"""The invoice lines of licence subscriptions: one per charge-schedule entry billed in a month."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.invoicing import CreditedCharge, InvoiceLine, LineKind, SubscriptionLineDetail
from billing_core.domain.money import Money
from billing_core.domain.pricing import PriceList, Prices
from billing_core.domain.subscription import Charge, ChargeKind, Subscription


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
