"""An invoice with one line of every kind, shared by the store, view, e-mail and reconciliation tests.

Figures of worked example 1 of docs/billing-rules.md (USD): a seat line and a late-usage adjustment, the
first month of a new P3Y monthly term, the credit of the P1Y annual period it cut short (pointing at that
charge), credit brought from the previous invoice and the credit carried to the next (total 0).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.invoicing import (
    CreditedCharge,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    SubscriptionLineDetail,
)
from billing_core.domain.money import Money

JUNE = BillingMonth(2026, 6)


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def every_kind_lines(month: BillingMonth = JUNE) -> tuple[InvoiceLine, ...]:
    period = SubscriptionLineDetail(
        subscription_id="sub_1",
        order_id="ord_1",
        period_start=date(2026, 6, 23),
        period_end=date(2026, 7, 23),
        quantity=10,
        cycle="P3Y/monthly",
        customer_id="dental-meyer",
        charge_seq=3,
        price_list_version="2026-01",
        promotion="three-year-10",
    )
    credit = SubscriptionLineDetail(
        subscription_id="sub_1",
        order_id="ord_1",
        period_start=date(2026, 6, 23),
        period_end=date(2027, 3, 15),
        quantity=10,
        cycle="P1Y/annual",
        customer_id=None,
        charge_seq=2,
        price_list_version="2026-01",
        credit_for=CreditedCharge(1, date(2026, 3, 15), date(2027, 3, 15), usd(120_000)),
    )
    previous = BillingMonth(2026, 5)
    return (
        InvoiceLine("ws_1", "Acme", "anti-malware", 3, 4, usd(250), usd(750), month),
        InvoiceLine(
            "ws_1", "Acme: late usage for 2026-05", "anti-malware", 1, 1, usd(250), usd(250), previous, adjustment=True
        ),
        InvoiceLine(
            "",
            "Cloud Backup Standard, P3Y/monthly: 2026-06-23 to 2026-07-22",
            "backup-standard",
            0,
            0,
            usd(900),
            usd(9_000),
            month,
            line_kind=LineKind.LICENCE_PERIOD,
            subscription=period,
        ),
        InvoiceLine(
            "",
            "Cloud Backup Standard, P1Y/annual: credit for the unused days 2026-06-23 to 2027-03-14",
            "backup-standard",
            0,
            0,
            usd(12_000),
            usd(-87_123),
            month,
            line_kind=LineKind.CHANGE_CREDIT,
            subscription=credit,
        ),
        InvoiceLine(
            "",
            "Credit from the previous invoice",
            "",
            0,
            0,
            usd(0),
            usd(-1_000),
            month,
            line_kind=LineKind.CREDIT_BROUGHT_FORWARD,
        ),
        InvoiceLine(
            "",
            "Credit carried to the next invoice",
            "",
            0,
            0,
            usd(0),
            usd(78_123),
            month,
            line_kind=LineKind.CREDIT_CARRIED_FORWARD,
        ),
    )


def every_kind_invoice(partner_id: str = "p-42", month: BillingMonth = JUNE, **changes: object) -> Invoice:
    """Settled (nothing due: the credits exceed the charges), not yet reported."""
    invoice = Invoice(
        partner_id=partner_id,
        month=month,
        currency="USD",
        price_list_version="2026-01",
        lines=every_kind_lines(month),
        created_at=datetime(2026, 7, 1, 0, 5, tzinfo=UTC),
        status=InvoiceStatus.NOTHING_DUE,
    )
    assert invoice.total == usd(0), invoice.total
    assert {line.kind for line in invoice.lines} == set(LineKind)
    return replace(invoice, **changes)  # type: ignore[arg-type]
