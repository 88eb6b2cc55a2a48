"""In-memory fakes of the ports, for service tests without sockets. They enforce the same contracts
as the adapters (optimistic locking, write-once payments, idempotency replay), so a service bug that
relies on a missing guard fails here too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from billing_core.adapters.payments.sandbox import SandboxPaymentProvider
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import ConcurrentModification, IdempotencyKeyReused, TransientFailure
from billing_core.domain.invoicing import Invoice, InvoiceSummary, LateDevices
from billing_core.domain.metering import Billability, ChargedMonthCheck, DeviceMonthKey, RecordedDevice, Sighting
from billing_core.domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    PaymentRecord,
    SavedPaymentMethod,
)
from billing_core.domain.plan import Plan
from billing_core.domain.reporting import RenderedEmail
from billing_core.domain.subscriptions import Charge, Order, Subscription
from billing_core.domain.workspace import Workspace

CommandT = TypeVar("CommandT", bound=BaseModel)
OutcomeT = TypeVar("OutcomeT", bound=BaseModel)


@dataclass
class FixedClock:
    current: datetime

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@dataclass
class InMemoryBillingStore:
    plans: dict[str, Plan] = field(default_factory=dict)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    payments: dict[tuple[str, str, int], PaymentRecord] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)

    def load_plan(self, partner_id: str) -> Plan:
        return self.plans.get(partner_id, Plan(partner_id=partner_id))

    def save_plan(self, plan: Plan, *, audit: AuditEvent, payment: PaymentRecord | None = None) -> Plan:
        stored = self.plans.get(plan.partner_id)
        if (stored.version if stored else None) != plan.version:
            raise ConcurrentModification("plan changed")
        if payment is not None:
            key = (payment.partner_id, payment.purpose, payment.attempt)
            if key in self.payments:
                raise ConcurrentModification("payment already recorded")
            self.payments[key] = payment
        saved = replace(plan, version=(plan.version or 0) + 1)
        self.plans[plan.partner_id] = saved
        self.audit.append(audit)
        return saved

    def close_month(self, plan: Plan, month: BillingMonth) -> Plan:
        stored = self.plans.get(plan.partner_id)
        if (stored.version if stored else None) != plan.version:
            raise ConcurrentModification("plan changed")
        saved = replace(plan, last_charged_month=month, version=(plan.version or 0) + 1)
        self.plans[plan.partner_id] = saved
        return saved

    def load_workspace(self, workspace_id: str) -> Workspace | None:
        return self.workspaces.get(workspace_id)

    def list_workspaces(self, partner_id: str) -> list[Workspace]:
        return [w for w in self.workspaces.values() if w.partner_id == partner_id]

    def save_workspace(
        self, workspace: Workspace, *, audit: AuditEvent, while_plan_is: Plan | None = None
    ) -> Workspace:
        stored = self.workspaces.get(workspace.workspace_id)
        if (stored.version if stored else None) != workspace.version:
            raise ConcurrentModification("workspace changed")
        plan = self.plans.get(workspace.partner_id)
        if while_plan_is is not None and (plan.version if plan else None) != while_plan_is.version:
            raise ConcurrentModification("plan changed")
        saved = replace(workspace, version=(workspace.version or 0) + 1)
        self.workspaces[workspace.workspace_id] = saved
        self.audit.append(audit)
        return saved


@dataclass
class InMemoryIdempotencyGuard:
    records: dict[tuple[str, str, str], tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    def run_once(
        self,
        operation: str,
        function: Callable[[CommandT], OutcomeT],
        command: CommandT,
        outcome_type: type[OutcomeT],
    ) -> OutcomeT:
        data = command.model_dump(mode="json")
        key = (operation, data["partner_id"], data["idempotency_key"])
        if key in self.records:
            request, outcome = self.records[key]
            if request != data["request"]:
                raise IdempotencyKeyReused()
            return outcome_type.model_validate(outcome)
        result = function(command)  # an exception stores nothing, as in Powertools
        self.records[key] = (data["request"], result.model_dump(mode="json"))
        return result


@dataclass
class RecordingPaymentProvider:
    """The sandbox provider behind a ledger of every charge it made. Like localstripe (and like Stripe once its
    24-hour key window is over) it replays no idempotency key: each call is a new charge, so
    ``successful_charges`` counts money moved, not distinct keys. ``find_payment`` looks a payment up by its
    reference, as the real provider does. A switch simulates an outage after the provider charged."""

    inner: SandboxPaymentProvider = field(default_factory=SandboxPaymentProvider)
    charges: dict[str, ChargeOutcome] = field(default_factory=dict)  # the latest charge per reference
    ledger: list[tuple[str, ChargeOutcome]] = field(default_factory=list)  # every charge made
    calls: int = 0
    fail_after_accepting: int = 0
    lookups_unavailable: int = 0  # find_payment calls that time out
    name: str = "sandbox"
    lookups: int = 0  # payment_status calls (payments awaiting authentication)
    found: int = 0  # find_payment calls
    cancelled: list[str] = field(default_factory=list)

    def create_customer(self, *, partner_id: str) -> str:
        return self.inner.create_customer(partner_id=partner_id)

    def save_payment_method(
        self, *, partner_id: str, payment_method: str, customer_ref: str | None = None
    ) -> SavedPaymentMethod:
        return self.inner.save_payment_method(
            partner_id=partner_id, payment_method=payment_method, customer_ref=customer_ref
        )

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.calls += 1
        outcome = self.inner.charge(request)
        self.charges[request.idempotency_key] = outcome
        self.ledger.append((request.idempotency_key, outcome))
        if self.fail_after_accepting > 0:
            self.fail_after_accepting -= 1
            raise PaymentProviderUnavailable("timeout after the provider accepted the charge")
        return outcome

    def find_payment(self, request: ChargeRequest) -> ChargeOutcome | None:
        self.found += 1
        if self.lookups_unavailable > 0:
            self.lookups_unavailable -= 1
            raise PaymentProviderUnavailable("timeout while looking the payment up")
        return self.charges.get(request.idempotency_key)

    def payment_status(self, payment_id: str) -> ChargeOutcome:
        self.lookups += 1
        return self.inner.payment_status(payment_id)

    def cancel_payment(self, payment_id: str) -> ChargeOutcome:
        outcome = self.inner.cancel_payment(payment_id)
        if not outcome.succeeded:
            self.cancelled.append(payment_id)
        return outcome

    @property
    def successful_charges(self) -> int:
        """Charges that moved money: paid at once, or once their customer authenticated them."""
        return sum(1 for _, outcome in self.ledger if self._paid(outcome))

    def _paid(self, outcome: ChargeOutcome) -> bool:
        if outcome.succeeded:
            return True
        if outcome.status is not ChargeStatus.REQUIRES_ACTION or outcome.provider_payment_id is None:
            return False
        payment_id = outcome.provider_payment_id
        return payment_id not in self.cancelled and self.inner.payment_status(payment_id).succeeded


@dataclass
class InMemoryUsageStore:
    """UsageStore in memory, with the adapter's write-once semantics and a switch to fail writes of
    chosen devices as throttled."""

    devices: dict[tuple[DeviceMonthKey, bool], tuple[Sighting, Billability, str | None]] = field(default_factory=dict)
    late: list[tuple[str, DeviceMonthKey, BillingMonth | None]] = field(default_factory=list)
    rejections: dict[str, str] = field(default_factory=dict)
    throttled_devices: set[str] = field(default_factory=set)
    writes: int = 0
    reads: int = 0

    def find_recorded(self, keys: list[DeviceMonthKey], billability: Billability) -> set[DeviceMonthKey]:
        self.reads += len(keys)
        return {key for key in keys if (key, billability.billable) in self.devices}

    def record_first_sighting(
        self,
        sighting: Sighting,
        billability: Billability,
        partner_id: str | None,
        recorded_at: datetime,
        late_bill_in: BillingMonth | None = None,
        charged_check: ChargedMonthCheck | None = None,
    ) -> bool:
        """``charged_check`` is not enforced here (no plans in this fake); the DynamoDB adapter's
        enforcement is tested against DynamoDB Local."""
        if sighting.device_id in self.throttled_devices:
            raise TransientFailure("ProvisionedThroughputExceededException")
        self.writes += 1
        slot = (sighting.key, billability.billable)
        if slot in self.devices:
            return False
        self.devices[slot] = (sighting, billability, partner_id)
        if billability is Billability.LATE and partner_id is not None:
            self.late.append((partner_id, sighting.key, late_bill_in))
        return True

    def record_rejection(self, message_id: str, reason: str, body: str, received_at: datetime) -> None:
        self.rejections[message_id] = reason

    def late_devices(self, partner_id: str, bill_in: BillingMonth) -> list[LateDevices]:
        counts: dict[tuple[BillingMonth, str], int] = {}
        for partner, key, month in self.late:
            if partner == partner_id and month == bill_in:
                counts[(key.month, key.workspace_id)] = counts.get((key.month, key.workspace_id), 0) + 1
        return [LateDevices(month, workspace_id, n) for (month, workspace_id), n in sorted(counts.items())]

    def late_usage_queued_from(self, partner_id: str, bill_in: BillingMonth) -> bool:
        return any(partner == partner_id and month >= bill_in for partner, _, month in self.late if month)

    def count_devices(self, workspace_id: str, month: BillingMonth) -> int:
        return sum(
            1
            for (key, billable), (_, billability, _) in self.devices.items()
            if billable
            and billability is not Billability.LATE
            and key.workspace_id == workspace_id
            and key.month == month
        )

    def recorded_devices(self, workspace_id: str, month: BillingMonth, *, billable: bool) -> list[RecordedDevice]:
        return [
            RecordedDevice(key.device_id, entry[0].observed_at, late=entry[1] is Billability.LATE)
            for (key, is_billable), entry in self.devices.items()
            if is_billable == billable and key.workspace_id == workspace_id and key.month == month
        ]

    def seats(self, workspace_id: str, month: BillingMonth) -> set[str]:
        return {
            key.device_id
            for (key, billable) in self.devices
            if billable and key.workspace_id == workspace_id and key.month == month
        }


@dataclass
class InMemoryWorkspaceDirectory:
    store: InMemoryBillingStore
    lookups: int = 0

    def workspaces(self, workspace_ids: set[str]) -> dict[str, Workspace | None]:
        self.lookups += 1
        return {i: self.store.workspaces.get(i) for i in workspace_ids}

    def charged_months(self, partner_ids: set[str]) -> dict[str, ChargedMonthCheck]:
        plans = {p: self.store.load_plan(p) for p in partner_ids}
        return {p: ChargedMonthCheck(p, plan.last_charged_month, plan.has_ended) for p, plan in plans.items()}


@dataclass
class InMemoryInvoiceStore:
    invoices: dict[tuple[str, str], Invoice] = field(default_factory=dict)
    writes: int = 0
    inline_lines_max: int = 500  # about as many lines as the DynamoDB store keeps inline

    def load_invoice(self, partner_id: str, month: BillingMonth) -> Invoice | None:
        return self.invoices.get((partner_id, str(month)))

    def save_invoice(self, invoice: Invoice) -> Invoice:
        key = (invoice.partner_id, str(invoice.month))
        stored = self.invoices.get(key)
        if (stored.version if stored else None) != invoice.version:
            raise ConcurrentModification("invoice changed")
        saved = replace(invoice, version=(invoice.version or 0) + 1)
        self.invoices[key] = saved
        self.writes += 1
        return saved

    def list_invoices(self, partner_id: str, *, limit: int, after: str | None) -> tuple[list[Invoice], str | None]:
        mine = sorted(
            (i for (p, _), i in self.invoices.items() if p == partner_id), key=lambda i: i.month, reverse=True
        )
        if after:
            mine = [i for i in mine if str(i.month) < after]
        page = mine[:limit]
        return page, (str(page[-1].month) if len(mine) > limit else None)

    def list_invoice_summaries(
        self, partner_id: str, *, limit: int, after: str | None
    ) -> tuple[list[InvoiceSummary], str | None]:
        """As the DynamoDB store lists them: lines of invoices of more than ``inline_lines_max`` lines are not read."""
        page, cursor = self.list_invoices(partner_id, limit=limit, after=after)
        return [
            InvoiceSummary(
                partner_id=i.partner_id,
                month=i.month,
                status=i.status,
                total=i.total,
                line_count=len(i.lines),
                lines=i.lines if len(i.lines) <= self.inline_lines_max else None,
                price_list_version=i.price_list_version,
                created_at=i.created_at,
                payment_attempts=i.payment_attempts,
                next_retry_on=i.next_retry_on,
                failure_code=i.failure_code,
                payment_id=i.payment_id,
                paid_at=i.paid_at,
            )
            for i in page
        ], cursor

    def paid(self) -> list[Invoice]:
        return [invoice for invoice in self.invoices.values() if invoice.payment_id is not None]


@dataclass
class RecordingMailer:
    sent: list[tuple[str, RenderedEmail]] = field(default_factory=list)

    def send(self, to: str, email: RenderedEmail) -> str:
        self.sent.append((to, email))
        return f"msg-{len(self.sent)}"

    def subjects(self) -> list[str]:
        return [email.subject for _, email in self.sent]


@dataclass
class InMemoryUsageReports:
    reports: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, csv_text: str) -> None:
        self.reports[key] = csv_text

    def exists(self, key: str) -> bool:
        return key in self.reports

    def download_url(self, key: str) -> str:
        return f"https://reports.example/{key}?X-Amz-Expires=900"


class WorkerCrash(BaseException):
    """Stands for a Lambda dying mid-way (timeout, out of memory, lost container): a BaseException, so no
    ``except Exception`` of the code under test runs, as none would in a process that died."""


class CrashingProvider(RecordingPaymentProvider):
    """Accepts the charge at the provider, then the worker dies before recording it (once)."""

    crash_after_charge: bool = True

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        outcome = super().charge(request)
        if self.crash_after_charge:
            self.crash_after_charge = False
            raise WorkerCrash("died after the provider accepted the payment")
        return outcome


@dataclass
class InMemoryPlanEndSchedules:
    """The scheduler: schedules by (partner, date); ``fail`` makes the next calls raise TransientFailure."""

    schedules: set[tuple[str, date]] = field(default_factory=set)
    fail: bool = False

    def schedule_plan_end(self, partner_id: str, ends_on: date) -> str:
        if self.fail:
            raise TransientFailure("scheduler unavailable")
        self.schedules.add((partner_id, ends_on))
        return f"plan-end-{partner_id}-{ends_on.isoformat()}"

    def delete_plan_end(self, partner_id: str, ends_on: date) -> None:
        if self.fail:
            raise TransientFailure("scheduler unavailable")
        self.schedules.discard((partner_id, ends_on))


@dataclass
class InMemorySubscriptionStore:
    """Orders and subscriptions with the adapter's guards: new items only if absent, stored ones only if
    unchanged since loaded, settled charges written once."""

    orders: dict[tuple[str, str], Order] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    history: dict[tuple[str, str], list[Charge]] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)

    def save_order(
        self,
        order: Order,
        subscriptions: Sequence[Subscription],
        *,
        audit: AuditEvent,
        settled: Sequence[tuple[str, Sequence[Charge]]] = (),
    ) -> tuple[Order, list[Subscription]]:
        partner = order.owner.partner_id
        stored = self.orders.get((partner, order.order_id))
        if (stored.version if stored else None) != order.version:
            raise ConcurrentModification(f"order {order.order_id} changed")
        for sub in subscriptions:
            current = self.subscriptions.get((partner, sub.subscription_id))
            if (current.version if current else None) != sub.version:
                raise ConcurrentModification(f"subscription {sub.subscription_id} changed")
        saved_order = replace(order, version=(order.version or 0) + 1)
        saved = [replace(sub, version=(sub.version or 0) + 1) for sub in subscriptions]
        self.orders[(partner, order.order_id)] = saved_order
        for sub in saved:
            self.subscriptions[(partner, sub.subscription_id)] = sub
        for subscription_id, charges in settled:
            self.history.setdefault((partner, subscription_id), []).extend(charges)
        self.audit.append(audit)
        return saved_order, saved

    def load_order(self, partner_id: str, order_id: str) -> tuple[Order, list[Subscription]] | None:
        order = self.orders.get((partner_id, order_id))
        if order is None:
            return None
        return order, [self.subscriptions[(partner_id, sub_id)] for sub_id in order.subscription_ids]

    def list_subscriptions(self, partner_id: str) -> list[Subscription]:
        return [sub for (partner, _), sub in self.subscriptions.items() if partner == partner_id]

    def list_orders(self, partner_id: str) -> list[Order]:
        return [order for (partner, _), order in self.orders.items() if partner == partner_id]
