"""Partner API: the end dates on offer, cancelling the plan on one of them, and reactivating it."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import answers_errors, json_response, parse_body, partner_authorizer, partner_identity
from billing_core.api.openapi import operation
from billing_core.schemas import CancellationOptionsView, CancellationView, CancelPlanRequest, PlanStatusView
from billing_core.wiring import services

cancel_api = Blueprint(__name__)


@cancel_api.route("/plan/cancellation/options", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "The end dates on offer: the end of this month and of the next two (UTC)",
    responses={200: CancellationOptionsView},
    errors={409: "the plan is not active (nothing to cancel)"},
    billing=True,
    tags=["Cancellation"],
    description=(
        "The end dates a cancellation may choose, each with the day of the monthly run that invoices the final "
        "month; `scheduled_ends_on` is the date already chosen, if any."
    ),
)
@answers_errors
def cancellation_options() -> Response:
    identity = partner_identity(cancel_api.current_request, billing=True)
    return json_response(services().cancellation.cancellation_options(identity))


@cancel_api.route("/plan/cancellation", methods=["POST"], authorizer=partner_authorizer)
@operation(
    "Cancel the monthly billing plan on one of the offered end dates; every licence on it ends with it. "
    "Cancelling again replaces the date",
    request=CancelPlanRequest,
    responses={200: CancellationView},
    errors={409: "the plan is not active"},
    billing=True,
    tags=["Cancellation"],
    description=(
        "Schedules the end of the plan on one of the offered dates: every workspace's licence ends with it (at "
        "00:00 UTC after the end date), the final month is invoiced by the next monthly run, and a confirmation "
        "e-mail lists the workspaces losing protection. Cancelling again replaces the date."
    ),
)
@answers_errors
def cancel_plan() -> Response:
    request = cancel_api.current_request
    identity = partner_identity(request, billing=True)
    body = parse_body(request, CancelPlanRequest)
    return json_response(services().cancellation.cancel_plan(identity, body))


@cancel_api.route("/plan/cancellation", methods=["DELETE"], authorizer=partner_authorizer)
@operation(
    "Reactivate: withdraw the scheduled cancellation before its end date; the plan continues as before",
    responses={200: PlanStatusView},
    errors={409: "no cancellation is scheduled, or the end date is over (activate again instead)"},
    billing=True,
    tags=["Cancellation"],
    description=(
        "Withdraws a scheduled cancellation before its end date: the plan and every licence on it continue as before."
    ),
)
@answers_errors
def reactivate_plan() -> Response:
    identity = partner_identity(cancel_api.current_request, billing=True)
    return json_response(services().cancellation.reactivate_plan(identity))
