"""Charging one partner for one month, with crashes injected at every step (in-memory fakes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import InvalidRequest, PaymentAttemptInProgress
from billing_core.domain.invoicing import PAYMENT_LEASE, Invoice, InvoiceStatus
from billing_core.domain.metering import Billability, Sighting
from billing_core.domain.payments import ChargeOutcome, ChargeRequest, PaymentProviderUnavailable
from billing_core.domain.plan import Plan, PlanState
from billing_core.domain.reporting import RenderedEmail, reconciliation_csv
from billing_core.domain.workspace import Workspace
from billing_core.services.monthly_charge import MonthlyChargeService
from tests.fakes import (
    CrashingProvider,
    FixedClock,
    InMemoryBillingStore,
    InMemoryInvoiceStore,
    InMemorySubscriptionStore,
    InMemoryUsageReports,
    InMemoryUsageStore,
    RecordingMailer,
    RecordingPaymentProvider,
    WorkerCrash,
)
from tests.helpers import PRICE_LIST_2026_01

ACTIVATED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
DECEMBER = BillingMonth(2026, 12)
RUN_AT = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)


@dataclass
class World:
    store: InMemoryBillingStore
    invoices: InMemoryInvoiceStore
    usage: InMemoryUsageStore
    provider: RecordingPaymentProvider
    mailer: RecordingMailer
    reports: InMemoryUsageReports
    clock: FixedClock
    subscriptions: InMemorySubscriptionStore = field(default_factory=InMemorySubscriptionStore)

    def service(self, **overrides: Any) -> MonthlyChargeService:
        parts: dict[str, Any] = {
            "plans": self.store,
            "workspaces": self.store,
            "invoices": self.invoices,
            "usage": self.usage,
            "payments": self.provider,
            "mailer": self.mailer,
            "reports": self.reports,
            "clock": self.clock,
            "prices": PRICE_LIST_2026_01,
            "subscriptions": self.subscriptions,
        }
        return MonthlyChargeService(**(parts | overrides))

    def run(self, **overrides: Any) -> Invoice | None:
        return self.service(**overrides).charge_partner_for_month("p1", DECEMBER)


# SQS redelivers a message whose worker died after its visibility timeout (9 minutes).
REDELIVERY = timedelta(minutes=9)


def make_world(payment_method: str = "pm_card_visa", devices: int = 3, activated: datetime = ACTIVATED) -> World:
    store = InMemoryBillingStore()
    store.plans["p1"] = replace(
        Plan("p1")
        .begin_activation(activated)
        .complete_activation(
            now=activated,
            currency="USD",
            price_list_version="2026-01",
            customer_ref="cus_1",
            payment_method_ref=payment_method,
            billing_email="billing@p1.example",
        ),
        version=1,
    )
    workspace = Workspace("ws1", "p1", "Acme", created_at=activated).put_on_plan(
        plan=store.plans["p1"], prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=10, now=activated
    )
    store.workspaces["ws1"] = replace(workspace, version=1)
    usage = InMemoryUsageStore()
    for index in range(devices):
        seen = datetime(2026, 12, 5, tzinfo=UTC) + timedelta(hours=index)
        usage.record_first_sighting(Sighting(f"e{index}", "ws1", f"d{index}", seen), Billability.BILLABLE, "p1", seen)
    return World(
        store,
        InMemoryInvoiceStore(),
        usage,
        RecordingPaymentProvider(),
        RecordingMailer(),
        InMemoryUsageReports(),
        FixedClock(RUN_AT),
    )


def test_a_month_is_charged_once_reported_once_and_re_runs_change_nothing() -> None:
    world = make_world()
    invoice = world.run()
    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    assert invoice.total.amount_minor == 3 * 250
    assert [to for to, _ in world.mailer.sent] == ["billing@p1.example"]
    assert "December 2026" in world.mailer.sent[0][1].subject
    csv_lines = world.reports.reports["usage-reports/p1/2026-12.csv"].splitlines()
    assert len(csv_lines) == 1 + 3 and all(line.endswith(",billed") for line in csv_lines[1:])
    # Created with the attempt claimed, paid, reported: three writes, each with its audit event.
    assert world.invoices.writes == 3
    assert [event.event_type for event in invoice.events] == [
        "invoice_created",
        "payment_attempt_started",
        "invoice_paid",
        "billing_report_sent",
    ]
    for _ in range(3):
        assert world.run() == world.invoices.load_invoice("p1", DECEMBER)
    assert world.provider.successful_charges == 1 and world.provider.calls == 1
    assert len(world.invoices.paid()) == 1 and len(world.mailer.sent) == 1


def test_the_reconciliation_file_is_written_next_to_the_usage_report_before_the_e_mail() -> None:
    world = make_world()
    reports = world.reports

    class MailerSeeingReports(RecordingMailer):
        def send(self, to: str, email: RenderedEmail) -> str:
            assert set(reports.reports) == {
                "usage-reports/p1/2026-12.csv",
                "usage-reports/p1/2026-12-reconciliation.csv",
            }
            return super().send(to, email)

    invoice = world.run(mailer=MailerSeeingReports())
    assert invoice is not None and invoice.reported_at is not None
    assert world.reports.reports["usage-reports/p1/2026-12-reconciliation.csv"] == reconciliation_csv(invoice)
    assert (
        world.reports.reports["usage-reports/p1/2026-12-reconciliation.csv"]
        .splitlines()[1]
        .startswith("2026-12,1,seats,Acme,ws1,")
    )


def test_the_activation_month_is_not_charged() -> None:
    world = make_world(activated=datetime(2026, 12, 10, tzinfo=UTC))
    assert world.run() is None
    assert world.invoices.invoices == {} and world.provider.calls == 0


class CrashOnce:
    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method, self.crashed = inner, method, False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name == self._method and not self.crashed:

            def crash(*args: Any, **kwargs: Any) -> Any:
                self.crashed = True
                raise WorkerCrash(f"died in {name}")

            return crash
        return attribute


def test_crash_before_the_payment_then_retry() -> None:
    world = make_world()
    # The worker dies right after claiming the attempt: the provider is never called.
    provider = CrashOnce(world.provider, "charge")
    with pytest.raises(WorkerCrash):
        world.run(payments=provider)
    assert world.provider.calls == 0
    with pytest.raises(PaymentAttemptInProgress):  # the dead worker's lease still runs: no provider call
        world.run()
    world.clock.advance(REDELIVERY)
    assert world.run().status is InvoiceStatus.PAID  # type: ignore[union-attr]
    assert world.provider.found == 1  # looked up first: never made, so charged now
    assert world.provider.successful_charges == 1 and len(world.mailer.sent) == 1


def test_crash_after_the_payment_before_the_invoice_update_reconciles_through_the_same_key() -> None:
    world = make_world()
    world.provider = CrashingProvider()
    with pytest.raises(WorkerCrash):
        world.run()
    stored = world.invoices.load_invoice("p1", DECEMBER)
    assert stored is not None and stored.status is InvoiceStatus.DRAFT and stored.payment_attempt_started_at
    world.clock.advance(REDELIVERY)
    invoice = world.run()
    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    # The provider replays no key (as Stripe after 24 hours): the retry finds the payment by its reference
    # and records it, instead of charging again.
    assert world.provider.calls == 1 and world.provider.found == 1 and world.provider.successful_charges == 1
    assert invoice.payment_id == world.provider.ledger[0][1].provider_payment_id
    assert len(world.invoices.paid()) == 1 and len(world.mailer.sent) == 1


def test_a_second_worker_backs_off_while_the_first_holds_the_attempt_and_never_calls_the_provider() -> None:
    world = make_world()
    # The first worker has claimed the attempt (its lease runs) and is inside the provider call.
    world.provider = CrashingProvider()
    with pytest.raises(WorkerCrash):
        world.run()
    world.provider.crash_after_charge = False
    world.clock.advance(PAYMENT_LEASE - timedelta(seconds=1))
    with pytest.raises(PaymentAttemptInProgress):
        world.run()
    assert world.provider.calls == 1 and world.provider.found == 0
    world.clock.advance(timedelta(seconds=1))  # the lease is over: the holder cannot be running any more
    assert world.run().status is InvoiceStatus.PAID  # type: ignore[union-attr]
    assert world.provider.calls == 1 and world.provider.successful_charges == 1


def test_a_provider_timeout_gives_the_lease_up_and_the_retry_reconciles_at_once() -> None:
    world = make_world()
    world.provider.fail_after_accepting = 1
    with pytest.raises(PaymentProviderUnavailable):
        world.run()
    stored = world.invoices.load_invoice("p1", DECEMBER)
    assert stored is not None and stored.payment_attempt_started_at and stored.payment_lease_until is None
    assert world.run().status is InvoiceStatus.PAID  # type: ignore[union-attr]
    assert world.provider.calls == 1 and world.provider.found == 1 and world.provider.successful_charges == 1


def test_crash_after_the_invoice_before_the_email_then_retry() -> None:
    world = make_world()
    mailer = CrashOnce(world.mailer, "send")
    with pytest.raises(WorkerCrash):
        world.run(mailer=mailer)
    assert world.invoices.load_invoice("p1", DECEMBER).status is InvoiceStatus.PAID  # type: ignore[union-attr]
    world.run()
    assert world.provider.successful_charges == 1 and len(world.mailer.sent) == 1


def test_decline_is_retried_on_days_3_5_7_then_the_plan_is_past_due() -> None:
    world = make_world(payment_method="pm_card_chargeCustomerFail")
    invoice = world.run()
    assert invoice is not None and invoice.status is InvoiceStatus.PAYMENT_FAILED
    assert str(invoice.next_retry_on) == "2027-01-03"
    assert world.run().payment_attempts == 1  # type: ignore[union-attr]  # not due before the 3rd
    for day in (3, 5, 7):
        world.clock.current = datetime(2027, 1, day, 0, 5, tzinfo=UTC)
        invoice = world.run()
    assert invoice is not None and invoice.status is InvoiceStatus.PAST_DUE and invoice.payment_attempts == 4
    assert world.store.plans["p1"].state is PlanState.PAST_DUE
    assert len(world.mailer.sent) == 4 and world.provider.successful_charges == 0
    assert all("payment" in subject.lower() for subject in world.mailer.subjects())


def test_decline_then_a_successful_retry() -> None:
    world = make_world(payment_method="pm_card_chargeCustomerFail")
    assert world.run().status is InvoiceStatus.PAYMENT_FAILED  # type: ignore[union-attr]
    # The partner fixes the card before the retry on the 3rd.
    world.store.plans["p1"] = replace(world.store.plans["p1"], payment_method_ref="pm_card_visa")
    world.clock.current = datetime(2027, 1, 3, 0, 5, tzinfo=UTC)
    invoice = world.run()
    assert invoice is not None and invoice.status is InvoiceStatus.PAID and invoice.payment_attempts == 2
    assert world.provider.successful_charges == 1
    assert len(world.mailer.sent) == 2  # one failed-payment notice, then the billing report


def test_a_month_without_seats_is_reported_without_a_payment_attempt() -> None:
    world = make_world(devices=0)
    invoice = world.run()
    assert invoice is not None and invoice.status is InvoiceStatus.NOTHING_DUE
    assert world.provider.calls == 0 and len(world.mailer.sent) == 1


def test_late_usage_after_the_run_is_billed_once_on_the_next_invoice() -> None:
    from billing_core.services.metering import InboundMessage, MeteringService
    from tests.fakes import InMemoryWorkspaceDirectory

    world = make_world(devices=3)
    assert world.run() is not None  # December charged on 1 January: 3 seats
    metering = MeteringService(world.usage, InMemoryWorkspaceDirectory(world.store), world.clock)
    world.clock.current = datetime(2027, 1, 10, tzinfo=UTC)
    late_body = {
        "type": "daily_report",
        "event_id": "late",
        "workspace_id": "ws1",
        "device_ids": ["d0", "late-1"],
        "observed_at": "2026-12-30T10:00:00Z",
    }
    metering.record_batch([InboundMessage("m-late", json.dumps(late_body))])
    metering.record_batch([InboundMessage("m-late-again", json.dumps(late_body))])  # redelivery

    world.clock.current = datetime(2027, 2, 1, 0, 5, tzinfo=UTC)
    january = world.service().charge_partner_for_month("p1", BillingMonth(2027, 1))
    assert january is not None and january.status is InvoiceStatus.PAID
    adjustments = [(str(line.month), line.seats, line.devices) for line in january.lines if line.adjustment]
    assert adjustments == [("2026-12", 1, 1)]  # only the new device; d0 was already billed in December
    assert january.total.amount_minor == 250  # no January usage, one late December seat
    world.clock.current = datetime(2027, 3, 1, 0, 5, tzinfo=UTC)
    february = world.service().charge_partner_for_month("p1", BillingMonth(2027, 2))
    assert february is not None and not [line for line in february.lines if line.adjustment]


def test_a_month_that_has_not_ended_cannot_be_charged() -> None:
    world = make_world()
    world.clock.current = datetime(2026, 12, 20, tzinfo=UTC)  # December is still running
    with pytest.raises(InvalidRequest) as refused:
        world.run()
    assert "has not ended" in refused.value.problems[0].message
    assert world.invoices.invoices == {} and world.store.plans["p1"].last_charged_month is None


def test_a_workspace_that_joins_the_plan_after_the_month_ended_is_no_line_of_that_month() -> None:
    """Issue 27, item 8: put on the plan at 00:01 on the 1st, before the run at 00:05."""
    world = make_world()
    joined = datetime(2027, 1, 1, 0, 1, tzinfo=UTC)
    late = Workspace("ws2", "p1", "Joined on the 1st", created_at=joined).put_on_plan(
        plan=world.store.plans["p1"], prices=PRICE_LIST_2026_01, edition="anti-malware", max_devices=5, now=joined
    )
    world.store.workspaces["ws2"] = replace(late, version=1)
    invoice = world.run()
    assert invoice is not None and [line.workspace_id for line in invoice.lines] == ["ws1"]


def test_a_rate_limited_charge_is_retried_never_declined_and_charged_once() -> None:
    """The provider refuses the request for its rate limit (429: nothing charged): the run fails retryably,
    the invoice keeps its attempt without a decline, and the retry looks the payment up, then charges once."""

    class RateLimitedOnce(RecordingPaymentProvider):
        limited: bool = True

        def charge(self, request: ChargeRequest) -> ChargeOutcome:
            if self.limited:
                self.limited = False
                raise PaymentProviderUnavailable("Stripe unavailable: rate limit (429)")
            return super().charge(request)

    world = make_world()
    world.provider = RateLimitedOnce()
    with pytest.raises(PaymentProviderUnavailable):
        world.run()
    stored = world.invoices.load_invoice("p1", DECEMBER)
    assert stored is not None and stored.status is InvoiceStatus.DRAFT and stored.failure_code is None
    invoice = world.run()  # the redelivery
    assert invoice is not None and invoice.status is InvoiceStatus.PAID and invoice.payment_attempts == 1
    assert world.provider.found == 1 and world.provider.successful_charges == 1


class CountingUsageStore(InMemoryUsageStore):
    """Counts the run's reads of device-month partitions (issue 28, item 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.partition_reads: list[tuple[str, str, bool]] = []

    def recorded_devices(self, workspace_id: str, month: BillingMonth, *, billable: bool) -> list[Any]:
        self.partition_reads.append((workspace_id, str(month), billable))
        return super().recorded_devices(workspace_id, month, billable=billable)

    def count_devices(self, workspace_id: str, month: BillingMonth) -> int:
        self.partition_reads.append((workspace_id, str(month), True))
        return super().count_devices(workspace_id, month)


