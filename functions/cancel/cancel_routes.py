"""Partner API: the end dates on offer, cancelling the plan on one of them, and reactivating it."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import answers_errors, json_response, parse_body, partner_authorizer, partner_identity
from billing_core.schemas import CancelPlanRequest
from billing_core.wiring import services

cancel_api = Blueprint(__name__)


@cancel_api.route("/plan/cancellation/options", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def cancellation_options() -> Response:
    identity = partner_identity(cancel_api.current_request, billing=True)
    return json_response(services().cancellation.cancellation_options(identity))


@cancel_api.route("/plan/cancellation", methods=["POST"], authorizer=partner_authorizer)
@answers_errors
def cancel_plan() -> Response:
    request = cancel_api.current_request
    identity = partner_identity(request, billing=True)
    body = parse_body(request, CancelPlanRequest)
    return json_response(services().cancellation.cancel_plan(identity, body))


@cancel_api.route("/plan/cancellation", methods=["DELETE"], authorizer=partner_authorizer)
@answers_errors
def reactivate_plan() -> Response:
    identity = partner_identity(cancel_api.current_request, billing=True)
    return json_response(services().cancellation.reactivate_plan(identity))
