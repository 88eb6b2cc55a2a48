"""Charging one partner for one month: rate, pay at most once, report. Safe to re-run at any point.

Every step leaves a durable mark before the next begins, so a worker that dies anywhere is simply run
again (the charge queue redelivers the message):

1. the invoice is rated and created once per partner and month (conditional write);
2. a payment attempt is claimed on the invoice (attempt number + start time) before the provider is
   called (for a new invoice in the same write that creates it), and the provider key is derived from
   partner, month and attempt, so a re-run after a crash reaches the provider with the same key and
   reconciles instead of charging again;
3. the outcome (paid with the payment id / declined with the next retry date / past due) is written;

Each write is one conditional write of the invoice item (``InvoiceStore.save_invoice``), whose own audit trail
(``events``) gets the event of that change in the same write: about three small writes per partner and month
(only a big invoice's creation is a transaction, with its line chunks).
4. the usage report (CSV) is written (an idempotent overwrite), the e-mail is sent and then marked as
   sent. A crash between sending and marking sends it again (at least once); nothing else can repeat.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import datetime

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import (
    ConcurrentModification,
    InvalidRequest,
    NotFound,
    PaymentDeclined,
    TransientFailure,
)
from billing_core.domain.invoicing import (
    RECENT_INVOICES,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LateDevices,
    LineKind,
    MonthToRate,
    WorkspaceMonthUsage,
    is_billable_month,
    rate_month,
)
from billing_core.domain.metering import RecordedDevice, count_seats
from billing_core.domain.money import Money
from billing_core.domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    SavedPaymentMethod,
)
from billing_core.domain.plan import Plan
from billing_core.domain.pricing import Prices
from billing_core.domain.reporting import (
    DeviceStatus,
    RenderedEmail,
    UsageReportRow,
    billing_report_email,
    payment_failed_email,
    reconciliation_csv,
    reconciliation_key,
    usage_report_csv,
    usage_report_key,
)
from billing_core.domain.subscriptions import Subscription, end_with_plan, last_bill_month, subscription_invoice_lines
from billing_core.domain.workspace import Workspace
from billing_core.ports import (
    ChargeablePartners,
    ChargeQueue,
    Clock,
    InvoiceStore,
    Mailer,
    PaymentProvider,
    PlanStore,
    SubscriptionStore,
    UsageReports,
    UsageStore,
    WorkspaceStore,
)

ACTOR = "monthly-charge-run"


@dataclass
class MonthlyChargeService:
    plans: PlanStore
    workspaces: WorkspaceStore
    invoices: InvoiceStore
    usage: UsageStore
    payments: PaymentProvider
    mailer: Mailer
    reports: UsageReports
    clock: Clock
    prices: Prices  # the published price lists: a month's seats at the list in effect on its first day
    subscriptions: SubscriptionStore

    def charge_partner_for_month(self, partner_id: str, month: BillingMonth) -> Invoice | None:
        """Bring the partner's invoice for ``month`` as far as it can go today. None if the month is
        not billable for this partner (never activated, activation month, plan not live, or after the
        final month of a cancelled plan). An invoice that exists is always carried on (retries of a
        cancelled plan's final invoice included)."""
        require_ended(month, self.clock.now())
        plan = self.plans.load_plan(partner_id)
        invoice = self.invoices.load_invoice(partner_id, month)
        lease_held = False  # whether this worker claimed the open payment attempt itself
        reads: PartnerMonthReads | None = None  # what rating read, reused by the usage report
        if invoice is None:
            live = plan.is_live or plan.has_ended
            subscription_lines, brought = self._subscription_part(plan, month) if live else ([], None)
            seats_or_licences = is_billable_month(plan, month) or bool(subscription_lines) or brought is not None
            # Late usage alone makes an invoice too (a closing one after the final month). Nothing is queued for an
            # ended month any more (late usage goes on the month it is recorded in), so one read serves the rating.
            late = self.usage.late_devices(plan.partner_id, month) if live else []
            if not (live and (seats_or_licences or late)):
                self._retire_if_ended(plan, month)
                return None
            invoice, lease_held, reads = self._create(plan, month, subscription_lines, brought, late)
        if invoice.payment_attempt_started_at is not None or invoice.due_for_payment(self.clock.now().date()):
            invoice = self._pay(plan, invoice, lease_held=lease_held)
        if invoice.status is InvoiceStatus.PAST_DUE and plan.needs_past_due_mark():
            # Also on a re-run: the run that recorded the last decline may have died before this write.
            self._mark_plan_past_due(partner_id, invoice.month)
        return self._report(plan, invoice, reads)

    def settle_invoice_now(self, partner_id: str, month: BillingMonth) -> Invoice:
        """Charge a declined or past-due invoice now, outside the retry days, with the plan's payment method
        (the partner just gave a new one), under the same exactly-once machinery as the run; once no invoice is
        past due any more, a past-due plan is active again."""
        plan = self.plans.load_plan(partner_id)
        invoice = self.invoices.load_invoice(partner_id, month)
        if invoice is None:
            raise NotFound(f"no invoice for {month}")
        if invoice.unpaid or invoice.payment_attempt_started_at is not None:
            invoice = self._pay(plan, invoice, lease_held=False, settling=True)
        if invoice.settled:
            self.clear_past_due_once_settled(partner_id)
        return self._report(plan, invoice)

    def clear_past_due_once_settled(self, partner_id: str) -> None:
        """A plan marked past due is active again (its mark cleared) once no invoice is past due. Each invoice
        the listing (an index read) shows past due is read again from the table, so one just paid counts as paid."""
        plan = self.plans.load_plan(partner_id)
        if plan.past_due_month is None:
            return
        invoices, _ = self.invoices.list_invoices(partner_id, limit=RECENT_INVOICES, after=None)
        for listed in invoices:
            if listed.status is InvoiceStatus.PAST_DUE:
                current = self.invoices.load_invoice(partner_id, listed.month)
                if current is not None and current.status is InvoiceStatus.PAST_DUE:
                    return
        self.plans.save_plan(
            plan.clear_past_due(),
            audit=AuditEvent(
                partner_id, "plan_past_due_settled", self.clock.now(), ACTOR, {"month": str(plan.past_due_month)}
            ),
        )

    def _subscription_part(self, plan: Plan, month: BillingMonth) -> tuple[list[InvoiceLine], Money | None]:
        """The licence subscriptions' charges and credits billed in ``month`` (their charge schedules are
        deterministic, so a re-run computes the same lines) and the credit the previous invoice carried."""
        subscriptions = self._subscriptions_of(plan)
        if not subscriptions:
            return [], None  # only subscription credits are ever carried forward
        lines = subscription_invoice_lines(subscriptions, month, self.prices)
        carried = _carried_forward(self._previous_invoice(plan, subscriptions, month))
        brought = Money(sum(line.amount.amount_minor for line in carried), plan.currency or "USD") if carried else None
        return lines, brought

    def _previous_invoice(self, plan: Plan, subscriptions: list[Subscription], month: BillingMonth) -> Invoice | None:
        """The previous month's invoice, which may carry a credit. A credit must never be lost, so this month
        waits (``TransientFailure``: the run retries) while an earlier month that would make an invoice has
        none yet: one with seats or licence lines of its own, or one that only brings on the credit an invoice
        before it carried (the months in between pass it on, each on its own invoice)."""
        # No credit is carried from before the first month any subscription bills in (a change re-anchors one).
        first = min(
            min((charge.bill_month for charge in sub.charges), default=BillingMonth.containing_date(sub.anchor))
            for sub in subscriptions
        )
        earlier = month.previous()
        while True:
            invoice = self.invoices.load_invoice(plan.partner_id, earlier)
            if invoice is not None:
                if earlier == month.previous():
                    return invoice
                if _carried_forward(invoice):
                    raise TransientFailure(f"the invoice of {earlier.next()} for {plan.partner_id} is not made yet")
                return None
            if is_billable_month(plan, earlier) or subscription_invoice_lines(subscriptions, earlier, self.prices):
                raise TransientFailure(f"the invoice of {earlier} for {plan.partner_id} is not made yet")
            earlier = earlier.previous()
            if earlier < first:
                return None

    def _subscriptions_of(self, plan: Plan) -> list[Subscription]:
        """The partner's subscriptions, each ending with the plan if the plan has an end (the one lifecycle
        rule, ``end_with_plan``: also applied before the end-of-plan finaliser has stored it)."""
        subscriptions = self.subscriptions.list_subscriptions(plan.partner_id)
        ends_on = plan.ends_on
        return [end_with_plan(sub, ends_on, self.prices) for sub in subscriptions] if ends_on else subscriptions

    def _create(
        self,
        plan: Plan,
        month: BillingMonth,
        subscription_lines: list[InvoiceLine],
        brought: Money | None,
        late: list[LateDevices],
    ) -> tuple[Invoice, bool, PartnerMonthReads]:
        """Close the month on the plan (so sightings arriving from now on are late usage for the next
        invoice), rate it with the subscriptions' lines of the month, and store the invoice, with the first
        payment attempt already claimed when something is due (one write instead of two). Also says whether
        this worker holds that claim (not if another worker created the invoice first), and what it read."""
        plan = self._close_month(plan, month)
        reads = PartnerMonthReads(self.workspaces.list_workspaces(plan.partner_id))
        workspaces = {w.workspace_id: w for w in reads.workspaces}
        usage = [
            WorkspaceMonthUsage(
                w.workspace_id,
                w.name,
                *w.licence_at_end_of(month),
                sum(1 for device in reads.billable_devices(self.usage, w.workspace_id, month) if not device.late),
            )
            for w in workspaces.values()
            if w.billed_in(month)
        ]
        # Each late month is rated at the edition and cap its workspace had at that month's end (also a workspace
        # no longer on the plan: its devices were seen while it was).
        late_licences = {
            (item.month, item.workspace_id): workspaces[item.workspace_id].licence_at_end_of(item.month)
            for item in late
            if item.workspace_id in workspaces
        }
        invoiced_seats, seats_billed_before = self._invoiced_seats(plan.partner_id, late, month, late_licences)
        late_only = {item.workspace_id for item in late} - {u.workspace_id for u in usage}
        request = MonthToRate(
            plan,
            month,
            usage,
            late=late,
            invoiced_seats=invoiced_seats,
            workspaces={u.workspace_id: u for u in usage}
            | {
                w.workspace_id: WorkspaceMonthUsage(w.workspace_id, w.name, *w.licence_at_end_of(month), 0)
                for w in (workspaces[i] for i in late_only if i in workspaces)
            },
            late_licences=late_licences,
            late_months_billed=seats_billed_before,
            subscription_lines=subscription_lines,
            credit_brought_forward=brought,
        )
        now = self.clock.now()
        invoice = rate_month(request, self.prices.on(month.first_day), now)
        invoice = invoice.with_event("invoice_created", now, ACTOR, total=invoice.total.to_dict(), month_closed=True)
        if invoice.due_for_payment(now.date()):
            invoice = invoice.begin_payment_attempt(now)
            invoice = invoice.with_event("payment_attempt_started", now, ACTOR, attempt=invoice.payment_attempts)
        try:
            saved = self.invoices.save_invoice(invoice)
        except ConcurrentModification:
            existing = self.invoices.load_invoice(plan.partner_id, month)  # another worker created it first
            assert existing is not None
            return existing, False, reads
        return saved, saved.payment_attempt_started_at is not None, reads

    def _close_month(self, plan: Plan, month: BillingMonth) -> Plan:
        for _ in range(3):
            if plan.last_charged_month is not None and plan.last_charged_month >= month:
                return plan
            try:
                return self.plans.close_month(plan, month)
            except ConcurrentModification:
                plan = self.plans.load_plan(plan.partner_id)
        raise ConcurrentModification(f"plan of {plan.partner_id} keeps changing; the run will retry")

    def _invoiced_seats(
        self,
        partner_id: str,
        late: list[LateDevices],
        before: BillingMonth,
        late_licences: dict[tuple[BillingMonth, str], tuple[str, int]],
    ) -> tuple[dict[tuple[BillingMonth, str], tuple[int, int]], frozenset[tuple[BillingMonth, str]]]:
        """Seats and devices already invoiced for each (month, workspace) that has late usage, over the
        month's own invoice and the adjustments of every invoice since. A month whose own invoice is still
        to come (its run died after closing it and is redelivered later) counts with the seats that
        invoice will bill, so the month is never billed beyond its cap. Also which of those months' own
        invoices billed the workspace's seats (so late usage of an earlier life of the plan is billed too)."""
        totals: dict[tuple[BillingMonth, str], tuple[int, int]] = {}
        billed_before: set[tuple[BillingMonth, str]] = set()
        invoices: dict[BillingMonth, Invoice | None] = {}
        for item in late:
            key = (item.month, item.workspace_id)
            seats = devices = 0
            month = item.month
            while month < before:
                if month not in invoices:
                    invoices[month] = self.invoices.load_invoice(partner_id, month)
                invoice = invoices[month]
                if invoice is None and month == item.month and key in late_licences:
                    own = self.usage.count_devices(item.workspace_id, month)
                    seats, devices = seats + min(own, late_licences[key][1]), devices + own
                for line in invoice.lines if invoice else ():
                    if (line.month, line.workspace_id) == key:
                        seats, devices = seats + line.seats, devices + line.devices
                        if month == item.month and line.kind is LineKind.SEATS:
                            billed_before.add(key)
                month = month.next()
            totals[key] = (seats, devices)
        return totals, frozenset(billed_before)

    def _retire_if_ended(self, plan: Plan, month: BillingMonth) -> None:
        """A cancelled plan leaves the monthly runs at the first run for a month after its final month
        (by then every retry of the final invoice is behind it)."""
        final = plan.final_month
        if not plan.has_ended or plan.left_monthly_runs or (final is not None and month <= final):
            return
        last_licence_month = last_bill_month(self._subscriptions_of(plan), self.prices)
        if last_licence_month is not None and last_licence_month > month:
            return  # committed licence terms are still billed after the plan's final month
        if self.usage.late_usage_queued_from(plan.partner_id, month.next()):
            return  # late usage waits for its closing invoice (a late sighting also brings the plan back)
        # If another worker or a new activation changed the plan meanwhile, a later run decides again.
        with contextlib.suppress(ConcurrentModification):
            self.plans.save_plan(
                plan.leave_monthly_runs(),
                audit=AuditEvent(
                    plan.partner_id, "plan_left_monthly_runs", self.clock.now(), ACTOR, {"final_month": str(final)}
                ),
            )

    def _pay(self, plan: Plan, invoice: Invoice, *, lease_held: bool, settling: bool = False) -> Invoice:
        """One payment attempt, exactly once. The attempt is claimed with a lease before the provider is
        called (a second worker backs off while it runs: ``PaymentAttemptInProgress``). An attempt claimed
        earlier that has no outcome (its worker died, or lost the provider's answer) is taken over and its
        payment looked up by its reference first: found, it is recorded; only never made, it is charged."""
        now = self.clock.now()
        resumed = not lease_held and invoice.payment_attempt_started_at is not None
        if not lease_held:
            if resumed:
                claimed = invoice.take_over_payment_attempt(now)
                event = "payment_attempt_resumed"
            elif settling:
                claimed = invoice.begin_settlement_attempt(now)
                event = "settlement_attempt_started"
            else:
                claimed = invoice.begin_payment_attempt(now)
                event = "payment_attempt_started"
            invoice = self.invoices.save_invoice(
                claimed.with_event(event, now, ACTOR, attempt=claimed.payment_attempts)
            )
        try:
            return self._record_outcome(invoice, self._charge(plan, invoice, look_up_first=resumed))
        except Exception:
            # This worker is alive and no longer calling the provider (a timeout, a throttled write): it gives
            # the lease up, so the retry takes the attempt over at once, looking the payment up first. (Best
            # effort: the write may fail too, and the lease then runs out.)
            with contextlib.suppress(Exception):
                self.invoices.save_invoice(invoice.give_up_payment_lease())
            raise

    def _record_outcome(self, invoice: Invoice, outcome: ChargeOutcome) -> Invoice:
        now = self.clock.now()
        if outcome.succeeded:
            assert outcome.provider_payment_id is not None
            paid = invoice.record_payment(outcome.provider_payment_id, now)
            return self.invoices.save_invoice(
                paid.with_event(
                    "invoice_paid",
                    now,
                    ACTOR,
                    payment_id=outcome.provider_payment_id,
                    provider=self.payments.name,
                    idempotency_key=invoice.payment_key(),
                    amount=invoice.total.to_dict(),
                )
            )
        declined = invoice.record_decline(outcome.decline_code or outcome.status.value, now.date())
        saved = self.invoices.save_invoice(
            declined.with_event(
                "payment_declined",
                now,
                ACTOR,
                attempt=invoice.payment_attempts,
                code=declined.failure_code,
                next_retry_on=str(declined.next_retry_on) if declined.next_retry_on else None,
            )
        )
        return saved

    def _mark_plan_past_due(self, partner_id: str, month: BillingMonth) -> None:
        invoice = self.invoices.load_invoice(partner_id, month)
        if invoice is None or invoice.status is not InvoiceStatus.PAST_DUE:
            return  # settled meanwhile (a new card): nothing to mark
        current = self.plans.load_plan(partner_id)  # this run may have changed it (month closed)
        # An active plan becomes past due; a scheduled cancellation keeps its course but remembers it (a
        # reactivation returns to past due); a cancelled plan keeps its state.
        if current.needs_past_due_mark():
            self.plans.save_plan(
                current.mark_past_due(month),
                audit=AuditEvent(partner_id, "plan_past_due", self.clock.now(), ACTOR, {"month": str(month)}),
            )

    def _charge(self, plan: Plan, invoice: Invoice, *, look_up_first: bool) -> ChargeOutcome:
        if plan.payment_customer_ref is None or plan.payment_method_ref is None:
            return ChargeOutcome(ChargeStatus.DECLINED, None, "no_payment_method", "no saved payment method")
        request = ChargeRequest(
            partner_id=plan.partner_id,
            saved=SavedPaymentMethod(plan.payment_customer_ref, plan.payment_method_ref),
            amount=invoice.total,
            idempotency_key=invoice.payment_key(),
            description=f"Monthly seats {invoice.month} for partner {plan.partner_id}",
            off_session=True,
        )
        try:
            found = self.payments.find_payment(request) if look_up_first else None
            return found if found is not None else self.payments.charge(request)
        except PaymentDeclined as declined:
            return ChargeOutcome(ChargeStatus.DECLINED, None, declined.decline_code, declined.message)

    def _report(self, plan: Plan, invoice: Invoice, reads: PartnerMonthReads | None = None) -> Invoice:
        now = self.clock.now()
        if invoice.needs_report:
            report = self._usage_report(plan, invoice, reads)
            self.reports.put(usage_report_key(plan.partner_id, invoice.month), report)
            self.reports.put(reconciliation_key(plan.partner_id, invoice.month), reconciliation_csv(invoice))
            message_id = self._send(plan, billing_report_email(invoice, plan.partner_id))
            reported = replace(invoice, reported_at=now)
            return self.invoices.save_invoice(
                reported.with_event("billing_report_sent", now, ACTOR, to=plan.billing_email, message_id=message_id)
            )
        if invoice.needs_failure_notice:
            message_id = self._send(plan, payment_failed_email(invoice, plan.partner_id))
            notified = replace(invoice, failures_notified=invoice.payment_attempts)
            return self.invoices.save_invoice(
                notified.with_event(
                    "payment_failed_notice_sent", now, ACTOR, attempt=invoice.payment_attempts, message_id=message_id
                )
            )
        return invoice

    def _send(self, plan: Plan, email: RenderedEmail) -> str | None:
        if plan.billing_email is None:
            return None  # the audit event then records that nobody could be told
        return self.mailer.send(plan.billing_email, email)

    def _usage_report(self, plan: Plan, invoice: Invoice, reads: PartnerMonthReads | None) -> str:
        """Every device of every workspace on the plan for the month: billed, over cap or not billable."""
        rows: list[UsageReportRow] = []
        seats_billed = is_billable_month(plan, invoice.month)
        month = invoice.month
        reads = reads or PartnerMonthReads(self.workspaces.list_workspaces(plan.partner_id))
        for workspace in reads.workspaces:
            billable = reads.billable_devices(self.usage, workspace.workspace_id, month)
            seats = count_seats(billable, workspace.max_devices or 0)
            # On the plan all month: no sighting of the month can be not billable (saves a read per workspace).
            not_billable = (
                []
                if workspace.on_plan_throughout(month)
                else self.usage.recorded_devices(workspace.workspace_id, month, billable=False)
            )
            for status, devices in (
                (DeviceStatus.BILLED if seats_billed else DeviceStatus.SEATS_NOT_BILLED, seats.billed),
                (DeviceStatus.OVER_CAP if seats_billed else DeviceStatus.SEATS_NOT_BILLED, seats.over_cap),
                (DeviceStatus.NOT_BILLABLE, not_billable),
            ):
                rows += [
                    UsageReportRow(
                        workspace.workspace_id, workspace.name, workspace.edition, d.device_id, d.first_seen_at, status
                    )
                    for d in devices
                ]
        return usage_report_csv(rows)


@dataclass
class PartnerMonthReads:
    """What one run reads of a partner's month, once: the workspaces, and each workspace's billable
    device-months (late ones flagged), read at most once (strongly consistent) and shared by the rating and
    the usage report, so both see the same devices."""

    workspaces: list[Workspace]
    billable: dict[tuple[str, BillingMonth], list[RecordedDevice]] = field(default_factory=dict)

    def billable_devices(self, usage: UsageStore, workspace_id: str, month: BillingMonth) -> list[RecordedDevice]:
        key = (workspace_id, month)
        if key not in self.billable:
            self.billable[key] = usage.recorded_devices(workspace_id, month, billable=True)
        return self.billable[key]


@dataclass
class MonthlyRunDispatcher:
    """Fans a monthly run out as one queue message per live plan, so no single invocation has to
    charge every partner. Runs on the 1st (the charge) and on the retry days; the worker decides what,
    if anything, is due, so dispatching a partner twice is harmless."""

    partners: ChargeablePartners
    queue: ChargeQueue
    clock: Clock
    page_size: int = 500

    def dispatch_monthly_run(self, month: BillingMonth | None = None) -> tuple[BillingMonth, int]:
        """Queue a charge of ``month`` (default: the month before today, UTC) for every live plan."""
        month = month or previous_month(self.clock.now())
        require_ended(month, self.clock.now())
        dispatched = 0
        page: list[str] = []
        for partner_id in self.partners.chargeable_partners():
            page.append(partner_id)
            if len(page) == self.page_size:
                self.queue.enqueue_charges(page, month)
                dispatched += len(page)
                page = []
        if page:
            self.queue.enqueue_charges(page, month)
            dispatched += len(page)
        return month, dispatched


def require_ended(month: BillingMonth, now: datetime) -> None:
    """Only a month that is over can be charged: closing it earlier would turn its later usage into late usage."""
    if month >= BillingMonth.containing(now):
        raise InvalidRequest.for_field("month", f"{month} has not ended yet; only an ended month can be charged")


def previous_month(now: datetime) -> BillingMonth:
    current = BillingMonth.containing(now)
    return BillingMonth(current.year - 1, 12) if current.month == 1 else BillingMonth(current.year, current.month - 1)


def _carried_forward(invoice: Invoice | None) -> list[InvoiceLine]:
    """The lines of ``invoice`` that carry a credit to the next invoice."""
    return [line for line in invoice.lines if line.kind is LineKind.CREDIT_CARRIED_FORWARD] if invoice else []
