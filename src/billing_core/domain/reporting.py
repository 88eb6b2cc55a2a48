"""The outputs of a monthly charge besides the payment: the per-device usage report (CSV), the invoice's
reconciliation file (CSV, one row per invoice line) and the e-mails (billing report, failed payment).
Pure: rendering only; storing and sending are adapters.

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
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from string import Template

from billing_core.domain.calendar import BillingMonth, to_iso
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus, LineKind
from billing_core.domain.money import CURRENCY_EXPONENTS, Money

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
    # Seen in a month whose seats are not billed (the activation month, covered by the activation fee), on an
    # invoice made for its licence subscriptions.
    SEATS_NOT_BILLED = "seats_not_billed"


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
# Reconciliation file (CSV): one row per invoice line
# ---------------------------------------------------------------------------------------------------

RECONCILIATION_COLUMNS = (
    "invoice_month",
    "line",
    "line_kind",
    "description",
    "workspace_id",
    "subscription_id",
    "order_id",
    "customer_id",
    "sku_or_edition",
    "cycle",
    "period_first_day",
    "period_last_day",
    "quantity",
    "unit_price",
    "amount",
    "currency",
    "price_list_version",
    "promotion",
    "charge_seq",
    "credit_for_seq",
    "credit_for_first_day",
    "credit_for_last_day",
    "credit_for_amount",
)


def _decimal(money: Money) -> str:
    """Major units with the currency's decimals (``-871.23``): what a spreadsheet sums."""
    exponent = CURRENCY_EXPONENTS[money.currency]
    sign = "-" if money.amount_minor < 0 else ""
    units, minor = divmod(abs(money.amount_minor), 10**exponent)
    return f"{sign}{units}.{minor:0{exponent}d}"


def _optional(value: object) -> str:
    return "" if value is None else str(value)


def _reconciliation_row(invoice: Invoice, number: int, line: InvoiceLine) -> list[str]:
    """Seat lines: the usage month as their period and the seats as quantity. Licence lines: their
    subscription detail. Credits brought / carried forward: no period, quantity or unit price."""
    row = dict.fromkeys(RECONCILIATION_COLUMNS, "")
    row |= {
        "invoice_month": str(invoice.month),
        "line": str(number),
        "line_kind": line.kind.value,
        "description": _csv_cell(line.description),
        "workspace_id": _csv_cell(line.workspace_id),
        "sku_or_edition": _csv_cell(line.edition),
        "amount": _decimal(line.amount),
        "currency": line.amount.currency,
    }
    detail = line.subscription
    if line.is_seat_line:
        row |= {
            "period_first_day": line.month.first_day.isoformat(),
            "period_last_day": line.month.last_day.isoformat(),
            "quantity": str(line.seats),
            "unit_price": _decimal(line.unit_price),
            "price_list_version": _csv_cell(invoice.price_list_version),
        }
    elif detail is not None:
        row |= {
            "subscription_id": _csv_cell(detail.subscription_id),
            "order_id": _csv_cell(detail.order_id),
            "customer_id": _csv_cell(_optional(detail.customer_id)),
            "cycle": _csv_cell(detail.cycle),
            "period_first_day": detail.period_start.isoformat(),
            "period_last_day": (detail.period_end - timedelta(days=1)).isoformat(),
            "quantity": str(detail.quantity),
            "unit_price": _decimal(line.unit_price),
            "price_list_version": _csv_cell(_optional(detail.price_list_version)),
            "promotion": _csv_cell(_optional(detail.promotion)),
            "charge_seq": _optional(detail.charge_seq),
        }
        if detail.credit_for is not None:
            credited = detail.credit_for
            row |= {
                "credit_for_seq": str(credited.seq),
                "credit_for_first_day": credited.period_start.isoformat(),
                "credit_for_last_day": (credited.period_end - timedelta(days=1)).isoformat(),
                "credit_for_amount": _decimal(credited.amount),
            }
    return [row[column] for column in RECONCILIATION_COLUMNS]


def reconciliation_csv(invoice: Invoice) -> str:
    """RFC 4180 CSV with a header row and one row per invoice line, in the invoice's order, so the
    amounts add up to the invoice total. Amounts are signed as they count on the invoice: a charge is
    positive, a credit (change credit, credit from the previous invoice) negative, and the credit
    carried to the next invoice positive (it takes the unused credit off this invoice). Periods are
    first and last day (inclusive); amounts and unit prices are decimals in ``currency``. A change
    credit names the period charge it gives back from (``credit_for_*``, by the subscription's
    ``charge_seq``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RECONCILIATION_COLUMNS)
    for number, line in enumerate(invoice.lines, start=1):
        writer.writerow(_reconciliation_row(invoice, number, line))
    return buffer.getvalue()


def reconciliation_key(partner_id: str, month: BillingMonth) -> str:
    """Next to the month's usage report (same prefix, so the same bucket permissions)."""
    return usage_report_key(partner_id, month).removesuffix(".csv") + "-reconciliation.csv"


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
# Seat lines a billing report lists one by one. Beyond this many the table sums them per kind, edition and unit
# price and the e-mail points to the reconciliation file: 5,000 rows would make a message of about 2 MB (SES
# takes 10 MB, but mail clients clip long messages, Gmail after 102 KB, and would hide the total and payment
# status below the table); 100 rows keep it near 30 KB.
EMAIL_SEAT_LINES_MAX = 100


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
    seat_lines = [line for line in invoice.lines if line.is_seat_line]
    if len(seat_lines) <= EMAIL_SEAT_LINES_MAX:
        rows, note = [_line_values(line) for line in seat_lines], ("", "")
    else:
        rows, note = _seat_line_sums(seat_lines), _lines_summed_note(len(seat_lines))
    return _email_with_lines(
        f"Billing report {month}: {partner_name}",
        "billing_report",
        values,
        rows,
        _NO_LINES,
        7,
        sections={
            "licences": _licence_section([line for line in invoice.lines if not line.is_seat_line]),
            "lines_note": note,
        },
    )


