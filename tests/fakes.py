"""In-memory fakes of the ports, for service tests without sockets. They enforce the same contracts
as the adapters (optimistic locking, write-once payments, idempotency replay), so a service bug that
relies on a missing guard fails here too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from billing_core.adapters.payments.sandbox import SandboxPaymentProvider
from billing_core.domain.audit import AuditEvent
from billing_core.domain.errors import ConcurrentModification, IdempotencyKeyReused
from billing_core.domain.payments import ChargeOutcome, ChargeRequest, PaymentProviderUnavailable, PaymentRecord
from billing_core.domain.plan import Plan
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

    def load_workspace(self, workspace_id: str) -> Workspace | None:
        return self.workspaces.get(workspace_id)

    def list_workspaces(self, partner_id: str) -> list[Workspace]:
        return [w for w in self.workspaces.values() if w.partner_id == partner_id]

    def save_workspace(self, workspace: Workspace, *, audit: AuditEvent) -> Workspace:
        stored = self.workspaces.get(workspace.workspace_id)
        if (stored.version if stored else None) != workspace.version:
            raise ConcurrentModification("workspace changed")
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
    """The sandbox provider plus a ledger of distinct charges (by idempotency key) and a switch to
    simulate an outage after the provider has accepted a charge."""

    inner: SandboxPaymentProvider = field(default_factory=SandboxPaymentProvider)
    charges: dict[str, ChargeOutcome] = field(default_factory=dict)
    calls: int = 0
    fail_after_accepting: int = 0
    name: str = "sandbox"

    def save_payment_method(self, *, partner_id: str, payment_method: str) -> Any:
        return self.inner.save_payment_method(partner_id=partner_id, payment_method=payment_method)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.calls += 1
        outcome = self.inner.charge(request)
        self.charges[request.idempotency_key] = outcome
        if self.fail_after_accepting > 0:
            self.fail_after_accepting -= 1
            raise PaymentProviderUnavailable("timeout after the provider accepted the charge")
        return outcome

    @property
    def successful_charges(self) -> int:
        return sum(1 for outcome in self.charges.values() if outcome.succeeded)
