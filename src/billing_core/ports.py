"""The small interfaces services depend on. Adapters implement them for DynamoDB/Stripe; tests use fakes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

# The domain types appear in signatures only: importing them here would make every user of a port (each
# function, at cold start) import every domain module, the subscriptions and invoicing ones included.
if TYPE_CHECKING:
    from billing_core.domain.audit import AuditEvent
    from billing_core.domain.calendar import BillingMonth
    from billing_core.domain.invoicing import Invoice, InvoiceSummary, LateDevices
    from billing_core.domain.metering import Billability, ChargedMonthCheck, DeviceMonthKey, RecordedDevice, Sighting
    from billing_core.domain.payments import ChargeOutcome, ChargeRequest, PaymentRecord, SavedPaymentMethod
    from billing_core.domain.plan import Plan
    from billing_core.domain.reporting import RenderedEmail
    from billing_core.domain.subscriptions import Charge, Order, Subscription
    from billing_core.domain.workspace import Workspace

CommandT = TypeVar("CommandT", bound=BaseModel)
OutcomeT = TypeVar("OutcomeT", bound=BaseModel)


class Clock(Protocol):
    def now(self) -> datetime: ...


class PlanStore(Protocol):
    def load_plan(self, partner_id: str) -> Plan:
        """The partner's plan; an unstored ``Plan(partner_id)`` if none exists."""
        ...

    def save_plan(self, plan: Plan, *, audit: AuditEvent, payment: PaymentRecord | None = None) -> Plan:
        """Atomically write the plan (only if unchanged since loaded), its audit event and payment.

        Raises ``ConcurrentModification`` when the plan changed in between."""
        ...

    def close_month(self, plan: Plan, month: BillingMonth) -> Plan:
        """Record ``month`` as charged (a single versioned update; its audit event is the invoice's
        ``invoice_created``). Raises ``ConcurrentModification`` when the plan changed in between."""
        ...


class WorkspaceStore(Protocol):
    def load_workspace(self, workspace_id: str) -> Workspace | None: ...

    def list_workspaces(self, partner_id: str) -> list[Workspace]: ...

    def save_workspace(
        self, workspace: Workspace, *, audit: AuditEvent, while_plan_is: Plan | None = None
    ) -> Workspace:
        """Atomically write the workspace (only if unchanged since loaded) and its audit event; with
        ``while_plan_is``, only while the partner's plan is still that version (else ``ConcurrentModification``)."""
        ...


class SubscriptionStore(Protocol):
    def save_order(
        self,
        order: Order,
        subscriptions: Sequence[Subscription],
        *,
        audit: AuditEvent,
        settled: Sequence[tuple[str, Sequence[Charge]]] = (),
    ) -> tuple[Order, list[Subscription]]:
        """Atomically write the order, its subscriptions (new ones only if absent, stored ones only if
        unchanged since loaded: else ``ConcurrentModification``), the audit event and the settled charges
        moved to the history."""
        ...

    def load_order(self, partner_id: str, order_id: str) -> tuple[Order, list[Subscription]] | None:
        """The order and its subscriptions, strongly consistent; None if the partner has no such order."""
        ...

    def list_subscriptions(self, partner_id: str) -> list[Subscription]: ...

    def list_orders(self, partner_id: str) -> list[Order]: ...


class PaymentProvider(Protocol):
    name: str

    def create_customer(self, *, partner_id: str) -> str:
        """A new customer for the partner at the provider (moves no money); the caller stores its reference
        before any charge and reuses it for every later attempt and plan life. Raises
        ``PaymentProviderUnavailable``."""
        ...

    def save_payment_method(
        self, *, partner_id: str, payment_method: str, customer_ref: str | None = None
    ) -> SavedPaymentMethod:
        """Attach a payment method to the partner's customer (``customer_ref``; without it, a new customer) for
        later off-session use.

        Raises ``PaymentDeclined`` when the method is refused, ``PaymentProviderUnavailable`` when the
        provider cannot answer."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge ``request``, with ``request.idempotency_key`` as the provider's key and as the payment's own
        reference (stored with it). The key alone is no guarantee (Stripe keeps keys 24 hours): a caller
        that may have charged before calls ``find_payment`` first. Raises ``PaymentProviderUnavailable``."""
        ...

    def find_payment(self, request: ChargeRequest) -> ChargeOutcome | None:
        """The payment made earlier for ``request`` (by its reference, ``request.idempotency_key``, among the
        customer's payments), or None if the provider has none. Moves no money. Raises
        ``PaymentProviderUnavailable``."""
        ...


@runtime_checkable
class PaymentAuthentication(Protocol):
    """A provider whose payments may wait for the customer to authenticate them (3-D Secure: the charge answers
    ``REQUIRES_ACTION`` with a ``client_secret``). Both payment providers implement it; a provider without it
    has such a payment declined (``authentication_required``)."""

    def payment_status(self, payment_id: str) -> ChargeOutcome:
        """Where a payment that asked for authentication stands now: ``SUCCEEDED`` (authenticated and paid),
        ``REQUIRES_ACTION`` (still waiting, with its ``client_secret``) or ``DECLINED`` (authentication failed,
        or the payment was cancelled). Moves no money. Raises ``PaymentProviderUnavailable``."""
        ...

    def cancel_payment(self, payment_id: str) -> ChargeOutcome:
        """Cancel a payment still waiting for authentication, so it can never be paid; answers its final state:
        ``DECLINED``, or ``SUCCEEDED`` if the customer authenticated it before the cancellation took effect.
        Raises ``PaymentProviderUnavailable``."""
        ...