def _seat_line_sums(lines: list[InvoiceLine]) -> list[dict[str, str]]:
    """One row per kind (usage, late-usage adjustment), edition and unit price, in that order: seats, devices and
    amounts summed, so the rows still add up to the seat lines' total."""
    groups: dict[tuple[bool, str, Money], list[InvoiceLine]] = {}
    for line in lines:
        groups.setdefault((line.adjustment, line.edition, line.unit_price), []).append(line)
    rows = []
    for (adjustment, edition, unit_price), group in sorted(
        groups.items(), key=lambda entry: (entry[0][0], entry[0][1], entry[0][2].amount_minor)
    ):
        amount = Money(sum(line.amount.amount_minor for line in group), unit_price.currency)
        rows.append(
            {
                "kind": "Adjustments (late usage)" if adjustment else "Usage",
                "marker": "[Adjustments for late usage] " if adjustment else "",
                "description": f"{len(group):,} {'late-usage lines' if adjustment else 'workspaces'}",
                "workspace_id": "",
                "edition": edition,
                "seats": str(sum(line.seats for line in group)),
                "devices": str(sum(line.devices for line in group)),
                "unit_price": unit_price.format(),
                "amount": amount.format(),
            }
        )
    return rows


def _lines_summed_note(count: int) -> tuple[str, str]:
    note = (
        f"This invoice has {count:,} workspace lines, summed above per edition. Every line is in the invoice's "
        "reconciliation file (CSV), which you can download from your billing history."
    )
    return f"\n\n{note}", f'<p class="lines-note">{_html(note)}</p>\n'


_LINE_KIND_LABELS = {
    LineKind.LICENCE_PERIOD: "Licence period",
    LineKind.CHANGE_CREDIT: "Change credit",
    LineKind.CREDIT_BROUGHT_FORWARD: "Credit",
    LineKind.CREDIT_CARRIED_FORWARD: "Credit",
}


def _licence_line(line: InvoiceLine) -> tuple[str, str]:
    """One licence period, change credit or credit forward line: (text, HTML)."""
    kind = _LINE_KIND_LABELS.get(line.kind, line.kind.value)
    detail = line.subscription
    if detail is None:  # credit brought / carried forward: an amount, nothing else
        values = {"kind": kind, "description": line.description, "amount": line.amount.format()}
        return _render("billing_report_credit_line.txt", values, _plain), _render(
            "billing_report_credit_line.html", values, _html
        )
    credited = detail.credit_for
    values = {
        "kind": kind,
        "description": line.description,
        "sku": line.edition,
        "subscription_id": detail.subscription_id,
        "order_id": detail.order_id,
        "customer_id": detail.customer_id or "-",
        "cycle": detail.cycle,
        "first_day": _day(detail.period_start),
        "last_day": _day(detail.period_end - timedelta(days=1)),
        "quantity": str(detail.quantity),
        "unit_price": line.unit_price.format(),
        "amount": line.amount.format(),
        "credit_for": (
            f", gives back from the charge for {_day(credited.period_start)} to "
            f"{_day(credited.period_end - timedelta(days=1))} ({credited.amount.format()})"
            if credited is not None
            else ""
        ),
    }
    return _render("billing_report_licence_line.txt", values, _plain), _render(
        "billing_report_licence_line.html", values, _html
    )


def _licence_section(lines: list[InvoiceLine]) -> tuple[str, str]:
    """The licence subscriptions' lines and the credits forward, after the seats: (text, HTML); both
    empty for an invoice of seats only, so seat invoices read exactly as before."""
    if not lines:
        return "", ""
    rendered = [_licence_line(line) for line in lines]
    text = "\n\n" + _template("billing_report_licences.txt").substitute(
        {"lines": "\n".join(text for text, _ in rendered)}
    ).rstrip("\n")
    html_section = _template("billing_report_licences.html").substitute({"lines": "".join(h for _, h in rendered)})
    return text, html_section


def _email_with_lines(
    subject: str,
    template: str,
    values: dict[str, str],
    lines: list[dict[str, str]],
    empty: str,
    columns: int,
    sections: dict[str, tuple[str, str]] | None = None,
) -> RenderedEmail:
    """An e-mail whose ``$lines`` are a table (HTML) or a list (text), one ``<template>_line`` per entry.
    ``sections`` are further placeholders already rendered as (text, HTML), inserted as they are."""
    text_lines = "\n".join(_render(f"{template}_line.txt", line, _plain) for line in lines) or empty
    html_lines = "".join(_render(f"{template}_line.html", line, _html) for line in lines) or (
        f'<tr><td colspan="{columns}">{_html(empty)}</td></tr>'
    )
    text_sections = {key: text for key, (text, _) in (sections or {}).items()}
    html_sections = {key: html_text for key, (_, html_text) in (sections or {}).items()}
    # The rendered lines are inserted as they are: their values were escaped while rendering them.
    return RenderedEmail(
        subject=_one_line(subject),
        text=_template(f"{template}.txt").substitute({**values, **text_sections, "lines": text_lines}),
        html=_template(f"{template}.html").substitute(
            {**{key: _html(value) for key, value in values.items()}, **html_sections, "lines": html_lines}
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
