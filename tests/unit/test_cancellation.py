"""Cancellation and reactivation: the rules (plan, licence, metering) and the service with fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.errors import Conflict, InvalidRequest, PlanNotActive
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus, is_billable_month
from billing_core.domain.metering import Billability, Sighting, classify_sighting
from billing_core.domain.plan import Plan, PlanEndNotDue, PlanState, cancellation_end_dates
from billing_core.domain.subscriptions import Order, OrderLine, Owner, new_subscriptions
from billing_core.domain.workspace import LicenceStatus, Workspace, licence_document
from billing_core.schemas import ActivatePlanRequest, CancelPlanRequest
from billing_core.services.activation import ActivationService
from billing_core.services.cancellation import CancellationService, PlanEndOutcome
from billing_core.services.monthly_charge import MonthlyChargeService
from tests.fakes import (
    FixedClock,
    InMemoryBillingStore,
    InMemoryIdempotencyGuard,
    InMemoryInvoiceStore,
    InMemoryPlanEndSchedules,
    InMemorySubscriptionStore,
    InMemoryUsageReports,
    InMemoryUsageStore,
    RecordingMailer,
    RecordingPaymentProvider,
)
from tests.helpers import PRICE_LIST_2026_01

ACTIVATED = datetime(2026, 10, 20, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
END_OF_DECEMBER = date(2026, 12, 31)
OWNER = PartnerIdentity("p1", Role.OWNER, "owner-1")


def active_plan(activated: datetime = ACTIVATED) -> Plan:
    plan = (
        Plan("p1")
        .begin_activation(activated)
        .complete_activation(
            now=activated,
            currency="USD",
            price_list_version="2026-01",
            customer_ref="cus_1",
            payment_method_ref="pm_card_visa",
            billing_email="billing@p1.example",
        )
    )
    return replace(plan, version=1)


# -- rules -----------------------------------------------------------------------------------------
def test_the_offered_end_dates_are_the_ends_of_this_and_the_next_two_months() -> None:
    assert cancellation_end_dates(NOW) == [date(2026, 11, 30), date(2026, 12, 31), date(2027, 1, 31)]
    assert cancellation_end_dates(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))[0] == date(2026, 12, 31)


@pytest.mark.parametrize("ends_on", [date(2026, 12, 30), date(2027, 2, 28), date(2026, 10, 31)])
def test_any_other_end_date_is_refused_naming_the_allowed_ones(ends_on: date) -> None:
    with pytest.raises(InvalidRequest) as refused:
        active_plan().schedule_cancellation(ends_on, NOW)
    assert refused.value.problems[0].field == "ends_on"
    assert "2026-11-30, 2026-12-31, 2027-01-31" in refused.value.problems[0].message


# (A past-due plan was refused here too until issue 27 item 3: cancelling is one way out of dunning.)
@pytest.mark.parametrize("state", [PlanState.INACTIVE, PlanState.ACTIVATING, PlanState.CANCELLED])
def test_only_a_live_plan_can_be_cancelled(state: PlanState) -> None:
    with pytest.raises(PlanNotActive):
        replace(active_plan(), state=state).schedule_cancellation(END_OF_DECEMBER, NOW)


def charge_service(
    store: InMemoryBillingStore,
    usage: InMemoryUsageStore,
    clock: FixedClock,
    *,
    invoices: InMemoryInvoiceStore | None = None,
    provider: RecordingPaymentProvider | None = None,
) -> MonthlyChargeService:
    return MonthlyChargeService(
        store,
        store,
        InMemoryInvoiceStore() if invoices is None else invoices,
        usage,
        RecordingPaymentProvider() if provider is None else provider,
        RecordingMailer(),
        InMemoryUsageReports(),
        clock,
        PRICE_LIST_2026_01,
        InMemorySubscriptionStore(),
    )


def ended_in_december_with_devices(
    *devices: str, payment_method: str | None = None
) -> tuple[InMemoryBillingStore, InMemoryUsageStore]:
    """A plan cancelled to the end of December, ended at midnight, whose workspace saw ``devices`` in December."""
    service, store, _, _ = cancellation_world()
    if payment_method is not None:
        store.plans["p1"] = replace(store.plans["p1"], payment_method_ref=payment_method)
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    assert isinstance(service.clock, FixedClock)
    service.clock.current = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    service.end_plan_as_scheduled("p1", END_OF_DECEMBER)
    usage = InMemoryUsageStore()
    seen = datetime(2026, 12, 3, tzinfo=UTC)
    for device in devices:
        usage.record_first_sighting(Sighting(device, "ws1", device, seen), Billability.BILLABLE, "p1", seen)
    return store, usage


def test_a_past_due_plan_can_be_cancelled_and_a_reactivation_returns_it_to_past_due() -> None:
    past_due = active_plan().mark_past_due(BillingMonth(2026, 10))
    scheduled = past_due.schedule_cancellation(END_OF_DECEMBER, NOW)
    assert (scheduled.state, scheduled.past_due_month) == (PlanState.CANCELLATION_SCHEDULED, BillingMonth(2026, 10))
    assert scheduled.reactivate(NOW).state is PlanState.PAST_DUE


def test_reactivation_restores_the_plan_until_the_end_date_is_over_and_not_after() -> None:
    plan = active_plan()
    scheduled = plan.schedule_cancellation(END_OF_DECEMBER, NOW)
    assert scheduled.state is PlanState.CANCELLATION_SCHEDULED
    last_minute = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert scheduled.reactivate(last_minute) == plan
    with pytest.raises(Conflict, match="ended on 2026-12-31"):
        scheduled.reactivate(datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(Conflict, match="no cancellation"):
        plan.reactivate(NOW)


def test_the_end_of_plan_only_carries_out_the_cancellation_the_plan_still_holds() -> None:
    scheduled = active_plan().schedule_cancellation(END_OF_DECEMBER, NOW)
    after_end = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    with pytest.raises(PlanEndNotDue):
        scheduled.end_as_scheduled(END_OF_DECEMBER, after_end - timedelta(seconds=1))
    ended = scheduled.end_as_scheduled(END_OF_DECEMBER, after_end)
    assert ended is not None and ended.state is PlanState.CANCELLED and ended.ended_on == END_OF_DECEMBER
    assert ended.final_month == BillingMonth(2026, 12)
    # Stale: reactivated, another date chosen, or already ended.
    assert scheduled.reactivate(NOW).end_as_scheduled(END_OF_DECEMBER, after_end) is None
    assert scheduled.end_as_scheduled(date(2026, 11, 30), after_end) is None
    assert ended.end_as_scheduled(END_OF_DECEMBER, after_end) is None


def test_billable_months_stop_at_the_final_month() -> None:
    ended = (
        active_plan()
        .schedule_cancellation(END_OF_DECEMBER, NOW)
        .end_as_scheduled(END_OF_DECEMBER, datetime(2027, 1, 1, tzinfo=UTC))
    )
    assert ended is not None
    assert [is_billable_month(ended, BillingMonth(2026, m)) for m in (10, 11, 12)] == [False, True, True]
    assert not is_billable_month(ended, BillingMonth(2027, 1))


def test_licences_end_with_the_plan_even_if_the_schedule_is_late() -> None:
    plan = active_plan()
    workspace = Workspace("ws1", "p1", "Acme", ACTIVATED).put_on_plan(
        plan=plan, prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=5, now=ACTIVATED
    )
    scheduled = plan.schedule_cancellation(date(2026, 11, 30), NOW)
    during = licence_document(workspace, scheduled, NOW)
    assert (during.status, during.valid_through, during.ends_on) == (
        LicenceStatus.ACTIVE,
        date(2026, 11, 30),
        date(2026, 11, 30),
    )
    late = licence_document(workspace, scheduled, datetime(2026, 12, 1, 0, 1, tzinfo=UTC))  # not finalised yet
    assert (late.status, late.valid_through) == (LicenceStatus.ENDED, date(2026, 11, 30))
    ended = licence_document(workspace.end_licence(date(2026, 11, 30)), scheduled.reactivate(NOW), NOW)
    assert (ended.status, ended.valid_through) == (LicenceStatus.ENDED, date(2026, 11, 30))


def test_devices_seen_before_the_end_still_bill_after_the_licence_ended() -> None:
    workspace = replace(
        Workspace("ws1", "p1", "Acme", ACTIVATED, on_plan=True, joined_plan_at=ACTIVATED).end_licence(END_OF_DECEMBER)
    )
    before = Sighting("e1", "ws1", "d1", datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    after = Sighting("e2", "ws1", "d2", datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    assert classify_sighting(before, workspace, None) is Billability.BILLABLE
    assert classify_sighting(after, workspace, None) is Billability.NOT_ON_PLAN


def test_a_new_activation_waits_for_the_final_invoice_of_the_cancelled_plan() -> None:
    ended = (
        active_plan()
        .schedule_cancellation(END_OF_DECEMBER, NOW)
        .end_as_scheduled(END_OF_DECEMBER, datetime(2027, 1, 1, tzinfo=UTC))
    )
    assert ended is not None and ended.month_of_final_invoice() == BillingMonth(2026, 12)
    store, invoices = InMemoryBillingStore(), InMemoryInvoiceStore()
    store.plans["p1"] = ended
    activation = ActivationService(
        store,
        store,
        RecordingPaymentProvider(),
        InMemoryUsageStore(),
        FixedClock(datetime(2027, 1, 1, 0, 6, tzinfo=UTC)),
        PRICE_LIST_2026_01,
        InMemoryIdempotencyGuard(),
        invoices,
    )
    request = ActivatePlanRequest(payment_method="pm_card_visa")
    with pytest.raises(Conflict, match="final invoice") as refused:
        activation.activate_monthly_billing(OWNER, "again-1", request)
    assert refused.value.code == "final_invoice_pending" and store.plans["p1"].state is PlanState.CANCELLED
    # Once the run has made the final invoice, a new activation starts a new plan life.
    usage = InMemoryUsageStore()
    charge_service(
        store, usage, FixedClock(datetime(2027, 1, 1, 0, 5, tzinfo=UTC)), invoices=invoices
    ).charge_partner_for_month("p1", BillingMonth(2026, 12))
    assert activation.activate_monthly_billing(OWNER, "again-2", request).status == "activated"
    reactivated = store.load_plan("p1")
    assert (reactivated.state, reactivated.ended_on) == (PlanState.ACTIVE, None)
    # A plan cancelled in its activation month has no final invoice to wait for.
    short = active_plan(activated=datetime(2026, 11, 2, tzinfo=UTC)).schedule_cancellation(date(2026, 11, 30), NOW)
    ended_short = short.end_as_scheduled(date(2026, 11, 30), datetime(2026, 12, 1, tzinfo=UTC))
    assert ended_short is not None and ended_short.month_of_final_invoice() is None


# -- service ---------------------------------------------------------------------------------------
def cancellation_world() -> tuple[CancellationService, InMemoryBillingStore, InMemoryPlanEndSchedules, RecordingMailer]:
    store = InMemoryBillingStore()
    store.plans["p1"] = active_plan()
    workspace = Workspace("ws1", "p1", "Acme", ACTIVATED).put_on_plan(
        plan=store.plans["p1"], prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=5, now=ACTIVATED
    )
    store.workspaces["ws1"] = replace(workspace, version=1)
    store.workspaces["ws2"] = Workspace("ws2", "p1", "Off plan", ACTIVATED, version=1)
    usage = InMemoryUsageStore()
    for device in ("a", "b"):
        usage.record_first_sighting(Sighting(device, "ws1", device, NOW), Billability.BILLABLE, "p1", NOW)
    schedules, mailer = InMemoryPlanEndSchedules(), RecordingMailer()
    service = CancellationService(
        store, store, usage, schedules, mailer, FixedClock(NOW), InMemorySubscriptionStore(), PRICE_LIST_2026_01
    )
    return service, store, schedules, mailer


def test_cancel_lists_the_licences_that_end_schedules_the_end_and_confirms_by_email() -> None:
    service, store, schedules, mailer = cancellation_world()
    view = service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    assert view.state == "cancellation_scheduled" and view.final_invoice_on == date(2027, 1, 1)
    assert [(w.workspace_id, w.devices_this_month) for w in view.workspaces_losing_protection] == [("ws1", 2)]
    assert schedules.schedules == {("p1", END_OF_DECEMBER)}
    assert view.confirmation_email_sent and "Acme" in mailer.sent[0][1].text
    assert "every licence on the plan ends" in mailer.sent[0][1].text
    assert store.audit[-1].event_type == "cancellation_scheduled"


def test_cancelling_again_replaces_the_date_and_its_schedule() -> None:
    service, store, schedules, mailer = cancellation_world()
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    again = service.cancel_plan(OWNER, CancelPlanRequest(ends_on=date(2027, 1, 31)))
    assert again.ends_on == date(2027, 1, 31)
    assert schedules.schedules == {("p1", date(2027, 1, 31))}
    assert store.audit[-1].event_type == "cancellation_date_changed"
    # The same date once more changes nothing (no write, no e-mail).
    writes = len(store.audit)
    assert service.cancel_plan(OWNER, CancelPlanRequest(ends_on=date(2027, 1, 31))).ends_on == date(2027, 1, 31)
    assert len(store.audit) == writes and len(mailer.sent) == 2


def test_a_scheduler_failure_writes_nothing() -> None:
    service, store, schedules, _ = cancellation_world()
    schedules.fail = True
    with pytest.raises(Exception, match="scheduler unavailable"):
        service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    assert store.plans["p1"].state is PlanState.ACTIVE and store.audit == []


def test_reactivate_deletes_the_schedule_and_a_stale_firing_changes_nothing() -> None:
    service, store, schedules, _ = cancellation_world()
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    status = service.reactivate_plan(OWNER)
    assert status.state == "active" and status.cancellation_ends_on is None
    assert schedules.schedules == set()
    before = (dict(store.plans), dict(store.workspaces), len(store.audit))
    assert isinstance(service.clock, FixedClock)
    service.clock.current = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    assert service.end_plan_as_scheduled("p1", END_OF_DECEMBER) is PlanEndOutcome.STALE
    assert (dict(store.plans), dict(store.workspaces), len(store.audit)) == before


def test_a_failed_schedule_delete_still_reactivates() -> None:
    service, store, schedules, _ = cancellation_world()
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    schedules.fail = True
    assert service.reactivate_plan(OWNER).state == "active"
    assert store.plans["p1"].state is PlanState.ACTIVE


def test_the_end_ends_every_licence_then_the_plan_and_a_second_firing_changes_nothing() -> None:
    service, store, _, _ = cancellation_world()
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    assert isinstance(service.clock, FixedClock)
    service.clock.current = datetime(2027, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert service.end_plan_as_scheduled("p1", END_OF_DECEMBER) is PlanEndOutcome.ENDED
    plan, ws1 = store.plans["p1"], store.workspaces["ws1"]
    assert plan.state is PlanState.CANCELLED and plan.ended_on == END_OF_DECEMBER
    assert not ws1.on_plan and ws1.licence_ended_on == END_OF_DECEMBER
    assert store.workspaces["ws2"].licence_ended_on is None  # was never on the plan
    events = [event.event_type for event in store.audit]
    assert events[-2:] == ["licence_ended", "plan_ended"]
    assert service.end_plan_as_scheduled("p1", END_OF_DECEMBER) is PlanEndOutcome.ALREADY_ENDED
    assert len(store.audit) == len(events)


def test_the_final_month_is_charged_on_the_next_first_and_no_later_month_ever_is() -> None:
    store, usage = ended_in_december_with_devices("a", "b", "c")
    invoices, provider = InMemoryInvoiceStore(), RecordingPaymentProvider()
    clock = FixedClock(datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    charge = charge_service(store, usage, clock, invoices=invoices, provider=provider)
    clock.current = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    final = charge.charge_partner_for_month("p1", BillingMonth(2026, 12))
    assert final is not None and final.status is InvoiceStatus.PAID
    assert [(line.workspace_id, line.seats) for line in final.lines] == [("ws1", 3)]  # the licence had ended
    assert store.plans["p1"].visited_by_monthly_runs  # retries of the final invoice may still come
    clock.current = datetime(2027, 2, 1, 0, 5, tzinfo=UTC)
    assert charge.charge_partner_for_month("p1", BillingMonth(2027, 1)) is None
    assert not store.plans["p1"].visited_by_monthly_runs  # left the runs
    assert store.audit[-1].event_type == "plan_left_monthly_runs"
    assert provider.successful_charges == 1 and set(invoices.invoices) == {("p1", "2026-12")}


def test_a_declined_final_invoice_is_retried_without_reviving_the_plan() -> None:
    store, usage = ended_in_december_with_devices("a", payment_method="pm_card_chargeCustomerFail")
    clock = FixedClock(datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    charge = charge_service(store, usage, clock)
    statuses = []
    for day in (1, 3, 5, 7):
        clock.current = datetime(2027, 1, day, 0, 5, tzinfo=UTC)
        invoice = charge.charge_partner_for_month("p1", BillingMonth(2026, 12))
        assert invoice is not None
        statuses.append(invoice.status)
    assert statuses[-1] is InvoiceStatus.PAST_DUE and statuses[0] is InvoiceStatus.PAYMENT_FAILED
    assert store.plans["p1"].state is PlanState.CANCELLED  # not revived as "past due"


def test_no_workspace_joins_or_changes_on_a_plan_whose_end_date_is_over() -> None:
    plan = active_plan()
    workspace = Workspace("ws9", "p1", "Late", ACTIVATED)
    scheduled = plan.schedule_cancellation(date(2026, 11, 30), NOW)
    after_end = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)  # the end-of-plan firing has not run yet
    with pytest.raises(PlanNotActive, match="ended on 2026-11-30"):
        workspace.put_on_plan(
            plan=scheduled, prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=2, now=after_end
        )
    on_plan = workspace.put_on_plan(
        plan=scheduled, prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=2, now=NOW
    )
    with pytest.raises(PlanNotActive):
        on_plan.change_licence(plan=scheduled, prices=PRICE_LIST_2026_01, edition=None, max_devices=3, now=after_end)


def test_a_plan_whose_invoice_went_past_due_while_cancelling_is_past_due_again_when_reactivated() -> None:
    """17.4: the run marks only active plans past due; a plan with a scheduled cancellation used to come
    back as active on reactivation, its past-due invoice forgotten."""
    service, store, _, _ = cancellation_world()
    store.plans["p1"] = replace(store.plans["p1"], payment_method_ref="pm_card_chargeCustomerFail")
    november = datetime(2026, 11, 3, tzinfo=UTC)
    usage = InMemoryUsageStore()
    usage.record_first_sighting(Sighting("a", "ws1", "a", november), Billability.BILLABLE, "p1", november)
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    clock = FixedClock(datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
    charge = charge_service(store, usage, clock)
    for day in (1, 3, 5, 7):
        clock.current = datetime(2026, 12, day, 0, 5, tzinfo=UTC)
        invoice = charge.charge_partner_for_month("p1", BillingMonth(2026, 11))
    assert invoice is not None and invoice.status is InvoiceStatus.PAST_DUE
    scheduled = store.plans["p1"]
    assert scheduled.state is PlanState.CANCELLATION_SCHEDULED  # the cancellation keeps its course
    assert scheduled.past_due_month == BillingMonth(2026, 11)
    assert isinstance(service.clock, FixedClock)
    service.clock.current = datetime(2026, 12, 8, tzinfo=UTC)
    assert service.reactivate_plan(OWNER).state == "past_due"
    assert store.plans["p1"].state is PlanState.PAST_DUE
    # Without a past-due invoice a reactivated plan is simply active (and settling clears the mark).
    assert store.plans["p1"].clear_past_due().state is PlanState.ACTIVE
    assert active_plan().schedule_cancellation(END_OF_DECEMBER, NOW).reactivate(NOW).state is PlanState.ACTIVE


def test_the_end_stores_that_every_subscription_ends_with_its_committed_term() -> None:
    """Stored before the plan is marked ended, so a later plan life never renews them."""
    service, _, _, _ = cancellation_world()
    bought = datetime(2026, 11, 25, 9, tzinfo=UTC)
    subs = new_subscriptions(
        order_id="ord_1",
        owner=Owner("p1"),
        lines=[OrderLine("items.0", "backup-standard", 3, Cycle(Term.P1Y, BillingFrequency.MONTHLY))],
        subscription_ids=["sub_1"],
        prices=PRICE_LIST_2026_01,
        currency="USD",
        now=bought,
    )
    service.subscriptions.save_order(
        Order("ord_1", Owner("p1"), ("sub_1",), bought), subs, audit=AuditEvent("p1", "order_created", bought, "t")
    )
    service.cancel_plan(OWNER, CancelPlanRequest(ends_on=END_OF_DECEMBER))
    assert isinstance(service.clock, FixedClock)
    service.clock.current = datetime(2027, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert service.end_plan_as_scheduled("p1", END_OF_DECEMBER) is PlanEndOutcome.ENDED
    (stored,) = service.subscriptions.list_subscriptions("p1")
    assert (stored.auto_renew, stored.expires_on) == (False, date(2027, 11, 25))
    assert service.end_plan_as_scheduled("p1", END_OF_DECEMBER) is PlanEndOutcome.ALREADY_ENDED
    assert service.subscriptions.list_subscriptions("p1") == [stored]  # nothing written twice


def test_late_usage_after_the_final_invoice_gets_a_closing_invoice_and_keeps_the_plan_in_the_runs() -> None:
    """Issue 27, item 2: late usage of the final month, recorded after the final invoice, is billed on a
    closing invoice of the month it was recorded in; no run retires the plan while such usage waits."""
    store, usage = ended_in_december_with_devices("a", "b")
    invoices, provider = InMemoryInvoiceStore(), RecordingPaymentProvider()
    clock = FixedClock(datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    charge = charge_service(store, usage, clock, invoices=invoices, provider=provider)
    clock.current = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    final = charge.charge_partner_for_month("p1", BillingMonth(2026, 12))
    assert final is not None and [(line.workspace_id, line.seats) for line in final.lines] == [("ws1", 2)]

    # On 2 February an agent reports a device it saw in December: queued for February's invoice.
    recorded = datetime(2027, 2, 2, tzinfo=UTC)
    late = Sighting("late", "ws1", "c", datetime(2026, 12, 20, tzinfo=UTC))
    assert usage.record_first_sighting(late, Billability.LATE, "p1", recorded, BillingMonth(2027, 2))
    clock.current = datetime(2027, 2, 3, 0, 5, tzinfo=UTC)  # the retry day's run for January
    assert charge.charge_partner_for_month("p1", BillingMonth(2027, 1)) is None
    assert store.plans["p1"].visited_by_monthly_runs  # not retired: late usage waits for February's invoice
    clock.current = datetime(2027, 3, 1, 0, 5, tzinfo=UTC)
    closing = charge.charge_partner_for_month("p1", BillingMonth(2027, 2))
    assert closing is not None and closing.status is InvoiceStatus.PAID
    assert [(line.workspace_id, str(line.month), line.seats, line.adjustment) for line in closing.lines] == [
        ("ws1", "2026-12", 1, True)
    ]
    assert closing.total == closing.lines[0].amount and closing.total.amount_minor > 0
    assert charge.charge_partner_for_month("p1", BillingMonth(2027, 2)) == closing  # re-run: nothing new
    clock.current = datetime(2027, 4, 1, 0, 5, tzinfo=UTC)
    assert charge.charge_partner_for_month("p1", BillingMonth(2027, 3)) is None
    assert not store.plans["p1"].visited_by_monthly_runs  # nothing more to bill: left the runs again
    assert provider.successful_charges == 2
