"""Partner API: billing history (invoices) and usage-report downloads. Read-only, billing roles only."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import answers_errors, json_response, partner_authorizer, partner_identity
from billing_core.domain.errors import InvalidRequest
from billing_core.wiring import services

history_api = Blueprint(__name__)
DEFAULT_PAGE_SIZE = 12


@history_api.route("/invoices", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def list_invoices() -> Response:
    request = history_api.current_request
    identity = partner_identity(request, billing=True)
    query: dict[str, str] = dict(request.query_params or {})
    try:
        limit = int(query.get("limit", DEFAULT_PAGE_SIZE))
    except ValueError:
        raise InvalidRequest.for_field("limit", "must be an integer") from None
    return json_response(services().history.list_invoices(identity, limit=limit, after=query.get("after")))


@history_api.route("/invoices/{month}", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def get_invoice(month: str) -> Response:
    identity = partner_identity(history_api.current_request, billing=True)
    return json_response(services().history.get_invoice(identity, month))


@history_api.route("/invoices/{month}/usage-report", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def usage_report_link(month: str) -> Response:
    identity = partner_identity(history_api.current_request, billing=True)
    return json_response(services().history.usage_report_link(identity, month))
