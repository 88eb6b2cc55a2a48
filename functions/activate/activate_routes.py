"""Partner API: activate the monthly billing option; read the plan's status; give a new payment method and
settle the unpaid invoices with it."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import (
    answers_errors,
    json_response,
    parse_body,
    partner_authorizer,
    partner_identity,
    required_header,
)
from billing_core.api.openapi import Param, operation
from billing_core.domain.errors import PaymentDeclined
from billing_core.schemas import (
    ActivatePlanRequest,
    ActivationOutcome,
    PaymentMethodUpdate,
    PlanStatusView,
    UpdatePaymentMethodRequest,
)
from billing_core.wiring import services

activate_api = Blueprint(__name__)


IDEMPOTENCY_KEY = Param(
    "Chosen by the client per activation attempt: the same key and body replay the first answer (one charge)",
    {"type": "string", "minLength": 1, "maxLength": 255},
    required=True,
)


@activate_api.route("/plan/activation", methods=["POST"], authorizer=partner_authorizer)
@operation(
    "Activate the monthly billing option: charge the activation fee and save the payment method",
    request=ActivatePlanRequest,
    responses={201: ActivationOutcome, 202: ActivationOutcome},
    headers={"Idempotency-Key": IDEMPOTENCY_KEY},
    errors={
        400: "the Idempotency-Key header is missing",
        402: "the payment was declined, or its authentication (3-D Secure) failed or was not completed in time; "
        "`error.decline_code` says why (`authentication_failed`, `authentication_abandoned`, ...)",
        409: "the plan is already active, an activation is in progress, or an earlier activation's payment awaits "
        "the customer's authentication (`authentication_pending`)",
        422: "the Idempotency-Key was used before with another body",
    },
    billing=True,
    tags=["Plan"],
    description=(
        "Charges the activation fee of the price list in effect today, in the chosen currency, and saves the "
        "payment method for the monthly charges. Send one `Idempotency-Key` per attempt: the same key and body "
        "answer the first answer again (one charge); the same key with another body is 422. A declined payment is"
        " 402 with `error.decline_code`, and the plan stays inactive. The fee covers the month of the activation:"
        " the next month is the first one charged, on the 1st after it.\n\n"
        "**3-D Secure (SCA).** When the card's issuer wants the customer to authenticate the payment, the answer "
        "is 202 with `status` `requires_action`, the `payment_id` and its `client_secret`: run Stripe.js "
        "`handleNextAction({clientSecret})` (or `confirmCardPayment`) in the customer's browser, then send the "
        "same request again (same key and body). That answer is not stored, so the repeat looks the payment up: "
        "201 once it is paid (stored and replayed from then on; the fee is charged once), 402 "
        "`authentication_failed` if the customer failed the challenge, 202 again while it still waits. The "
        "customer has until `authentication_expires_at` (30 minutes); a request after it cancels the payment "
        "(402 `authentication_abandoned`, the plan stays inactive)."
    ),
)
@answers_errors
def activate_monthly_billing() -> Response:
    request = activate_api.current_request
    identity = partner_identity(request, billing=True)
    idempotency_key = required_header(request, "Idempotency-Key")
    body = parse_body(request, ActivatePlanRequest)
    wired = services()
    wired.idempotency.register_lambda_context(activate_api.lambda_context)
    outcome = wired.activation.activate_monthly_billing(identity, idempotency_key, body)
    if outcome.status == "declined":
        raise PaymentDeclined(outcome.message or "payment declined", decline_code=outcome.decline_code or "declined")
    # requires_action: accepted, not done; the customer authenticates, then the same request completes it.
    return json_response(outcome, status_code=202 if outcome.status == "requires_action" else 201)


@activate_api.route("/plan", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "The plan's state, coverage, next charge date and the workspaces on it",
    responses={200: PlanStatusView},
    billing=True,
    tags=["Plan"],
    description=(
        "The plan's state (`inactive`, `activating`, `active`, `cancellation_scheduled`, `past_due`, "
        "`cancelled`), when it was activated, the last day the activation fee covers, the next charge date, and "
        "each workspace on the plan with its devices and billable seats so far this month (devices capped at "
        "`max_devices`)."
    ),
)
@answers_errors
def plan_status() -> Response:
    identity = partner_identity(activate_api.current_request, billing=True)
    return json_response(services().activation.plan_status(identity))


@activate_api.route("/plan/payment-method", methods=["PUT"], authorizer=partner_authorizer)
@operation(
    "Give a new payment method; every unpaid invoice is charged with it now",
    request=UpdatePaymentMethodRequest,
    responses={200: PaymentMethodUpdate},
    headers={
        "Idempotency-Key": Param(
            "Chosen by the client per update: the same key and body replay the first answer (each invoice is "
            "charged at most once)",
            {"type": "string", "minLength": 1, "maxLength": 255},
            required=True,
        )
    },
    errors={
        400: "the Idempotency-Key header is missing",
        402: "the new payment method was refused when saved (`error.decline_code`); nothing changed",
        409: "the monthly billing option was never active, or an activation is under way",
        503: "an invoice's payment is being made right now by the monthly run: retry shortly (none is paid twice)",
        422: "the body names no payment method, or the Idempotency-Key was used before with another body",
    },
    billing=True,
    tags=["Plan"],
    description=(
        "The way out of dunning. Saves the payment method on the partner's customer for every later charge, then "
        "charges each unpaid invoice (declined with retries pending, or past due) with it now, oldest first, "
        "each under its own exactly-once payment attempt: `settled` lists the invoices paid, `unpaid` those "
        "declined again. A past-due plan is active again once no invoice is past due; until then it takes no "
        "new workspace, and a cancelled plan with an unpaid invoice cannot be activated again."
    ),
)
@answers_errors
def update_payment_method() -> Response:
    request = activate_api.current_request
    identity = partner_identity(request, billing=True)
    idempotency_key = required_header(request, "Idempotency-Key")
    body = parse_body(request, UpdatePaymentMethodRequest)
    wired = services()
    wired.idempotency.register_lambda_context(activate_api.lambda_context)
    return json_response(wired.settlement.update_payment_method(identity, idempotency_key, body))
