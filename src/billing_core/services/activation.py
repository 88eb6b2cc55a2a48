"""Activating the monthly billing option, and reading the plan's status."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import BaseModel

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import Conflict, PaymentDeclined
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    PaymentRecord,
)
from billing_core.domain.plan import Plan
from billing_core.domain.pricing import Prices
from billing_core.ports import (
    Clock,
    IdempotencyGuard,
    InvoiceStore,
    PaymentProvider,
    PlanStore,
    UsageStore,
    WorkspaceStore,
)
from billing_core.schemas import ActivatePlanRequest, ActivationOutcome, PlanStatusView
from billing_core.services.views import money_view, plan_status_view


class ActivationCommand(BaseModel):
    """Everything one activation request carries. The idempotency layer keys on partner + key and
    validates that a replay carries the same ``request``."""

    partner_id: str
    actor: str
    actor_email: str | None = None
    idempotency_key: str
    request: ActivatePlanRequest


@dataclass
class ActivationService:
    plans: PlanStore
    workspaces: WorkspaceStore
    payments: PaymentProvider
    usage: UsageStore
    clock: Clock
    prices: Prices  # the published price lists; the fee is the one in effect on the day of activation
    idempotency: IdempotencyGuard
    invoices: InvoiceStore

    def activate_monthly_billing(
        self, identity: PartnerIdentity, idempotency_key: str, request: ActivatePlanRequest
    ) -> ActivationOutcome:
        """Activate once per ``Idempotency-Key``: a replay with the same key and body answers the stored
        outcome; the same key with another body is refused by the guard."""
        command = ActivationCommand(
            partner_id=identity.partner_id,
            actor=identity.subject,
            actor_email=identity.email,
            idempotency_key=idempotency_key,
            request=request,
        )
        return self.idempotency.run_once("activate_monthly_billing", self._activate, command, ActivationOutcome)

    def _activate(self, command: ActivationCommand) -> ActivationOutcome:
        """Claim the plan, charge the activation fee once, then activate or record the decline.

        The claim (state ``activating`` with an attempt number) is written before any money moves, so
        two concurrent requests cannot both charge; the provider idempotency key is derived from the
        partner and attempt number, so a retry after a crash reuses it and cannot charge twice.
        """
        now = self.clock.now()
        prices = self.prices.on(now.date())
        currency = prices.require_currency(command.request.currency, field_name="currency")
        fee = prices.activation_fee(currency)
        plan = self.plans.load_plan(command.partner_id)
        self._require_final_invoice_made(plan)
        claimed = self.plans.save_plan(
            plan.begin_activation(now),
            audit=self._audit(command, "activation_started", fee=fee.to_dict()),
        )
        try:
            saved = self.payments.save_payment_method(
                partner_id=command.partner_id, payment_method=command.request.payment_method
            )
            outcome = self.payments.charge(
                ChargeRequest(
                    partner_id=command.partner_id,
                    saved=saved,
                    amount=fee,
                    idempotency_key=claimed.activation_payment_key(),
                    description=f"Monthly billing activation for partner {command.partner_id}",
                    off_session=False,
                    save_for_future_use=True,
                )
            )
        except PaymentDeclined as declined:
            outcome = ChargeOutcome(ChargeStatus.DECLINED, None, declined.decline_code, declined.message)
        except PaymentProviderUnavailable:
            # Outcome unknown: keep the attempt number (and so the provider key) and make the claim
            # resumable at once, so the client's retry reconciles instead of charging anew.
            self.plans.save_plan(
                replace(claimed, activation_started_at=None),
                audit=self._audit(command, "activation_interrupted", attempt=claimed.activation_attempt),
            )
            raise

        if not outcome.succeeded:
            self.plans.save_plan(
                claimed.decline_activation(),
                audit=self._audit(
                    command,
                    "activation_declined",
                    attempt=claimed.activation_attempt,
                    decline_code=outcome.decline_code,
                    status=outcome.status.value,
                ),
            )
            return ActivationOutcome(
                status="declined",
                decline_code=outcome.decline_code or outcome.status.value,
                message=outcome.message or "the payment was not completed",
            )

        assert outcome.provider_payment_id is not None
        payment = PaymentRecord(
            partner_id=command.partner_id,
            purpose="activation",
            attempt=claimed.activation_attempt,
            amount=fee,
            provider=self.payments.name,
            provider_payment_id=outcome.provider_payment_id,
            idempotency_key=claimed.activation_payment_key(),
            created_at=now,
        )
        active = self.plans.save_plan(
            claimed.complete_activation(
                now=now,
                currency=currency,
                price_list_version=prices.version,
                customer_ref=saved.customer_ref,
                payment_method_ref=saved.payment_method_ref,
                billing_email=command.request.billing_email or command.actor_email,
            ),
            audit=self._audit(command, "plan_activated", payment_id=outcome.provider_payment_id),
            payment=payment,
        )
        return ActivationOutcome(
            status="activated",
            # Built without reads: a failure after the payment must not drop the stored outcome.
            # Activation changes no workspace, so none is on the plan yet.
            plan=plan_status_view(active, [], {}, now),
            activation_fee=money_view(fee),
            payment_id=outcome.provider_payment_id,
        )

    def _require_final_invoice_made(self, plan: Plan) -> None:
        final = plan.month_of_final_invoice()
        if final is not None and self.invoices.load_invoice(plan.partner_id, final) is None:
            raise Conflict(
                f"the final invoice of the cancelled plan ({final}) is made by the monthly run on "
                f"{final.next().first_day}; activate again after it",
                code="final_invoice_pending",
            )

    def plan_status(self, identity: PartnerIdentity) -> PlanStatusView:
        return self._status_of(self.plans.load_plan(identity.partner_id), self.clock.now())

    def _status_of(self, plan: Plan, now: datetime) -> PlanStatusView:
        """The plan with its workspaces and this month's seats so far (one COUNT query per workspace)."""
        month = BillingMonth.containing(now)
        on_plan = [w for w in self.workspaces.list_workspaces(plan.partner_id) if w.on_plan]
        devices = {w.workspace_id: self.usage.count_devices(w.workspace_id, month) for w in on_plan}
        return plan_status_view(plan, on_plan, devices, now)

    def _audit(self, command: ActivationCommand, event_type: str, **details: object) -> AuditEvent:
        return AuditEvent(command.partner_id, event_type, self.clock.now(), command.actor, dict(details))
