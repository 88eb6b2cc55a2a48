"""Rating a partner's month into an invoice, and the invoice's payment state machine.

Rounding rule: every seat amount is seats x a per-seat price in integer minor units, so seats are never
rounded or prorated (the activation month is covered by the fee, every later month is billed whole).
Licence subscription lines come rounded from the charge schedule (``subscriptions.py``): each line is
rounded once, half to even, by ``proration.scale``, before summing, so the total always equals the sum
of the printed lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.errors import Conflict, PaymentAttemptInProgress
from billing_core.domain.money import Money
from billing_core.domain.plan import Plan
from billing_core.domain.pricing import PriceList

# A declined charge is retried on these days of the month after the run (the 1st); after the last
# failure the plan is past due.
RETRY_DAYS = (3, 5, 7)
# Dunning ends within a month of an invoice, so an unpaid one is always among a partner's latest invoices:
# this many are read (newest first) wherever unpaid invoices are looked for.
RECENT_INVOICES = 24
# How long a worker holds a claimed payment attempt: longer than the charge worker may run (its Lambda timeout,
# 90 s), so a worker whose lease is over cannot still be calling the provider.
PAYMENT_LEASE = timedelta(minutes=3)


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # rated, not yet paid
    PAID = "paid"
    NOTHING_DUE = "nothing_due"  # zero total: no payment attempt, still reported
    PAYMENT_FAILED = "payment_failed"  # a retry is scheduled
    PAST_DUE = "past_due"  # the last retry failed


@dataclass(frozen=True)
class WorkspaceMonthUsage:
    workspace_id: str
    name: str
    edition: str
    max_devices: int
    devices: int  # distinct billable devices recorded for the month


@dataclass(frozen=True)
class LateDevices:
    """Devices first reported after their month was charged, grouped by month and workspace."""

    month: BillingMonth
    workspace_id: str
    devices: int


class LineKind(StrEnum):
    SEATS = "seats"  # a workspace's seats of the month (usage plan, in arrears)
    SEAT_ADJUSTMENT = "seat_adjustment"  # late usage of an earlier month
    LICENCE_PERIOD = "licence_period"  # a subscription's billing period, in advance
    CHANGE_CREDIT = "change_credit"  # the unused days of a period a change cut short
    CREDIT_BROUGHT_FORWARD = "credit_brought_forward"  # what the previous invoice left as credit
    CREDIT_CARRIED_FORWARD = "credit_carried_forward"  # credits beyond this invoice's charges, for the next


@dataclass(frozen=True)
class CreditedCharge:
    """The period charge a change credit gives back from (what a reconciliation matches the credit to)."""

    seq: int  # its entry in the subscription's charge schedule
    period_start: date
    period_end: date  # exclusive
    amount: Money  # what was charged for that period


@dataclass(frozen=True)
class SubscriptionLineDetail:
    """What a line that is not a workspace's seats is about."""

    subscription_id: str
    order_id: str
    period_start: date
    period_end: date  # exclusive
    quantity: int
    cycle: str  # e.g. "P1Y/annual"
    customer_id: str | None = None
    # For reconciliation: the line's entry in the subscription's charge schedule, the price list and
    # promotion its unit price came from, and for a change credit the period charge it gives back from.
    charge_seq: int | None = None
    price_list_version: str | None = None
    promotion: str | None = None
    credit_for: CreditedCharge | None = None


@dataclass(frozen=True)
class InvoiceLine:
    workspace_id: str  # empty on lines that are not a workspace's seats
    description: str
    edition: str  # the edition, or the SKU of a subscription line
    seats: int
    devices: int
    unit_price: Money
    amount: Money
    month: BillingMonth  # the month the seats were used in (earlier for adjustments)
    adjustment: bool = False
    # Lines that are not seat lines (lines stored before kinds existed are seats / seat adjustments).
    line_kind: LineKind | None = None
    subscription: SubscriptionLineDetail | None = None

    @property
    def kind(self) -> LineKind:
        if self.line_kind is not None:
            return self.line_kind
        return LineKind.SEAT_ADJUSTMENT if self.adjustment else LineKind.SEATS

    @property
    def is_seat_line(self) -> bool:
        return self.kind in (LineKind.SEATS, LineKind.SEAT_ADJUSTMENT)


