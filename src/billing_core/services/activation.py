"""Activating the monthly billing option, and reading the plan's status."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import BaseModel

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import (
    AuthenticationPending,
    Conflict,
    IdempotencyKeyReused,
    PaymentDeclined,
    PlanAlreadyActive,
    UnpaidInvoice,
)
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.invoicing import RECENT_INVOICES
from billing_core.domain.money import Money
from billing_core.domain.payments import (
    AUTHENTICATION_ABANDONED,
    AUTHENTICATION_FAILED,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    PaymentRecord,
    SavedPaymentMethod,
)
from billing_core.domain.plan import PendingAuthentication, Plan, PlanState
from billing_core.domain.pricing import Prices
from billing_core.ports import (
    Clock,
    IdempotencyGuard,
    InvoiceStore,
    PaymentAuthentication,
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


class _AwaitingAuthentication(Exception):
    """Raised through the idempotency guard so the ``requires_action`` answer is not stored as the final one:
    the guard stores nothing when its function raises, and the same request sent again looks the payment up."""

    def __init__(self, outcome: ActivationOutcome) -> None:
        super().__init__("the activation payment awaits the customer's authentication")
        self.outcome = outcome


def request_fingerprint(request: ActivatePlanRequest) -> str:
    """A digest of the request body: while a payment awaits authentication (no idempotency record is kept), the
    same Idempotency-Key with another body is still refused."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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
        outcome; the same key with another body is refused by the guard.

        A payment the customer must authenticate first (3-D Secure) answers ``requires_action`` with its
        client secret, which is not stored: the same request sent again looks the payment up and completes
        the activation (stored from then on), declines it, or answers ``requires_action`` again."""
        command = ActivationCommand(
            partner_id=identity.partner_id,
            actor=identity.subject,
            actor_email=identity.email,
            idempotency_key=idempotency_key,
            request=request,
        )
        try:
            return self.idempotency.run_once("activate_monthly_billing", self._activate, command, ActivationOutcome)
        except _AwaitingAuthentication as waiting:
            return waiting.outcome

    def _activate(self, command: ActivationCommand) -> ActivationOutcome:
        """Claim the plan, charge the activation fee once, then activate or record the decline.

        The claim (state ``activating`` with an attempt number) is written before any money moves, so
        two concurrent requests cannot both charge; the provider idempotency key is derived from the
        partner and attempt number, so a retry after a crash reuses it and cannot charge twice. An attempt
        whose payment awaits the customer's authentication is settled by looking that payment up, never by
        charging again.
        """
        now = self.clock.now()
        plan = self.plans.load_plan(command.partner_id)
        if plan.pending_authentication is not None:
            settled = self._settle_pending_authentication(plan, plan.pending_authentication, command, now)
            if isinstance(settled, ActivationOutcome):
                return settled
            plan = settled  # the earlier attempt is over, unpaid: this request makes a new one
        prices = self.prices.on(now.date())
        currency = prices.require_currency(command.request.currency, field_name="currency")
        fee = prices.activation_fee(currency)
        # An attempt claimed before (its request died or lost the provider's answer) may have charged already.
        resumed = plan.state is PlanState.ACTIVATING
        if not resumed:  # (a resumed attempt was checked when it began; its fee may be paid already)
            self._require_nothing_owed(plan)
        claim = plan.begin_activation(now)
        if claim.payment_customer_ref is None:
            # Stored with the claim, before any charge: every later attempt and plan life reuses the customer,
            # and a resumed attempt finds its payment among that customer's.
            claim = replace(claim, payment_customer_ref=self.payments.create_customer(partner_id=command.partner_id))
        claimed = self.plans.save_plan(
            claim,
            audit=self._audit(command, "activation_started", fee=fee.to_dict(), resumed=resumed),
        )
        assert claimed.payment_customer_ref is not None
        saved = SavedPaymentMethod(claimed.payment_customer_ref, command.request.payment_method)
        request = ChargeRequest(
            partner_id=command.partner_id,
            saved=saved,
            amount=fee,
            idempotency_key=claimed.activation_payment_key(),
            description=f"Monthly billing activation for partner {command.partner_id}",
            off_session=False,
            save_for_future_use=True,
        )
        try:
            # Looked up before anything else: a card refused now must not hide a fee the attempt already paid.
            found = self.payments.find_payment(request) if resumed else None
            if found is not None and found.succeeded:
                outcome = found
                with contextlib.suppress(PaymentDeclined):  # paid; a refused card is replaced later (PUT)
                    saved = self._save_card(command, claimed.payment_customer_ref)
            else:
                saved = self._save_card(command, claimed.payment_customer_ref)
                request = replace(request, saved=saved)
                outcome = found if found is not None else self.payments.charge(request)
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

        if (
            outcome.status is ChargeStatus.REQUIRES_ACTION
            and outcome.provider_payment_id is not None
            and isinstance(self.payments, PaymentAuthentication)
        ):
            pending = PendingAuthentication(
                payment_id=outcome.provider_payment_id,
                amount=fee,
                price_list_version=prices.version,
                customer_ref=saved.customer_ref,
                payment_method_ref=saved.payment_method_ref,
                billing_email=command.request.billing_email or command.actor_email,
                request_key=command.idempotency_key,
                request_fingerprint=request_fingerprint(command.request),
                requested_at=now,
            )
            self.plans.save_plan(
                claimed.await_authentication(pending),
                audit=self._audit(
                    command,
                    "authentication_requested",
                    attempt=claimed.activation_attempt,
                    payment_id=pending.payment_id,
                    expires_at=pending.expires_at.isoformat(),
                ),
            )
            raise _AwaitingAuthentication(self._awaiting_outcome(pending, outcome))

        if not outcome.succeeded:
            return self._decline(claimed, command, outcome)[1]

        assert outcome.provider_payment_id is not None
        return self._complete(
            claimed,
            command,
            payment_id=outcome.provider_payment_id,
            amount=fee,
            price_list_version=prices.version,
            saved=saved,
            billing_email=command.request.billing_email or command.actor_email,
            now=now,
        )

    def _save_card(self, command: ActivationCommand, customer_ref: str) -> SavedPaymentMethod:
        return self.payments.save_payment_method(
            partner_id=command.partner_id, payment_method=command.request.payment_method, customer_ref=customer_ref
        )

    def _settle_pending_authentication(
        self, plan: Plan, pending: PendingAuthentication, command: ActivationCommand, now: datetime
    ) -> ActivationOutcome | Plan:
        """Look the waiting payment up and settle its attempt. For the request that started it (same key and
        body): the activation (paid), the decline (failed, or cancelled after the window) or, while the
        customer may still authenticate, ``requires_action`` again. For any other request: a paid attempt
        activates the plan (409 for this request), an unpaid one is declined and this request goes on with a
        new attempt (the returned plan), and one still waiting within its window is a 409.

        Nothing is written before the provider answers, and only a transition is written, with the plan's
        optimistic lock: two requests settling the same payment write once (the other gets 409)."""
        own = pending.request_key == command.idempotency_key
        if own and pending.request_fingerprint != request_fingerprint(command.request):
            raise IdempotencyKeyReused()
        if not isinstance(self.payments, PaymentAuthentication):
            raise PaymentProviderUnavailable("the payment provider cannot look up the payment awaiting authentication")
        status = self.payments.payment_status(pending.payment_id)
        cancelled = False
        if status.status is ChargeStatus.REQUIRES_ACTION:
            if not pending.expired_at(now):
                if own:
                    raise _AwaitingAuthentication(self._awaiting_outcome(pending, status))
                raise AuthenticationPending(
                    f"the payment {pending.payment_id} of an earlier activation request awaits the customer's "
                    f"authentication until {pending.expires_at.isoformat()}; complete it and send that request "
                    "again, or retry after then"
                )
            # Past the window: cancel it, so it can never be paid later.
            status = self.payments.cancel_payment(pending.payment_id)
            cancelled = True
            if status.status is ChargeStatus.REQUIRES_ACTION:
                raise PaymentProviderUnavailable(f"the payment {pending.payment_id} could not be cancelled yet")
        if status.succeeded:
            activated = self._complete(
                plan,
                command,
                payment_id=pending.payment_id,
                amount=pending.amount,
                price_list_version=pending.price_list_version,
                saved=SavedPaymentMethod(pending.customer_ref, pending.payment_method_ref),
                billing_email=pending.billing_email,
                now=now,
            )
            if own:
                return activated
            raise PlanAlreadyActive(
                f"the monthly billing plan is already active: the customer authenticated the payment "
                f"{pending.payment_id} of an earlier activation request"
            )
        if cancelled:
            status = replace(
                status,
                decline_code=AUTHENTICATION_ABANDONED,
                message="The payment was not authenticated in time and has been cancelled; activate again.",
            )
        elif status.decline_code is None:
            status = replace(status, decline_code=AUTHENTICATION_FAILED)
        inactive, declined = self._decline(plan, command, status)
        return declined if own else inactive

    def _awaiting_outcome(self, pending: PendingAuthentication, outcome: ChargeOutcome) -> ActivationOutcome:
        return ActivationOutcome(
            status="requires_action",
            activation_fee=money_view(pending.amount),
            payment_id=pending.payment_id,
            client_secret=outcome.client_secret,
            authentication_expires_at=pending.expires_at,
            message=(
                "The card requires authentication (3-D Secure): run Stripe.js handleNextAction with the "
                "client_secret, then send the same request again"
            ),
        )

    def _decline(
        self, plan: Plan, command: ActivationCommand, outcome: ChargeOutcome
    ) -> tuple[Plan, ActivationOutcome]:
        inactive = self.plans.save_plan(
            plan.decline_activation(),
            audit=self._audit(
                command,
                "activation_declined",
                attempt=plan.activation_attempt,
                decline_code=outcome.decline_code,
                status=outcome.status.value,
                payment_id=outcome.provider_payment_id,
            ),
        )
        return inactive, ActivationOutcome(
            status="declined",
            decline_code=outcome.decline_code or outcome.status.value,
            message=outcome.message or "the payment was not completed",
        )

    def _complete(
        self,
        claimed: Plan,
        command: ActivationCommand,
        *,
        payment_id: str,
        amount: Money,
        price_list_version: str,
        saved: SavedPaymentMethod,
        billing_email: str | None,
        now: datetime,
    ) -> ActivationOutcome:
        """Activate with the attempt's paid payment: plan, payment item and audit event in one transaction."""
        payment = PaymentRecord(
            partner_id=command.partner_id,
            purpose="activation",
            attempt=claimed.activation_attempt,
            amount=amount,
            provider=self.payments.name,
            provider_payment_id=payment_id,
            idempotency_key=claimed.activation_payment_key(),
            created_at=now,
        )
        active = self.plans.save_plan(
            claimed.complete_activation(
                now=now,
                currency=amount.currency,
                price_list_version=price_list_version,
                customer_ref=saved.customer_ref,
                payment_method_ref=saved.payment_method_ref,
                billing_email=billing_email,
            ),
            audit=self._audit(command, "plan_activated", payment_id=payment_id),
            payment=payment,
        )
        return ActivationOutcome(
            status="activated",
            # Built without reads: a failure after the payment must not drop the stored outcome.
            # Activation changes no workspace, so none is on the plan yet.
            plan=plan_status_view(active, [], {}, now),
            activation_fee=money_view(amount),
            payment_id=payment_id,
        )

    def _require_nothing_owed(self, plan: Plan) -> None:
        """A new plan life starts only once the last one is fully invoiced (its final invoice made) and paid."""
        final = plan.month_of_final_invoice()
        if final is not None and self.invoices.load_invoice(plan.partner_id, final) is None:
            raise Conflict(
                f"the final invoice of the cancelled plan ({final}) is made by the monthly run on "
                f"{final.next().first_day}; activate again after it",
                code="final_invoice_pending",
            )
        if plan.activated_at is None:
            return  # never active: nothing was ever invoiced
        invoices, _ = self.invoices.list_invoices(plan.partner_id, limit=RECENT_INVOICES, after=None)
        unpaid = sorted(str(invoice.month) for invoice in invoices if invoice.unpaid)
        if unpaid or plan.past_due_month is not None:
            months = ", ".join(unpaid) or str(plan.past_due_month)
            raise UnpaidInvoice(
                f"the invoice of {months} is unpaid: settle it with a new payment method "
                "(PUT /plan/payment-method) before the plan is activated again"
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
