"""The two outputs of a monthly charge besides the payment: the per-device usage report (CSV) and the
e-mails (billing report, failed payment). Pure: rendering only; storing and sending are adapters.

E-mail bodies come from ``billing_core/templates`` (``*.txt`` and ``*.html``) filled with
``string.Template``. Every value placed into HTML is escaped first: partner and workspace names are
user input.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from importlib import resources
from string import Template

from billing_core.domain.calendar import BillingMonth, to_iso
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus

# ---------------------------------------------------------------------------------------------------
# Usage report (CSV)
# ---------------------------------------------------------------------------------------------------

USAGE_REPORT_COLUMNS = ("workspace_id", "workspace_name", "edition", "device_id", "first_seen_at", "status")
USAGE_REPORT_PREFIX = "usage-reports"
# A spreadsheet treats a cell starting with one of these as a formula (OWASP "CSV injection").
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


class DeviceStatus(StrEnum):
    BILLED = "billed"
    OVER_CAP = "over_cap"  # seen, but beyond the workspace's max devices: reported, not billed
    NOT_BILLABLE = "not_billable"  # unknown workspace or not on the plan


@dataclass(frozen=True)
class UsageReportRow:
    workspace_id: str
    workspace_name: str
    edition: str | None
    device_id: str
    first_seen_at: datetime  # UTC
    status: DeviceStatus


def _csv_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_TRIGGERS) else value


def usage_report_csv(rows: list[UsageReportRow]) -> str:
    """RFC 4180 CSV (``\\r\\n`` line ends, quoting as needed) with a header row, one row per device,
    sorted by workspace name, workspace id, first sighting and device id."""
    ordered = sorted(rows, key=lambda r: (r.workspace_name, r.workspace_id, r.first_seen_at, r.device_id))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(USAGE_REPORT_COLUMNS)
    for row in ordered:
        writer.writerow(
            [
                _csv_cell(row.workspace_id),
                _csv_cell(row.workspace_name),
                _csv_cell(row.edition or ""),
                _csv_cell(row.device_id),
                to_iso(row.first_seen_at),
                row.status.value,
            ]
        )
    return buffer.getvalue()


def usage_report_key(partner_id: str, month: BillingMonth) -> str:
    if not partner_id or "/" in partner_id:
        raise ValueError(f"unusable partner id for a report key: {partner_id!r}")
    return f"{USAGE_REPORT_PREFIX}/{partner_id}/{month}.csv"


# ---------------------------------------------------------------------------------------------------
# E-mails
# ---------------------------------------------------------------------------------------------------

_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_NO_LINES = "No workspace used seats on the plan this month."


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@cache
def _template(name: str) -> Template:
    return Template(resources.files("billing_core").joinpath("templates", name).read_text(encoding="utf-8"))


def _month_name(month: BillingMonth) -> str:
    return f"{_MONTH_NAMES[month.month - 1]} {month.year}"


def _day(day: date) -> str:
    return day.isoformat()


def _one_line(text: str) -> str:
    """Subjects are a single header line: no control characters from user input."""
    return _CONTROL_CHARS.sub(" ", text).strip()


def _render(name: str, values: dict[str, str], escape: Callable[[str], str]) -> str:
    return _template(name).substitute({key: escape(value) for key, value in values.items()})


def _html(value: str) -> str:
    return html.escape(value, quote=True)


def _plain(value: str) -> str:
    return value


def _line_values(line: InvoiceLine) -> dict[str, str]:
    return {
        "kind": f"Adjustment ({line.month})" if line.adjustment else "Usage",
        "marker": f"[Adjustment for {line.month}] " if line.adjustment else "",
        "description": line.description,
        "workspace_id": line.workspace_id,
        "edition": line.edition,
        "seats": str(line.seats),
        "devices": str(line.devices),
        "unit_price": line.unit_price.format(),
        "amount": line.amount.format(),
    }


def payment_status_text(invoice: Invoice) -> str:
    """One sentence on where the invoice's payment stands."""
    total = invoice.total.format()
    if invoice.status is InvoiceStatus.PAID:
        when = f" on {_day(invoice.paid_at.date())}" if invoice.paid_at is not None else ""
        return f"Paid: {total} was charged{when}."
    if invoice.status is InvoiceStatus.NOTHING_DUE:
        return "Nothing due: no payment was taken this month."
    if invoice.status is InvoiceStatus.PAYMENT_FAILED:
        retry = f" We will retry on {_day(invoice.next_retry_on)}." if invoice.next_retry_on is not None else ""
        return f"Payment failed ({invoice.failure_code or 'unknown reason'}).{retry}"
    if invoice.status is InvoiceStatus.PAST_DUE:
        return (
            f"Past due: the last payment attempt failed ({invoice.failure_code or 'unknown reason'}) "
            "and no further retry is scheduled. Please update your payment method."
        )
    return f"Payment pending: {total} will be charged to your saved payment method."


