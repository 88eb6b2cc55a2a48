"""Partner API: billing history (invoices), usage-report and reconciliation-file downloads. Read-only,
billing roles only."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import answers_errors, json_response, partner_authorizer, partner_identity
from billing_core.api.openapi import Param, operation
from billing_core.domain.errors import InvalidRequest
from billing_core.schemas import DownloadLink, InvoicePage, InvoiceView
from billing_core.services.history import MAX_PAGE_SIZE
from billing_core.wiring import services

history_api = Blueprint(__name__)
DEFAULT_PAGE_SIZE = 12

MONTH = {"month": Param("The invoice's month (UTC), YYYY-MM", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"})}
BAD_MONTH = "the month is not YYYY-MM"


@history_api.route("/invoices", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "The billing history, newest first, a page at a time",
    responses={200: InvoicePage},
    query={
        "limit": Param(
            "Invoices per page",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
        ),
        "after": Param("The `next` cursor of the previous page"),
    },
    errors={400: "`after` is not a cursor this API gave", 422: f"limit is not an integer from 1 to {MAX_PAGE_SIZE}"},
    billing=True,
    tags=["Billing history"],
    description=(
        "One invoice per billed month, newest first, `limit` per page (12 by default); pass the answer's `next` "
        "as `after` to get the next page."
    ),
)
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
@operation(
    "One invoice: a line per workspace, adjustments, total, payment status",
    responses={200: InvoiceView},
    path_params=MONTH,
    errors={404: "no invoice for that month", 422: BAD_MONTH},
    billing=True,
    tags=["Billing history"],
    description=(
        "The invoice of a month (YYYY-MM): its lines (workspace seats, late-usage adjustments, licence periods "
        "and change credits, credits brought and carried forward), the total and the payment status with its "
        "attempts."
    ),
)
@answers_errors
def get_invoice(month: str) -> Response:
    identity = partner_identity(history_api.current_request, billing=True)
    return json_response(services().history.get_invoice(identity, month))


@history_api.route("/invoices/{month}/usage-report", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "A download link (valid 15 minutes) of the month's per-device usage report (CSV)",
    responses={200: DownloadLink},
    path_params=MONTH,
    errors={404: "no invoice for that month, or its usage report is not ready yet", 422: BAD_MONTH},
    billing=True,
    tags=["Billing history"],
    description=(
        "A presigned link, valid 15 minutes, to the month's per-device usage report (CSV: workspace, edition, "
        "device, first seen, and whether it was billed, over the cap or not billable)."
    ),
)
@answers_errors
def usage_report_link(month: str) -> Response:
    identity = partner_identity(history_api.current_request, billing=True)
    return json_response(services().history.usage_report_link(identity, month))


@history_api.route("/invoices/{month}/reconciliation", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "A download link (valid 15 minutes) of the invoice's reconciliation file (CSV, one row per invoice line)",
    responses={200: DownloadLink},
    path_params=MONTH,
    errors={404: "no invoice for that month, or its reconciliation file is not ready yet", 422: BAD_MONTH},
    billing=True,
    tags=["Billing history"],
    description=(
        "A presigned link, valid 15 minutes, to the invoice's reconciliation file (CSV, one row per invoice line,"
        " with signed amounts that add up to the total)."
    ),
)
@answers_errors
def reconciliation_link(month: str) -> Response:
    identity = partner_identity(history_api.current_request, billing=True)
    return json_response(services().history.reconciliation_link(identity, month))