@dataclass(frozen=True)
class Invoice:
    partner_id: str
    month: BillingMonth
    currency: str
    price_list_version: str
    lines: tuple[InvoiceLine, ...]
    created_at: datetime
    status: InvoiceStatus = InvoiceStatus.DRAFT
    payment_attempts: int = 0
    payment_attempt_started_at: datetime | None = None
    # The worker holding the open attempt may call the provider until then; None once it gave the attempt up.
    payment_lease_until: datetime | None = None
    next_retry_on: date | None = None
    failure_code: str | None = None
    payment_id: str | None = None
    paid_at: datetime | None = None
    reported_at: datetime | None = None
    # Failed payment attempts already e-mailed about (each failure is e-mailed once).
    failures_notified: int = 0
    # The invoice's own audit trail: each state change appends its event in the same single write.
    events: tuple[AuditEvent, ...] = ()
    version: int | None = None

    def with_event(self, event_type: str, at: datetime, actor: str, **details: object) -> Invoice:
        event = AuditEvent(self.partner_id, event_type, require_utc(at), actor, {"month": str(self.month), **details})
        return replace(self, events=(*self.events, event))

    @property
    def total(self) -> Money:
        total = Money.zero(self.currency)
        for line in self.lines:
            total = total + line.amount
        return total

    @property
    def credit_carried_forward(self) -> Money:
        """Credit this invoice could not use (its credits exceeded its charges): the next invoice takes it."""
        total = Money.zero(self.currency)
        for line in self.lines:
            if line.kind is LineKind.CREDIT_CARRIED_FORWARD:
                total = total + line.amount
        return total

    @property
    def settled(self) -> bool:
        return self.status in (InvoiceStatus.PAID, InvoiceStatus.NOTHING_DUE)

    @property
    def needs_report(self) -> bool:
        return self.settled and self.reported_at is None

    @property
    def needs_failure_notice(self) -> bool:
        failed = self.status in (InvoiceStatus.PAYMENT_FAILED, InvoiceStatus.PAST_DUE)
        return failed and self.failures_notified < self.payment_attempts

    def payment_key(self) -> str:
        """Provider idempotency key of the current attempt: partner + month + attempt number. A retry
        after a crash reuses it; a retry after a recorded decline is a new attempt with a new key."""
        return f"month:{self.partner_id}:{self.month}:attempt-{self.payment_attempts}"

    def due_for_payment(self, today: date) -> bool:
        if self.status is InvoiceStatus.DRAFT:
            return self.total.amount_minor > 0
        return (
            self.status is InvoiceStatus.PAYMENT_FAILED
            and self.next_retry_on is not None
            and today >= self.next_retry_on
        )

    def begin_payment_attempt(self, now: datetime) -> Invoice:
        """Claim the next attempt, and its lease, before calling the provider (an open attempt stays as it
        is: ``take_over_payment_attempt`` resumes it)."""
        if self.settled or self.status is InvoiceStatus.PAST_DUE:
            raise Conflict(f"invoice {self.partner_id}/{self.month} is {self.status.value}")
        return self._claim_next_attempt(now)

    def begin_settlement_attempt(self, now: datetime) -> Invoice:
        """Claim an attempt now, outside the retry days: the partner gave a new payment method to settle this
        declined or past-due invoice (an open attempt stays as it is)."""
        if not self.unpaid:
            raise Conflict(f"invoice {self.partner_id}/{self.month} is {self.status.value}: nothing to settle")
        return self._claim_next_attempt(now)

    def _claim_next_attempt(self, now: datetime) -> Invoice:
        if self.payment_attempt_started_at is not None:
            return self
        now = require_utc(now)
        return replace(
            self,
            payment_attempts=self.payment_attempts + 1,
            payment_attempt_started_at=now,
            payment_lease_until=now + PAYMENT_LEASE,
        )

    @property
    def unpaid(self) -> bool:
        """Declined (retries pending) or past due: the partner owes it."""
        return self.status in (InvoiceStatus.PAYMENT_FAILED, InvoiceStatus.PAST_DUE)

    def take_over_payment_attempt(self, now: datetime) -> Invoice:
        """Resume an attempt claimed earlier but without an outcome, with the same number (and key), once its
        lease is over or was given up: its worker died or lost the provider's answer. The provider may have
        been called, so the taker looks the payment up by its reference before charging."""
        now = require_utc(now)
        if self.payment_attempt_started_at is None:
            raise Conflict(f"invoice {self.partner_id}/{self.month} has no open payment attempt")
        if self.payment_lease_until is not None and now < self.payment_lease_until:
            raise PaymentAttemptInProgress(
                f"the payment of {self.partner_id}/{self.month} is being made by another worker until "
                f"{self.payment_lease_until.isoformat()}"
            )
        return replace(self, payment_lease_until=now + PAYMENT_LEASE)

    def give_up_payment_lease(self) -> Invoice:
        """The worker lost the provider's answer (a timeout): the attempt stays open and can be taken over at
        once, by a worker that looks the payment up first."""
        return replace(self, payment_lease_until=None)

    def record_payment(self, payment_id: str, now: datetime) -> Invoice:
        return replace(
            self,
            status=InvoiceStatus.PAID,
            payment_id=payment_id,
            paid_at=require_utc(now),
            payment_attempt_started_at=None,
            payment_lease_until=None,
            next_retry_on=None,
            failure_code=None,
        )

    def record_decline(self, failure_code: str, today: date) -> Invoice:
        """The next retry is the first retry day after today, so an attempt made late (a redelivered
        message) still gets the remaining retries; after the last retry day the invoice is past due."""
        first = self.month.next().first_day
        upcoming = [first + timedelta(days=day - 1) for day in RETRY_DAYS if first + timedelta(days=day - 1) > today]
        if upcoming:
            return replace(
                self,
                status=InvoiceStatus.PAYMENT_FAILED,
                failure_code=failure_code,
                next_retry_on=upcoming[0],
                payment_attempt_started_at=None,
                payment_lease_until=None,
            )
        return replace(
            self,
            status=InvoiceStatus.PAST_DUE,
            failure_code=failure_code,
            next_retry_on=None,
            payment_attempt_started_at=None,
            payment_lease_until=None,
        )