def billing_report_email(invoice: Invoice, partner_name: str) -> RenderedEmail:
    month = _month_name(invoice.month)
    values = {
        "partner_name": partner_name,
        "partner_id": invoice.partner_id,
        "month": month,
        "month_code": str(invoice.month),
        "total": invoice.total.format(),
        "status_text": payment_status_text(invoice),
        "price_list_version": invoice.price_list_version,
    }
    lines = [_line_values(line) for line in invoice.lines]
    return _email_with_lines(f"Billing report {month}: {partner_name}", "billing_report", values, lines, _NO_LINES, 7)


def _email_with_lines(
    subject: str, template: str, values: dict[str, str], lines: list[dict[str, str]], empty: str, columns: int
) -> RenderedEmail:
    """An e-mail whose ``$lines`` are a table (HTML) or a list (text), one ``<template>_line`` per entry."""
    text_lines = "\n".join(_render(f"{template}_line.txt", line, _plain) for line in lines) or empty
    html_lines = "".join(_render(f"{template}_line.html", line, _html) for line in lines) or (
        f'<tr><td colspan="{columns}">{_html(empty)}</td></tr>'
    )
    # The rendered lines are inserted as they are: their values were escaped while rendering them.
    return RenderedEmail(
        subject=_one_line(subject),
        text=_template(f"{template}.txt").substitute({**values, "lines": text_lines}),
        html=_template(f"{template}.html").substitute(
            {**{key: _html(value) for key, value in values.items()}, "lines": html_lines}
        ),
    )


def payment_failed_email(invoice: Invoice, partner_name: str) -> RenderedEmail:
    if invoice.status is InvoiceStatus.PAYMENT_FAILED and invoice.next_retry_on is not None:
        next_step = (
            f"We will retry the charge on {_day(invoice.next_retry_on)}. Please make sure your payment method "
            "can be charged by then."
        )
    elif invoice.status is InvoiceStatus.PAST_DUE:
        next_step = (
            "This was the last attempt: no further retry is scheduled and your plan is now past due. "
            "Please update your payment method."
        )
    else:
        raise ValueError(f"invoice {invoice.partner_id}/{invoice.month} has no failed payment ({invoice.status.value})")
    month = _month_name(invoice.month)
    values = {
        "partner_name": partner_name,
        "partner_id": invoice.partner_id,
        "month": month,
        "month_code": str(invoice.month),
        "total": invoice.total.format(),
        "failure_code": invoice.failure_code or "unknown",
        "attempt": str(invoice.payment_attempts),
        "next_step": next_step,
    }
    headline = "Payment failed" if invoice.status is InvoiceStatus.PAYMENT_FAILED else "Payment past due"
    return RenderedEmail(
        subject=_one_line(f"{headline} for {month}: {partner_name}"),
        text=_render("payment_failed.txt", values, _plain),
        html=_render("payment_failed.html", values, _html),
    )


@dataclass(frozen=True)
class EndingLicence:
    """A workspace whose plan licence ends with the plan, and its devices seen this month."""

    workspace_id: str
    name: str
    edition: str
    devices_this_month: int


def cancellation_scheduled_email(partner_id: str, ends_on: date, licences: list[EndingLicence]) -> RenderedEmail:
    """The confirmation of a cancellation, with the warning that every licence on the plan ends."""
    values = {"partner_id": partner_id, "ends_on": _day(ends_on), "count": str(len(licences))}
    rows = [
        {
            "name": licence.name,
            "workspace_id": licence.workspace_id,
            "edition": licence.edition,
            "devices": str(licence.devices_this_month),
        }
        for licence in licences
    ]
    return _email_with_lines(
        f"Monthly billing ends on {_day(ends_on)}: {partner_id}",
        "cancellation_scheduled",
        values,
        rows,
        "No workspace is on the plan.",
        4,
    )


def plan_reactivated_email(partner_id: str, cancelled_end: date) -> RenderedEmail:
    values = {"partner_id": partner_id, "ends_on": _day(cancelled_end)}
    return RenderedEmail(
        subject=_one_line(f"Monthly billing continues: {partner_id}"),
        text=_render("plan_reactivated.txt", values, _plain),
        html=_render("plan_reactivated.html", values, _html),
    )
