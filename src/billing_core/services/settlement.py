"""Dunning's way out: the partner gives a new payment method, and every unpaid invoice is charged with it now."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import BaseModel

from billing_core.domain.audit import AuditEvent
from billing_core.domain.errors import Conflict
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.invoicing import RECENT_INVOICES, Invoice
from billing_core.domain.plan import PlanState
from billing_core.ports import Clock, IdempotencyGuard, InvoiceStore, PaymentProvider, PlanStore
from billing_core.schemas import PaymentMethodUpdate, SettledInvoiceView, UpdatePaymentMethodRequest
from billing_core.services.monthly_charge import MonthlyChargeService
from billing_core.services.views import money_view


class PaymentMethodCommand(BaseModel):
    """One request; the idempotency layer keys on partner + key and checks a replay carries the same ``request``."""

    partner_id: str
    actor: str
    idempotency_key: str
    request: UpdatePaymentMethodRequest


@dataclass
class SettlementService:
    plans: PlanStore
    invoices: InvoiceStore
    payments: PaymentProvider
    charge: MonthlyChargeService
    clock: Clock
    idempotency: IdempotencyGuard

    def update_payment_method(
        self, identity: PartnerIdentity, idempotency_key: str, request: UpdatePaymentMethodRequest
    ) -> PaymentMethodUpdate:
        """Save the new payment method for every later charge and settle each unpaid invoice with it now,
        once per ``Idempotency-Key`` (a replay answers the stored outcome). Each charge runs under the invoice's
        payment-attempt claim, so a repeated request never pays an invoice twice."""
        identity.require_billing_rights()
        command = PaymentMethodCommand(
            partner_id=identity.partner_id, actor=identity.subject, idempotency_key=idempotency_key, request=request
        )
        return self.idempotency.run_once("update_payment_method", self._update, command, PaymentMethodUpdate)

    def _update(self, command: PaymentMethodCommand) -> PaymentMethodUpdate:
        plan = self.plans.load_plan(command.partner_id)
        if plan.payment_customer_ref is None or plan.activated_at is None or plan.state is PlanState.ACTIVATING:
            # Never active (nothing to pay), or an activation under way (it saves its own card).
            raise Conflict(
                f"the monthly billing plan is {plan.state.value}: give a new payment method once it has been active",
                code="plan_not_active",
            )
        # PaymentDeclined (402) when the card is refused: nothing changes.
        saved = self.payments.save_payment_method(
            partner_id=command.partner_id,
            payment_method=command.request.payment_method,
            customer_ref=plan.payment_customer_ref,
        )
        self.plans.save_plan(
            replace(plan, payment_method_ref=saved.payment_method_ref),
            audit=AuditEvent(
                command.partner_id,
                "payment_method_updated",
                self.clock.now(),
                command.actor,
                {"payment_method": saved.payment_method_ref},
            ),
        )
        invoices, _ = self.invoices.list_invoices(command.partner_id, limit=RECENT_INVOICES, after=None)
        outcomes = [
            self.charge.settle_invoice_now(command.partner_id, invoice.month)
            for invoice in sorted(invoices, key=lambda invoice: invoice.month)
            if invoice.unpaid
        ]
        # Also when nothing was left to pay: an earlier request may have paid and died before this write.
        self.charge.clear_past_due_once_settled(command.partner_id)
        return PaymentMethodUpdate(
            plan_state=self.plans.load_plan(command.partner_id).state.value,
            payment_method=saved.payment_method_ref,
            settled=[_settled_view(invoice) for invoice in outcomes if invoice.settled],
            unpaid=[_settled_view(invoice) for invoice in outcomes if not invoice.settled],
        )


def _settled_view(invoice: Invoice) -> SettledInvoiceView:
    return SettledInvoiceView(
        month=str(invoice.month),
        status=invoice.status.value,
        total=money_view(invoice.total),
        payment_id=invoice.payment_id,
        failure_code=invoice.failure_code,
    )