@dataclass(frozen=True)
class InvoiceSummary:
    """An invoice as a listing of many reads it: its state and total, and its lines only where they come with
    the listing's read (``None`` otherwise: a big invoice's lines are read with the invoice, one at a time)."""

    partner_id: str
    month: BillingMonth
    status: InvoiceStatus
    total: Money
    line_count: int
    lines: tuple[InvoiceLine, ...] | None
    price_list_version: str
    created_at: datetime
    payment_attempts: int
    next_retry_on: date | None
    failure_code: str | None
    payment_id: str | None
    paid_at: datetime | None


@dataclass(frozen=True)
class MonthToRate:
    plan: Plan
    month: BillingMonth
    usage: list[WorkspaceMonthUsage]
    late: list[LateDevices] = field(default_factory=list)
    # Seats already invoiced per (month, workspace), so late devices never push a month past its cap.
    invoiced_seats: dict[tuple[BillingMonth, str], tuple[int, int]] = field(default_factory=dict)
    # The workspaces billed this month, by id: late-usage lines name them.
    workspaces: dict[str, WorkspaceMonthUsage] = field(default_factory=dict)
    # Edition and cap per (late month, workspace) as they were at that month's end; a late line without an
    # entry is rated at the workspace's licence of this month.
    late_licences: dict[tuple[BillingMonth, str], tuple[str, int]] = field(default_factory=dict)
    # The (late month, workspace) pairs whose own month's invoice billed the workspace's seats: late usage of an
    # earlier life of the plan is billed like that of this life's billable months.
    late_months_billed: frozenset[tuple[BillingMonth, str]] = frozenset()
    # Licence subscriptions' charges and credits billed in this month (see subscription_invoice_lines).
    subscription_lines: list[InvoiceLine] = field(default_factory=list)
    # The credit the previous invoice carried forward (a positive amount), if any.
    credit_brought_forward: Money | None = None

    @property
    def has_subscription_part(self) -> bool:
        return bool(self.subscription_lines) or (
            self.credit_brought_forward is not None and self.credit_brought_forward.amount_minor > 0
        )


