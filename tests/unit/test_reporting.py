"""Usage report CSV and the billing / failed-payment e-mails (pure rendering)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus
from billing_core.domain.money import Money
from billing_core.domain.reporting import (
    DeviceStatus,
    RenderedEmail,
    UsageReportRow,
    billing_report_email,
    payment_failed_email,
    usage_report_csv,
    usage_report_key,
)

JANUARY = BillingMonth(2026, 1)
DECEMBER = BillingMonth(2025, 12)
EVIL = "<script>alert(1)</script> & Co"
HEADER = ["workspace_id", "workspace_name", "edition", "device_id", "first_seen_at", "status"]


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def row(
    workspace_id: str = "ws-1",
    name: str = "Alpha",
    device: str = "dev-1",
    seen: datetime | None = None,
    status: DeviceStatus = DeviceStatus.BILLED,
    edition: str | None = "business",
) -> UsageReportRow:
    return UsageReportRow(workspace_id, name, edition, device, seen or at(2), status)


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def line(
    workspace_id: str, description: str, edition: str, seats: int, devices: int, unit: int, adjustment: bool = False
) -> InvoiceLine:
    return InvoiceLine(
        workspace_id,
        description,
        edition,
        seats,
        devices,
        usd(unit),
        usd(unit).times(seats),
        DECEMBER if adjustment else JANUARY,
        adjustment=adjustment,
    )


def invoice(*lines: InvoiceLine, status: InvoiceStatus = InvoiceStatus.PAID, **changes: object) -> Invoice:
    base = Invoice(
        partner_id="p-42",
        month=JANUARY,
        currency="USD",
        price_list_version="2026-01",
        lines=lines,
        created_at=datetime(2026, 2, 1, 0, 5, tzinfo=UTC),
        status=status,
        payment_attempts=1,
        paid_at=datetime(2026, 2, 1, 0, 6, tzinfo=UTC) if status is InvoiceStatus.PAID else None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# 3 x 2.50 + 1 x 4.00 + adjustment 1 x 1.00 = 12.50
ALPHA = line("ws-1", "Alpha", "business", 3, 5, 250)
BETA = line("ws-2", "Beta", "enterprise", 1, 1, 400)
LATE = line("ws-1", "Alpha: late usage for 2025-12", "business", 1, 2, 100, adjustment=True)


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_has_header_and_one_row_per_device_with_utc_z_timestamps() -> None:
    plus_two = timezone(timedelta(hours=2))
    text = usage_report_csv(
        [
            row(device="dev-1", seen=datetime(2026, 1, 2, 14, 30, 5, tzinfo=plus_two)),
            row(device="dev-2", status=DeviceStatus.OVER_CAP, seen=at(3)),
            row("ws-9", "Gamma", "dev-3", at(4), DeviceStatus.NOT_BILLABLE, edition=None),
        ]
    )
    assert parse(text) == [
        HEADER,
        ["ws-1", "Alpha", "business", "dev-1", "2026-01-02T12:30:05Z", "billed"],
        ["ws-1", "Alpha", "business", "dev-2", "2026-01-03T00:00:00Z", "over_cap"],
        ["ws-9", "Gamma", "", "dev-3", "2026-01-04T00:00:00Z", "not_billable"],
    ]
    assert text.startswith("workspace_id,workspace_name,edition,device_id,first_seen_at,status\r\n")


def test_csv_of_no_rows_is_only_the_header() -> None:
    assert parse(usage_report_csv([])) == [HEADER]


def test_csv_rows_sorted_by_workspace_name_id_first_seen_and_device() -> None:
    rows = [
        row("ws-b", "Beta", "d-1", at(1)),
        row("ws-2", "Alpha", "d-9", at(5)),
        row("ws-1", "Alpha", "d-b", at(3)),
        row("ws-1", "Alpha", "d-a", at(3)),
        row("ws-1", "Alpha", "d-z", at(2)),
    ]
    ordered = [(r[0], r[3]) for r in parse(usage_report_csv(rows))[1:]]
    assert ordered == [("ws-1", "d-z"), ("ws-1", "d-a"), ("ws-1", "d-b"), ("ws-2", "d-9"), ("ws-b", "d-1")]


def test_csv_quotes_commas_quotes_and_newlines_in_names() -> None:
    name = 'Smith, Jones & "Partners"\nLtd'
    text = usage_report_csv([row(name=name)])
    assert '"Smith, Jones & ""Partners""\nLtd"' in text
    assert parse(text)[1][1] == name


@pytest.mark.parametrize("dangerous", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1"])
def test_csv_neutralises_formula_cells(dangerous: str) -> None:
    text = usage_report_csv([row(workspace_id=dangerous, name=dangerous, device=dangerous, edition=dangerous)])
    cells = parse(text)[1]
    assert cells[:4] == ["'" + dangerous] * 4
    assert cells[4:] == ["2026-01-02T00:00:00Z", "billed"]


def test_csv_leaves_ordinary_cells_alone() -> None:
    assert parse(usage_report_csv([row(name="Acme 1=2 GmbH", device="a-b")]))[1][1:4] == [
        "Acme 1=2 GmbH",
        "business",
        "a-b",
    ]


def test_usage_report_key() -> None:
    assert usage_report_key("p-42", JANUARY) == "usage-reports/p-42/2026-01.csv"
    assert usage_report_key("p-42", BillingMonth(2025, 12)) == "usage-reports/p-42/2025-12.csv"
    with pytest.raises(ValueError):
        usage_report_key("../other", JANUARY)


# --- billing report e-mail ---------------------------------------------------------------------


def test_billing_report_lists_partner_month_every_line_and_total() -> None:
    email = billing_report_email(invoice(ALPHA, BETA, LATE), "Acme IT")
    assert isinstance(email, RenderedEmail)
    assert "January 2026" in email.subject and "Acme IT" in email.subject
    for body in (email.text, email.html):
        assert "Acme IT" in body and "p-42" in body
        assert "January 2026" in body and "2026-01" in body
        for expected in ("Alpha", "Beta", "business", "enterprise", "USD 2.50", "USD 7.50", "USD 4.00", "USD 1.00"):
            assert expected in body, expected
        assert "Total: USD 12.50" in body or ">USD 12.50</th>" in body
    assert "- Alpha: edition business, 3 seats (5 devices seen) x USD 2.50 = USD 7.50" in email.text
    assert "- Beta: edition enterprise, 1 seats (1 devices seen) x USD 4.00 = USD 4.00" in email.text
    assert "Total: USD 12.50" in email.text
    html_cells = [
        "<td>Alpha</td>",
        "<td>business</td>",
        '<td style="text-align:right">3</td>',
        '<td style="text-align:right">5</td>',
        '<td style="text-align:right">USD 2.50</td>',
        '<td style="text-align:right">USD 7.50</td>',
    ]
    alpha_row = email.html.split("<tr>")[2]  # header row, then the first line
    for cell in html_cells:
        assert cell in alpha_row, cell
    assert email.html.count("<tr>") == 1 + 3 + 1  # header, three lines, total


def test_billing_report_marks_adjustment_lines_only() -> None:
    email = billing_report_email(invoice(ALPHA, LATE), "Acme IT")
    text_lines = [entry for entry in email.text.splitlines() if entry.startswith("- ")]
    assert text_lines == [
        "- Alpha: edition business, 3 seats (5 devices seen) x USD 2.50 = USD 7.50",
        "- [Adjustment for 2025-12] Alpha: late usage for 2025-12: edition business, 1 seats (2 devices seen)"
        " x USD 1.00 = USD 1.00",
    ]
    assert email.html.count("<td>Adjustment (2025-12)</td>") == 1
    assert email.html.count("<td>Usage</td>") == 1
    assert "Adjustment" not in billing_report_email(invoice(ALPHA), "Acme IT").text


def test_billing_report_without_lines_says_so() -> None:
    email = billing_report_email(invoice(status=InvoiceStatus.NOTHING_DUE), "Acme IT")
    assert "No workspace used seats on the plan this month." in email.text
    assert "No workspace used seats on the plan this month." in email.html
    assert "Total: USD 0.00" in email.text


STATUS_PREFIXES = ("Paid:", "Nothing due:", "Payment failed (", "Past due:")


@pytest.mark.parametrize(
    ("status", "changes", "wording"),
    [
        (InvoiceStatus.PAID, {}, "Paid: USD 12.50 was charged on 2026-02-01."),
        (InvoiceStatus.NOTHING_DUE, {}, "Nothing due: no payment was taken this month."),
        (
            InvoiceStatus.PAYMENT_FAILED,
            {"failure_code": "card_declined", "next_retry_on": date(2026, 2, 3)},
            "Payment failed (card_declined). We will retry on 2026-02-03.",
        ),
        (
            InvoiceStatus.PAST_DUE,
            {"failure_code": "insufficient_funds", "payment_attempts": 4},
            "Past due: the last payment attempt failed (insufficient_funds) and no further retry is scheduled.",
        ),
    ],
)
def test_billing_report_states_payment_status(status: InvoiceStatus, changes: dict[str, object], wording: str) -> None:
    email = billing_report_email(invoice(ALPHA, BETA, LATE, status=status, **changes), "Acme IT")
    assert f"Payment status: {wording}" in email.text
    assert wording in email.html
    for other in STATUS_PREFIXES:
        if not wording.startswith(other):
            assert other not in email.text, other
            assert other not in email.html, other


def test_html_escapes_user_input_everywhere_but_text_keeps_it() -> None:
    evil_line = line("ws-x", EVIL, "business", 1, 1, 250)
    email = billing_report_email(invoice(evil_line), EVIL)
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in email.html
    assert email.html.count("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co") == 2  # partner line, workspace row
    assert EVIL in email.text
    assert EVIL in email.subject


def test_subject_has_no_line_breaks_from_partner_name() -> None:
    email = billing_report_email(invoice(ALPHA), "Acme\r\nBcc: victim@example.com")
    assert "\n" not in email.subject and "\r" not in email.subject
    assert email.subject == "Billing report January 2026: Acme Bcc: victim@example.com"


def test_dollar_signs_in_names_are_not_template_placeholders() -> None:
    email = billing_report_email(invoice(line("ws-1", "$lines ${total}", "business", 1, 1, 250)), "$partner_name")
    assert "$partner_name" in email.text and "$lines ${total}" in email.text
    assert "$lines ${total}" in email.html


# --- failed-payment e-mail ---------------------------------------------------------------------


def test_payment_failed_email_gives_code_amount_and_retry_date() -> None:
    failed = invoice(
        ALPHA,
        BETA,
        LATE,
        status=InvoiceStatus.PAYMENT_FAILED,
        failure_code="card_declined",
        next_retry_on=date(2026, 2, 5),
        payment_attempts=2,
    )
    email = payment_failed_email(failed, "Acme IT")
    assert email.subject == "Payment failed for January 2026: Acme IT"
    for body in (email.text, email.html):
        assert "could not charge" in body
        assert "USD 12.50" in body
        assert "card_declined" in body
        assert "attempt 2" in body
        assert "We will retry the charge on 2026-02-05." in body
        assert "past due" not in body


def test_payment_failed_email_for_past_due_says_no_retry() -> None:
    past_due = invoice(ALPHA, status=InvoiceStatus.PAST_DUE, failure_code="expired_card", payment_attempts=4)
    email = payment_failed_email(past_due, EVIL)
    assert email.subject.startswith("Payment past due for January 2026")
    for body in (email.text, email.html):
        assert "expired_card" in body
        assert "your plan is now past due" in body
        assert "retry the charge on" not in body
    assert "<script>" not in email.html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in email.html


@pytest.mark.parametrize("status", [InvoiceStatus.PAID, InvoiceStatus.NOTHING_DUE, InvoiceStatus.DRAFT])
def test_payment_failed_email_refuses_invoices_without_a_failure(status: InvoiceStatus) -> None:
    with pytest.raises(ValueError):
        payment_failed_email(invoice(ALPHA, status=status), "Acme IT")
