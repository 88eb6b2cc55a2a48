"""The monthly run bills licence subscriptions (issue 29, item 6): each period in advance on the invoice of
the month it starts in, beside the seats, in the activation month too; a change's credit and new charge
on the invoice of the month of the change; a credit beyond the charges carried to the next invoice; a
re-run never bills a line twice."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.errors import TransientFailure
from billing_core.domain.invoicing import InvoiceStatus, LineKind
from billing_core.domain.subscriptions import Order, OrderLine, Owner, change_term_now, new_subscriptions
from tests.fakes import FixedClock
from tests.helpers import PRICE_LIST_2026_01
from tests.unit.test_monthly_charge import World, make_world

P1Y_MONTHLY = Cycle(Term.P1Y, BillingFrequency.MONTHLY)
P1Y_ANNUAL = Cycle(Term.P1Y, BillingFrequency.ANNUAL)


def buy(world: World, cycle: Cycle, on: datetime, quantity: int = 2, order_id: str = "ord_1") -> None:
    subs = new_subscriptions(
        order_id=order_id,
        owner=Owner("p1"),
        lines=[OrderLine("items.0", "backup-standard", quantity, cycle)],
        subscription_ids=[f"sub_{order_id}"],
        prices=PRICE_LIST_2026_01,
        currency="USD",
        now=on,
    )
    order = Order(order_id, Owner("p1"), (f"sub_{order_id}",), on)
    world.subscriptions.save_order(order, subs, audit=AuditEvent("p1", "order_created", on, "test"))


def run(world: World, month: BillingMonth) -> tuple[list[tuple[LineKind, int]], InvoiceStatus]:
    world.clock.current = datetime(month.next().year, month.next().month, 1, 0, 5, tzinfo=UTC)
    invoice = world.service().charge_partner_for_month("p1", month)
    assert invoice is not None
    return [(line.kind, line.amount.amount_minor) for line in invoice.lines], invoice.status


def test_a_subscription_bought_in_the_activation_month_is_billed_on_its_invoice_seats_are_not() -> None:
    world = make_world()  # activated 2026-11-20
    buy(world, P1Y_MONTHLY, datetime(2026, 11, 25, 9, tzinfo=UTC))
    lines, status = run(world, BillingMonth(2026, 11))
    assert (lines, status) == ([(LineKind.LICENCE_PERIOD, 2 * 1000)], InvoiceStatus.PAID)
    assert world.provider.successful_charges == 1


def test_each_month_bills_its_period_beside_the_seats_and_a_re_run_bills_nothing_twice() -> None:
    world = make_world()
    buy(world, P1Y_MONTHLY, datetime(2026, 11, 25, 9, tzinfo=UTC))
    run(world, BillingMonth(2026, 11))
    lines, _ = run(world, BillingMonth(2026, 12))
    assert lines == [(LineKind.SEATS, 3 * 250), (LineKind.LICENCE_PERIOD, 2 * 1000)]
    for _ in range(2):
        assert run(world, BillingMonth(2026, 12))[0] == lines
    assert world.provider.successful_charges == 2  # November and December, once each


def test_an_annual_period_is_billed_once_in_the_month_it_starts() -> None:
    world = make_world()
    buy(world, P1Y_ANNUAL, datetime(2026, 12, 10, 9, tzinfo=UTC))
    lines, _ = run(world, BillingMonth(2026, 12))
    assert lines == [(LineKind.SEATS, 3 * 250), (LineKind.LICENCE_PERIOD, 2 * 12000)]
    world.usage = type(world.usage)()  # no devices in January; the annual period was billed in December
    assert run(world, BillingMonth(2027, 1)) == ([(LineKind.SEATS, 0)], InvoiceStatus.NOTHING_DUE)


def test_a_credit_beyond_the_charges_is_carried_to_the_next_invoice() -> None:
    world = make_world(devices=0)
    bought = datetime(2026, 12, 2, 9, tzinfo=UTC)
    buy(world, P1Y_ANNUAL, bought, quantity=10)  # 10 x 120.00 in December
    run(world, BillingMonth(2026, 12))
    # In January the order moves to P3Y billed monthly: most of the annual charge comes back.
    changed_on = datetime(2027, 1, 4, 9, tzinfo=UTC)
    order, subs = world.subscriptions.load_order("p1", "ord_1") or (None, [])
    assert order is not None
    changed = change_term_now(
        subs, Cycle(Term.P3Y, BillingFrequency.MONTHLY), PRICE_LIST_2026_01, changed_on, plan_active=True
    )
    world.subscriptions.save_order(order, changed, audit=AuditEvent("p1", "order_changed", changed_on, "test"))
    unused = (date(2027, 12, 2) - date(2027, 1, 4)).days
    credit = round(120000 * unused / 365)
    lines, status = run(world, BillingMonth(2027, 1))
    assert status is InvoiceStatus.NOTHING_DUE
    assert lines == [
        (LineKind.SEATS, 0),
        (LineKind.CHANGE_CREDIT, -credit),
        (LineKind.LICENCE_PERIOD, 10 * 900),
        (LineKind.CREDIT_CARRIED_FORWARD, credit - 10 * 900),
    ]
    invoice = world.invoices.load_invoice("p1", BillingMonth(2027, 1))
    assert invoice is not None
    detail = next(line.subscription for line in invoice.lines if line.kind is LineKind.CHANGE_CREDIT)
    assert detail is not None and detail.credit_for is not None  # the reconciliation names the charge it gives back
    assert (detail.credit_for.period_start, detail.credit_for.amount.amount_minor) == (date(2026, 12, 2), 120000)
    february, _ = run(world, BillingMonth(2027, 2))
    assert (LineKind.CREDIT_BROUGHT_FORWARD, -(credit - 10 * 900)) in february
    assert world.provider.successful_charges == 1  # December only: January and February are covered by the credit


def test_no_plan_no_invoice_even_with_subscriptions() -> None:
    world = make_world()
    world.store.plans.clear()
    buy(world, P1Y_MONTHLY, datetime(2026, 12, 3, tzinfo=UTC))
    world.clock = FixedClock(datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert world.service().charge_partner_for_month("p1", BillingMonth(2026, 12)) is None


def test_a_month_waits_for_the_previous_invoice_so_its_credit_is_never_lost() -> None:
    world = make_world()
    buy(world, P1Y_MONTHLY, datetime(2026, 11, 25, 9, tzinfo=UTC))
    world.clock.current = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    with pytest.raises(TransientFailure, match="2026-11"):
        world.service().charge_partner_for_month("p1", BillingMonth(2026, 12))  # November's not made yet
    assert world.invoices.load_invoice("p1", BillingMonth(2026, 12)) is None
    run(world, BillingMonth(2026, 11))
    assert run(world, BillingMonth(2026, 12))[1] is InvoiceStatus.PAID


# ---------------------------------------------------------------- one lifecycle: the plan ends, committed terms run


def end_plan_on(world: World, ends_on: date) -> None:
    """The partner cancels for ``ends_on`` and the end-of-plan schedule fires the next day."""
    plan = world.store.plans["p1"]
    scheduled = plan.schedule_cancellation(ends_on, datetime(2026, 12, 10, tzinfo=UTC))
    ended = scheduled.end_as_scheduled(
        ends_on, datetime(ends_on.year + (ends_on.month == 12), ends_on.month % 12 + 1, 1, tzinfo=UTC)
    )
    assert ended is not None
    world.store.plans["p1"] = ended


def test_a_cancelled_plan_bills_the_committed_term_to_its_end_and_never_renews_it() -> None:
    world = make_world()  # activated 2026-11-20
    buy(world, P1Y_MONTHLY, datetime(2026, 11, 25, 9, tzinfo=UTC))  # committed until 2027-11-24
    run(world, BillingMonth(2026, 11))
    end_plan_on(world, date(2026, 12, 31))
    assert run(world, BillingMonth(2026, 12))[0] == [(LineKind.SEATS, 3 * 250), (LineKind.LICENCE_PERIOD, 2 * 1000)]
    month = BillingMonth(2027, 1)
    while month <= BillingMonth(2027, 10):  # after the plan's final month: the licence periods only
        assert run(world, month)[0] == [(LineKind.LICENCE_PERIOD, 2 * 1000)], month
        assert world.store.plans["p1"].visited_by_monthly_runs
        month = month.next()
    world.clock.current = datetime(2027, 12, 1, 0, 5, tzinfo=UTC)
    assert world.service().charge_partner_for_month("p1", BillingMonth(2027, 11)) is None  # no renewal on 11-25
    assert not world.store.plans["p1"].visited_by_monthly_runs  # nothing is due any more: it leaves the runs
    assert world.provider.successful_charges == 12


def test_without_subscriptions_a_cancelled_plan_leaves_the_runs_after_its_final_month() -> None:
    world = make_world()
    end_plan_on(world, date(2026, 12, 31))
    run(world, BillingMonth(2026, 12))
    world.clock.current = datetime(2027, 2, 1, 0, 5, tzinfo=UTC)
    assert world.service().charge_partner_for_month("p1", BillingMonth(2027, 1)) is None
    assert not world.store.plans["p1"].visited_by_monthly_runs


def test_the_runs_keep_visiting_a_cancelled_plan_through_months_without_lines_while_a_term_is_still_due() -> None:
    world = make_world()
    buy(world, Cycle(Term.P3Y, BillingFrequency.ANNUAL), datetime(2026, 11, 25, 9, tzinfo=UTC))
    run(world, BillingMonth(2026, 11))
    end_plan_on(world, date(2026, 12, 31))
    run(world, BillingMonth(2026, 12))
    billed = []
    month = BillingMonth(2027, 1)
    while world.store.plans["p1"].visited_by_monthly_runs:
        world.clock.current = datetime(month.next().year, month.next().month, 1, 0, 5, tzinfo=UTC)
        invoice = world.service().charge_partner_for_month("p1", month)
        if invoice is not None:
            billed.append((str(month), [(line.kind, line.amount.amount_minor) for line in invoice.lines]))
        month = month.next()
    assert billed == [
        ("2027-11", [(LineKind.LICENCE_PERIOD, 2 * 10800)]),
        ("2028-11", [(LineKind.LICENCE_PERIOD, 2 * 10800)]),
    ]
    assert str(month) == "2029-01"  # left the runs at the first run with nothing due any more


def test_the_usage_report_of_an_activation_month_invoiced_for_licences_bills_no_seat() -> None:
    world = make_world(activated=datetime(2026, 12, 2, 9, tzinfo=UTC))  # devices seen in December, the activation month
    buy(world, P1Y_MONTHLY, datetime(2026, 12, 3, 9, tzinfo=UTC))
    lines, _ = run(world, BillingMonth(2026, 12))
    assert lines == [(LineKind.LICENCE_PERIOD, 2 * 1000)]
    rows = world.reports.reports["usage-reports/p1/2026-12.csv"].splitlines()[1:]
    assert len(rows) == 3 and all(row.endswith(",seats_not_billed") for row in rows)