def test_a_run_reads_each_workspace_month_once_and_not_billable_devices_only_where_there_can_be_some() -> None:
    world = make_world(devices=3)
    usage = CountingUsageStore()
    usage.devices, usage.late = world.usage.devices, world.usage.late
    joined_mid_month = datetime(2026, 12, 10, tzinfo=UTC)
    world.store.workspaces["ws2"] = Workspace("ws2", "p1", "Joined", created_at=joined_mid_month).put_on_plan(
        plan=world.store.plans["p1"],
        prices=PRICE_LIST_2026_01,
        edition="anti-malware",
        max_devices=10,
        now=joined_mid_month,
    )
    world.store.workspaces["ws3"] = Workspace("ws3", "p1", "Never on the plan", created_at=ACTIVATED)
    early = datetime(2026, 12, 9, tzinfo=UTC)
    usage.record_first_sighting(Sighting("n1", "ws2", "n1", early), Billability.NOT_ON_PLAN, "p1", early)
    usage.record_first_sighting(Sighting("n2", "ws3", "n2", early), Billability.NOT_ON_PLAN, "p1", early)

    invoice = world.run(usage=usage)

    assert invoice is not None and invoice.total.amount_minor == 3 * 250
    billable_reads = [read for read in usage.partition_reads if read[2]]
    assert sorted(billable_reads) == [("ws1", "2026-12", True), ("ws2", "2026-12", True), ("ws3", "2026-12", True)]
    # ws1 was on the plan all December: no sighting of it can be not billable, so its partition is not read.
    assert sorted(read[0] for read in usage.partition_reads if not read[2]) == ["ws2", "ws3"]
    report = world.reports.reports["usage-reports/p1/2026-12.csv"]
    assert report.count(",billed") == 3 and "n1" in report and "n2" in report


def test_on_the_plan_throughout_a_month_means_from_a_day_before_it_to_its_end() -> None:
    def on_plan_from(joined: datetime) -> Workspace:
        return Workspace("ws", "p1", "W", created_at=joined, on_plan=True, joined_plan_at=joined)

    assert on_plan_from(datetime(2026, 11, 29, 23, 59, tzinfo=UTC)).on_plan_throughout(DECEMBER)
    assert not on_plan_from(datetime(2026, 11, 30, 0, 1, tzinfo=UTC)).on_plan_throughout(DECEMBER)  # metering's cache
    ended = replace(on_plan_from(datetime(2026, 10, 1, tzinfo=UTC)), on_plan=False)
    assert replace(ended, licence_ended_on=DECEMBER.last_day).on_plan_throughout(DECEMBER)
    assert not replace(ended, licence_ended_on=DECEMBER.last_day - timedelta(days=1)).on_plan_throughout(DECEMBER)
    assert not Workspace("ws", "p1", "W", created_at=ACTIVATED).on_plan_throughout(DECEMBER)
