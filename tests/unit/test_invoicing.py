"""Rating a month and the invoice payment state machine."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import Conflict
from billing_core.domain.invoicing import (
    InvoiceStatus,
    LateDevices,
    MonthToRate,
    WorkspaceMonthUsage,
    is_billable_month,
    rate_month,
)
from billing_core.domain.plan import Plan
from tests.helpers import PRICE_LIST_2026_01

ACTIVATED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
RUN_AT = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
DECEMBER = BillingMonth(2026, 12)


def plan() -> Plan:
    return (
        Plan("p1")
        .begin_activation(ACTIVATED)
        .complete_activation(
            now=ACTIVATED, currency="USD", price_list_version="2026-01", customer_ref="c", payment_method_ref="pm"
        )
    )


def usage(workspace_id: str, devices: int, max_devices: int = 10, edition: str = "anti-malware") -> WorkspaceMonthUsage:
    return WorkspaceMonthUsage(workspace_id, f"Customer {workspace_id}", edition, max_devices, devices)


def test_the_activation_month_is_covered_and_the_next_month_is_billed() -> None:
    assert not is_billable_month(plan(), BillingMonth(2026, 11))
    assert is_billable_month(plan(), DECEMBER)
    with pytest.raises(Conflict):
        rate_month(MonthToRate(plan(), BillingMonth(2026, 11), [usage("a", 3)]), PRICE_LIST_2026_01, RUN_AT)


def test_lines_cap_seats_and_price_by_edition() -> None:
    invoice = rate_month(
        MonthToRate(plan(), DECEMBER, [usage("a", 12, max_devices=10), usage("b", 3, edition="enterprise-security")]),
        PRICE_LIST_2026_01,
        RUN_AT,
    )
    assert [(line.workspace_id, line.seats, line.devices, line.amount.amount_minor) for line in invoice.lines] == [
        ("a", 10, 12, 10 * 250),
        ("b", 3, 3, 3 * 450),
    ]
    assert invoice.total.amount_minor == 2500 + 1350
    assert invoice.status is InvoiceStatus.DRAFT
    assert invoice.payment_key() == "month:p1:2026-12:attempt-0"


def test_a_month_without_seats_is_nothing_due() -> None:
    invoice = rate_month(MonthToRate(plan(), DECEMBER, [usage("a", 0)]), PRICE_LIST_2026_01, RUN_AT)
    assert invoice.status is InvoiceStatus.NOTHING_DUE and invoice.total.amount_minor == 0
    assert not invoice.due_for_payment(date(2027, 1, 1))


def test_late_usage_is_an_adjustment_that_respects_the_months_cap() -> None:
    january = BillingMonth(2027, 1)
    workspace = usage("a", 0, max_devices=5)
    request = MonthToRate(
        plan(),
        january,
        [usage("a", 2, max_devices=5)],
        late=[LateDevices(DECEMBER, "a", 3)],
        invoiced_seats={(DECEMBER, "a"): (4, 4)},  # 4 seats of 4 devices were billed for December
        workspaces={"a": workspace},
    )
    invoice = rate_month(request, PRICE_LIST_2026_01, datetime(2027, 2, 1, tzinfo=UTC))
    adjustment = [line for line in invoice.lines if line.adjustment]
    assert [(line.month, line.seats, line.devices) for line in adjustment] == [(DECEMBER, 1, 3)]  # cap 5: only 1 more
    assert invoice.total.amount_minor == (2 + 1) * 250


def test_declines_are_retried_on_days_3_5_7_then_past_due() -> None:
    invoice = rate_month(MonthToRate(plan(), DECEMBER, [usage("a", 2)]), PRICE_LIST_2026_01, RUN_AT)
    assert invoice.due_for_payment(date(2027, 1, 1))
    retry_days = []
    for day in (1, 3, 5):
        invoice = invoice.begin_payment_attempt(RUN_AT)
        key = invoice.payment_key()
        assert invoice.begin_payment_attempt(RUN_AT).payment_key() == key  # an unfinished attempt is resumed
        invoice = invoice.record_decline("card_declined", date(2027, 1, day))
        assert invoice.status is InvoiceStatus.PAYMENT_FAILED
        retry_days.append(invoice.next_retry_on)
    assert retry_days == [date(2027, 1, 3), date(2027, 1, 5), date(2027, 1, 7)]
    assert not invoice.due_for_payment(date(2027, 1, 6)) and invoice.due_for_payment(date(2027, 1, 7))
    invoice = invoice.begin_payment_attempt(RUN_AT).record_decline("card_declined", date(2027, 1, 7))
    assert invoice.status is InvoiceStatus.PAST_DUE and invoice.payment_attempts == 4


def test_a_late_first_attempt_still_gets_the_remaining_retry_days() -> None:
    invoice = rate_month(MonthToRate(plan(), DECEMBER, [usage("a", 2)]), PRICE_LIST_2026_01, RUN_AT)
    declined = invoice.begin_payment_attempt(RUN_AT).record_decline("card_declined", date(2027, 1, 4))
    assert declined.next_retry_on == date(2027, 1, 5)
    too_late = invoice.begin_payment_attempt(RUN_AT).record_decline("card_declined", date(2027, 1, 9))
    assert too_late.status is InvoiceStatus.PAST_DUE
    with pytest.raises(Conflict):
        too_late.begin_payment_attempt(RUN_AT)


def test_a_paid_invoice_cannot_be_charged_again() -> None:
    invoice = rate_month(MonthToRate(plan(), DECEMBER, [usage("a", 2)]), PRICE_LIST_2026_01, RUN_AT)
    paid = invoice.begin_payment_attempt(RUN_AT).record_payment("pi_1", RUN_AT)
    assert paid.status is InvoiceStatus.PAID and paid.settled
    with pytest.raises(Conflict):
        paid.begin_payment_attempt(RUN_AT)


def test_late_usage_of_an_earlier_life_is_billed_where_that_months_invoice_billed_the_workspace() -> None:
    """A month before this life's first billable month: billed only if its own invoice billed the workspace's
    seats (an earlier life), never for an activation month the fee covered."""
    new_life = plan()  # activated in November 2026: December is its first billable month
    october, april = BillingMonth(2026, 10), BillingMonth(2027, 4)
    late = [LateDevices(october, "a", 2)]
    workspaces = {"a": usage("a", 0, max_devices=5)}
    covered_by_a_fee = MonthToRate(new_life, april, [], late=late, workspaces=workspaces)
    invoice = rate_month(covered_by_a_fee, PRICE_LIST_2026_01, datetime(2027, 5, 1, tzinfo=UTC))
    assert invoice.lines == () and invoice.status is InvoiceStatus.NOTHING_DUE
    earlier_life = MonthToRate(
        new_life, april, [], late=late, workspaces=workspaces, late_months_billed=frozenset({(october, "a")})
    )
    invoice = rate_month(earlier_life, PRICE_LIST_2026_01, datetime(2027, 5, 1, tzinfo=UTC))
    assert [(line.month, line.seats, line.adjustment) for line in invoice.lines] == [(october, 2, True)]
    assert invoice.total.amount_minor == 2 * 250