def is_billable_month(plan: Plan, month: BillingMonth) -> bool:
    """The activation month is covered by the fee; every later month the plan was live in is billed,
    up to and including the month its cancellation ends in (never a month after it)."""
    first, final = plan.first_billable_month(), plan.final_month
    return first is not None and month >= first and (final is None or month <= final)


def rate_month(request: MonthToRate, prices: PriceList, now: datetime) -> Invoice:
    """One invoice per partner and month: the seat lines of the usage plan (from the month after the
    activation month), then the licence subscriptions' charges and credits of the month (billed even in
    the activation month: the fee covers seats only), then credit brought forward / carried forward."""
    plan, month = request.plan, request.month
    seats_billed = is_billable_month(plan, month)
    if plan.currency is None or not (seats_billed or request.has_subscription_part or request.late):
        raise Conflict(f"{month} is not a billable month for partner {plan.partner_id}")
    currency = plan.currency
    lines: list[InvoiceLine] = _seat_lines(request, prices, currency) if seats_billed else []
    lines += _late_usage_lines(request, prices, currency)
    lines += request.subscription_lines
    brought = request.credit_brought_forward
    if brought is not None and brought.amount_minor > 0:
        lines.append(_credit_line(LineKind.CREDIT_BROUGHT_FORWARD, "Credit from the previous invoice", -brought, month))
    total = sum(line.amount.amount_minor for line in lines)
    if total < 0:
        carried = Money(-total, currency)
        lines.append(
            _credit_line(LineKind.CREDIT_CARRIED_FORWARD, "Credit carried to the next invoice", carried, month)
        )
    invoice = Invoice(
        partner_id=plan.partner_id,
        month=month,
        currency=currency,
        price_list_version=prices.version,
        lines=tuple(lines),
        created_at=require_utc(now),
    )
    return invoice if invoice.total.amount_minor > 0 else replace(invoice, status=InvoiceStatus.NOTHING_DUE)


def _credit_line(kind: LineKind, description: str, amount: Money, month: BillingMonth) -> InvoiceLine:
    zero = Money.zero(amount.currency)
    return InvoiceLine("", description, "", 0, 0, zero, amount, month, line_kind=kind)


def _seat_lines(request: MonthToRate, prices: PriceList, currency: str) -> list[InvoiceLine]:
    month = request.month
    lines: list[InvoiceLine] = []
    for usage in sorted(request.usage, key=lambda u: (u.name, u.workspace_id)):
        seats = min(usage.devices, usage.max_devices)
        unit = prices.seat_price(usage.edition, currency)
        lines.append(
            InvoiceLine(
                usage.workspace_id, usage.name, usage.edition, seats, usage.devices, unit, unit.times(seats), month
            )
        )
    return lines


def _late_usage_lines(request: MonthToRate, prices: PriceList, currency: str) -> list[InvoiceLine]:
    """Adjustment lines for late usage queued for this invoice: also on an invoice of a month that bills no
    seats (after a cancelled plan's final month: its closing invoice)."""
    lines: list[InvoiceLine] = []
    for late in sorted(request.late, key=lambda item: (item.month, item.workspace_id)):
        workspace = request.workspaces.get(late.workspace_id)
        key = (late.month, late.workspace_id)
        if workspace is None or not (is_billable_month(request.plan, late.month) or key in request.late_months_billed):
            continue  # the activation month is covered by the fee, however late its devices report
        edition, cap = request.late_licences.get(key, (workspace.edition, workspace.max_devices))
        invoiced_seats, invoiced_devices = request.invoiced_seats.get(key, (0, 0))
        seats = max(min(invoiced_devices + late.devices, cap) - invoiced_seats, 0)
        unit = prices.seat_price(edition, currency)
        lines.append(
            InvoiceLine(
                late.workspace_id,
                f"{workspace.name}: late usage for {late.month}",
                edition,
                seats,
                late.devices,
                unit,
                unit.times(seats),
                late.month,
                adjustment=True,
            )
        )
    return lines