class IdempotencyGuard(Protocol):
    def run_once(
        self,
        operation: str,
        function: Callable[[CommandT], OutcomeT],
        command: CommandT,
        outcome_type: type[OutcomeT],
    ) -> OutcomeT:
        """Run ``function(command)`` at most once per (partner_id, idempotency_key) of the command and
        replay its stored outcome afterwards. Raises ``IdempotencyKeyReused`` when the key comes back
        with a different ``request``, ``RequestInProgress`` while the first run is still going."""
        ...


class UsageStore(Protocol):
    """Device-month usage records. Implementations raise ``TransientFailure`` for retryable errors."""

    def find_recorded(self, keys: list[DeviceMonthKey], billability: Billability) -> set[DeviceMonthKey]:
        """Which of ``keys`` are already recorded (in the partition ``billability`` belongs to)."""
        ...

    def record_first_sighting(
        self,
        sighting: Sighting,
        billability: Billability,
        partner_id: str | None,
        recorded_at: datetime,
        late_bill_in: BillingMonth | None = None,
        charged_check: ChargedMonthCheck | None = None,
    ) -> bool:
        """Record the device-month once (a conditional write). False if it was already recorded. Late
        usage is also queued for the invoice of ``late_bill_in``, in the same write. With
        ``charged_check``, only while the plan's last charged month is still the one read (else
        ``TransientFailure``); late usage of an ended plan also brings the plan back into the monthly runs."""
        ...

    def late_devices(self, partner_id: str, bill_in: BillingMonth) -> list[LateDevices]:
        """Late usage queued for the invoice of ``bill_in``, counted per month and workspace."""
        ...

    def late_usage_queued_from(self, partner_id: str, bill_in: BillingMonth) -> bool:
        """Whether late usage is queued for the invoice of ``bill_in`` or a later month (read consistently)."""
        ...

    def record_rejection(self, message_id: str, reason: str, body: str, received_at: datetime) -> None: ...

    def count_devices(self, workspace_id: str, month: BillingMonth) -> int:
        """Distinct devices recorded as billable (or late) for the workspace and month."""
        ...

    def recorded_devices(self, workspace_id: str, month: BillingMonth, *, billable: bool) -> list[RecordedDevice]:
        """The device-months of one workspace and month, billable (late ones flagged) or not billable ones."""
        ...


class WorkspaceDirectory(Protocol):
    """Read-only view of workspaces and plans that metering needs, looked up in bulk."""

    def workspaces(self, workspace_ids: set[str]) -> Mapping[str, Workspace | None]: ...

    def charged_months(self, partner_ids: set[str]) -> Mapping[str, ChargedMonthCheck]:
        """Per partner: the plan's last charged month and whether the plan has ended (read consistently)."""
        ...


class InvoiceStore(Protocol):
    def load_invoice(self, partner_id: str, month: BillingMonth) -> Invoice | None: ...

    def save_invoice(self, invoice: Invoice) -> Invoice:
        """Write the invoice with its audit trail in one conditional write (an invoice's creation is atomic,
        whatever its size): created once per partner and month, then only if unchanged since loaded (else
        ``ConcurrentModification``). An invoice's lines are fixed at its creation: later writes keep them."""
        ...

    def list_invoices(self, partner_id: str, *, limit: int, after: str | None) -> tuple[list[Invoice], str | None]:
        """Newest first, each with all its lines; ``after`` is the cursor returned by the previous page."""
        ...


class InvoiceHistory(Protocol):
    """What the billing history reads: single invoices with their lines, and listings that stay small whatever
    the invoices' sizes."""

    def load_invoice(self, partner_id: str, month: BillingMonth) -> Invoice | None: ...

    def list_invoice_summaries(
        self, partner_id: str, *, limit: int, after: str | None
    ) -> tuple[list[InvoiceSummary], str | None]:
        """Newest first, the same pages and cursors as ``InvoiceStore.list_invoices``, in one read: lines only
        where they come with it."""
        ...


class Mailer(Protocol):
    def send(self, to: str, email: RenderedEmail) -> str:
        """Send one e-mail; returns the provider's message id. Raises ``TransientFailure`` to retry."""
        ...


class UsageReports(Protocol):
    """Per-device usage reports (CSV), stored per partner and month."""

    def put(self, key: str, csv_text: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def download_url(self, key: str) -> str:
        """A time-limited (at most 15 minutes) link to download the report."""
        ...


class ChargeablePartners(Protocol):
    def chargeable_partners(self) -> Iterator[str]:
        """Every partner whose plan a monthly run must visit, paged lazily."""
        ...


class ChargeQueue(Protocol):
    def enqueue_charges(self, partner_ids: list[str], month: BillingMonth) -> None:
        """One message per partner (charge that partner for that month). Raises ``TransientFailure``."""
        ...


class PlanEndSchedules(Protocol):
    """One-time schedules that end a plan at the end of its cancellation date (EventBridge Scheduler)."""

    def schedule_plan_end(self, partner_id: str, ends_on: date) -> str:
        """Create the schedule (idempotent: the name derives from partner and date); returns its name.
        Raises ``TransientFailure`` when the scheduler cannot be reached."""
        ...

    def delete_plan_end(self, partner_id: str, ends_on: date) -> None:
        """Delete the schedule if it exists. Raises ``TransientFailure`` when the scheduler cannot be reached."""
        ...
