"""Licence lines on the monthly invoice: billed even in the activation month, beside the seats, and a
credit larger than the charges carried to the next invoice."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.errors import Conflict
from billing_core.domain.invoicing import InvoiceStatus, LineKind, MonthToRate, WorkspaceMonthUsage, rate_month
from billing_core.domain.money import Money
from billing_core.domain.plan import Plan
from billing_core.domain.subscriptions import (
    OrderLine,
    Owner,
    change_term_now,
    new_subscriptions,
    subscription_invoice_lines,
)
from tests.helpers import PRICE_LIST_2026_01

ACTIVATED = datetime(2026, 11, 20, 10, tzinfo=UTC)
NOVEMBER, DECEMBER = BillingMonth(2026, 11), BillingMonth(2026, 12)
RUN_AT = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)


def plan() -> Plan:
    return (
        Plan("p1")
        .begin_activation(ACTIVATED)
        .complete_activation(
            now=ACTIVATED, currency="USD", price_list_version="2026-01", customer_ref="c", payment_method_ref="pm"
        )
    )


def annual_backup(on: date) -> list:  # type: ignore[type-arg]
    return new_subscriptions(
        order_id="ord_1",
        owner=Owner("p1", customer_id="dental-meyer"),
        lines=[OrderLine("items.0", "backup-standard", 2, Cycle(Term.P1Y, BillingFrequency.ANNUAL))],
        subscription_ids=["sub_1"],
        prices=PRICE_LIST_2026_01,
        currency="USD",
        now=datetime(on.year, on.month, on.day, 11, tzinfo=UTC),
    )


def test_subscriptions_are_billed_in_the_activation_month_seats_are_not() -> None:
    subs = annual_backup(date(2026, 11, 21))
    lines = subscription_invoice_lines(subs, NOVEMBER, PRICE_LIST_2026_01)
    usage = [WorkspaceMonthUsage("ws1", "Acme", "anti-malware", 5, 3)]
    invoice = rate_month(MonthToRate(plan(), NOVEMBER, usage, subscription_lines=lines), PRICE_LIST_2026_01, RUN_AT)
    assert [(line.kind, line.amount.amount_minor) for line in invoice.lines] == [(LineKind.LICENCE_PERIOD, 24000)]
    detail = invoice.lines[0].subscription
    assert detail is not None and detail.customer_id == "dental-meyer" and detail.quantity == 2
    assert (detail.period_start, detail.period_end) == (date(2026, 11, 21), date(2027, 11, 21))
    # Without subscription lines the activation month is still not billable.
    with pytest.raises(Conflict):
        rate_month(MonthToRate(plan(), NOVEMBER, usage), PRICE_LIST_2026_01, RUN_AT)


def test_seat_lines_stay_first_and_unchanged_next_to_licence_lines() -> None:
    subs = annual_backup(date(2026, 12, 2))
    lines = subscription_invoice_lines(subs, DECEMBER, PRICE_LIST_2026_01)
    usage = [WorkspaceMonthUsage("ws1", "Acme", "anti-malware", 5, 3)]
    invoice = rate_month(MonthToRate(plan(), DECEMBER, usage, subscription_lines=lines), PRICE_LIST_2026_01, RUN_AT)
    assert [line.kind for line in invoice.lines] == [LineKind.SEATS, LineKind.LICENCE_PERIOD]
    assert invoice.lines[0].seats == 3 and invoice.lines[0].amount == Money(750, "USD")
    assert invoice.total == Money(750 + 24000, "USD")


def test_a_credit_beyond_the_charges_is_carried_to_the_next_invoice() -> None:
    bought = annual_backup(date(2026, 10, 5))
    changed = change_term_now(
        bought,
        Cycle(Term.P3Y, BillingFrequency.MONTHLY),
        PRICE_LIST_2026_01,
        datetime(2026, 11, 25, 9, tzinfo=UTC),
        plan_active=True,
    )
    lines = subscription_invoice_lines(changed, NOVEMBER, PRICE_LIST_2026_01)
    invoice = rate_month(MonthToRate(plan(), NOVEMBER, [], subscription_lines=lines), PRICE_LIST_2026_01, RUN_AT)
    charged = sum(line.amount.amount_minor for line in lines)
    assert charged < 0
    assert invoice.total == Money(0, "USD") and invoice.status is InvoiceStatus.NOTHING_DUE
    assert invoice.credit_carried_forward == Money(-charged, "USD")
    # December: the monthly period of the new term, less the credit brought forward.
    december_lines = subscription_invoice_lines(changed, DECEMBER, PRICE_LIST_2026_01)
    december = rate_month(
        MonthToRate(
            plan(),
            DECEMBER,
            [],
            subscription_lines=december_lines,
            credit_brought_forward=invoice.credit_carried_forward,
        ),
        PRICE_LIST_2026_01,
        RUN_AT,
    )
    kinds = [line.kind for line in december.lines]
    assert kinds[:2] == [LineKind.LICENCE_PERIOD, LineKind.CREDIT_BROUGHT_FORWARD]
    assert december.total.amount_minor == 0 and december.credit_carried_forward.amount_minor == -charged - 2 * 900
