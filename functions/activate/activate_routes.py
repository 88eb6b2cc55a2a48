"""Partner API: activate the monthly billing option; read the plan's status."""

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
from billing_core.schemas import ActivatePlanRequest, ActivationOutcome, PlanStatusView
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
