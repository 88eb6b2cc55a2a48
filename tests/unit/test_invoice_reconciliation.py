"""Every line kind on the invoice's outputs: the reconciliation file (CSV, pure rendering), the billing
report e-mail, the billing-history view and the stored form of a line; and the run writing the file
next to the usage report, downloadable once the invoice is reported."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import get_args

import pytest

from billing_core.adapters.dynamodb.invoices import _line_from_json, _line_to_json
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import NotFound
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceLine, LineKind
from billing_core.domain.reporting import (
    RECONCILIATION_COLUMNS,
    billing_report_email,
    reconciliation_csv,
    reconciliation_key,
    usage_report_key,
)
from billing_core.schemas import LineKindName
from billing_core.services.history import BillingHistoryService
from billing_core.services.views import invoice_view
from tests.fakes import InMemoryInvoiceStore, InMemoryUsageReports
from tests.invoice_samples import JUNE, every_kind_invoice, every_kind_lines, usd

EVIL = '=HYPERLINK("http://x") <b>&'


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def total_minor(text: str) -> int:
    return int(sum(Decimal(row["amount"]) for row in rows(text)) * 100)


# --- reconciliation file -------------------------------------------------------------------------


def test_reconciliation_csv_has_a_row_per_invoice_line_in_invoice_order() -> None:
    text = reconciliation_csv(every_kind_invoice())
    assert text.startswith(",".join(RECONCILIATION_COLUMNS) + "\r\n")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(RECONCILIATION_COLUMNS)
    assert table[1:] == [
        # seats: the usage month as the period, seats as the quantity, the invoice's price list
        ["2026-06", "1", "seats", "Acme", "ws_1", "", "", "", "anti-malware", "", "2026-06-01", "2026-06-30", "3",
         "2.50", "7.50", "USD", "2026-01", "", "", "", "", "", ""],
        ["2026-06", "2", "seat_adjustment", "Acme: late usage for 2026-05", "ws_1", "", "", "", "anti-malware", "",
         "2026-05-01", "2026-05-31", "1", "2.50", "2.50", "USD", "2026-01", "", "", "", "", "", ""],
        ["2026-06", "3", "licence_period", "Cloud Backup Standard, P3Y/monthly: 2026-06-23 to 2026-07-22", "",
         "sub_1", "ord_1", "dental-meyer", "backup-standard", "P3Y/monthly", "2026-06-23", "2026-07-22", "10",
         "9.00", "90.00", "USD", "2026-01", "three-year-10", "3", "", "", "", ""],
        # a credit is negative and names the charge it gives back from (first and last day, amount)
        ["2026-06", "4", "change_credit",
         "Cloud Backup Standard, P1Y/annual: credit for the unused days 2026-06-23 to 2027-03-14", "",
         "sub_1", "ord_1", "", "backup-standard", "P1Y/annual", "2026-06-23", "2027-03-14", "10",
         "120.00", "-871.23", "USD", "2026-01", "", "2", "1", "2026-03-15", "2027-03-14", "1200.00"],
        ["2026-06", "5", "credit_brought_forward", "Credit from the previous invoice", "", "", "", "", "", "", "",
         "", "", "", "-10.00", "USD", "", "", "", "", "", "", ""],
        ["2026-06", "6", "credit_carried_forward", "Credit carried to the next invoice", "", "", "", "", "", "",
         "", "", "", "", "781.23", "USD", "", "", "", "", "", "", ""],
    ]  # fmt: skip


def test_reconciliation_amounts_add_up_to_the_invoice_total() -> None:
    invoice = every_kind_invoice()
    assert total_minor(reconciliation_csv(invoice)) == invoice.total.amount_minor == 0
    charged = replace(invoice, lines=invoice.lines[:3])
    assert total_minor(reconciliation_csv(charged)) == charged.total.amount_minor == 10_000


def test_reconciliation_of_lines_stored_before_kinds_existed_reads_them_as_seats() -> None:
    seats, late = every_kind_lines()[:2]
    assert seats.line_kind is None and late.line_kind is None
    table = rows(reconciliation_csv(every_kind_invoice(lines=(seats, late))))
    assert [(row["line_kind"], row["quantity"], row["amount"]) for row in table] == [
        ("seats", "3", "7.50"),
        ("seat_adjustment", "1", "2.50"),
    ]


def test_reconciliation_neutralises_formulas_in_text_but_keeps_negative_numbers() -> None:
    line = every_kind_lines()[3]
    assert line.subscription is not None
    evil = replace(
        line,
        description=EVIL,
        edition="+sku",
        subscription=replace(line.subscription, subscription_id="-sub", order_id="@ord", customer_id="=cust"),
    )
    (row,) = rows(reconciliation_csv(every_kind_invoice(lines=(evil,))))
    assert row["description"] == "'" + EVIL
    assert (row["sku_or_edition"], row["subscription_id"], row["order_id"], row["customer_id"]) == (
        "'+sku",
        "'-sub",
        "'@ord",
        "'=cust",
    )
    assert row["amount"] == "-871.23"


def test_an_invoice_without_lines_is_only_the_header() -> None:
    assert reconciliation_csv(every_kind_invoice(lines=())) == ",".join(RECONCILIATION_COLUMNS) + "\r\n"


def test_reconciliation_key_sits_next_to_the_usage_report() -> None:
    assert usage_report_key("p-42", JUNE) == "usage-reports/p-42/2026-06.csv"
    assert reconciliation_key("p-42", JUNE) == "usage-reports/p-42/2026-06-reconciliation.csv"
    with pytest.raises(ValueError):
        reconciliation_key("../other", JUNE)


# --- billing report e-mail -----------------------------------------------------------------------


def test_billing_report_shows_licence_lines_with_every_detail_and_the_credits_forward() -> None:
    email = billing_report_email(every_kind_invoice(), "Acme IT")
    text_lines = [entry for entry in email.text.splitlines() if entry.startswith("- ")]
    assert text_lines == [
        "- Acme: edition anti-malware, 3 seats (4 devices seen) x USD 2.50 = USD 7.50",
        "- [Adjustment for 2026-05] Acme: late usage for 2026-05: edition anti-malware, 1 seats (1 devices seen)"
        " x USD 2.50 = USD 2.50",
        "- Licence period: Cloud Backup Standard, P3Y/monthly: 2026-06-23 to 2026-07-22: SKU backup-standard,"
        " subscription sub_1, order ord_1, customer dental-meyer, cycle P3Y/monthly, 2026-06-23 to 2026-07-22,"
        " quantity 10 x USD 9.00 = USD 90.00",
        "- Change credit: Cloud Backup Standard, P1Y/annual: credit for the unused days 2026-06-23 to 2027-03-14:"
        " SKU backup-standard, subscription sub_1, order ord_1, customer -, cycle P1Y/annual,"
        " 2026-06-23 to 2027-03-14, quantity 10 x USD 120.00 = USD -871.23,"
        " gives back from the charge for 2026-03-15 to 2027-03-14 (USD 1200.00)",
        "- Credit from the previous invoice: USD -10.00",
        "- Credit carried to the next invoice: USD 781.23",
    ]
    assert "Licence subscriptions and credits" in email.text and "Total: USD 0.00" in email.text
    licences = email.html.split('<tbody class="licences">')[1].split("</tbody>")[0]
    assert licences.count("<tr>") == 2 + 4  # section title, column names, four lines
    for cell in (
        "<td>Licence period</td>",
        "<td>backup-standard</td>",
        "Subscription sub_1, order ord_1, customer dental-meyer, cycle P3Y/monthly</td>",
        '<td style="text-align:right">10</td>',
        "<td>2026-06-23 to 2026-07-22</td>",
        '<td style="text-align:right">USD 9.00</td>',
        '<td style="text-align:right">USD 90.00</td>',
        "<td>Change credit</td>",
        '<td style="text-align:right">USD -871.23</td>',
        '<td colspan="5">Credit from the previous invoice</td>',
        '<td colspan="5">Credit carried to the next invoice</td>',
    ):
        assert cell in licences, cell
    assert ">USD 0.00</th>" in email.html.split("<tfoot>")[1]


def test_a_seat_invoice_has_no_licence_section() -> None:
    invoice = every_kind_invoice(lines=every_kind_lines()[:2])
    email = billing_report_email(invoice, "Acme IT")
    assert "Licence" not in email.text and "licences" not in email.html
    assert "Workspaces:\n- Acme" in email.text and "USD 2.50\n\nTotal: USD 10.00" in email.text


def test_licence_lines_escape_html_but_the_text_keeps_it() -> None:
    line = every_kind_lines()[2]
    assert line.subscription is not None
    evil = replace(line, description=EVIL, subscription=replace(line.subscription, customer_id=EVIL))
    email = billing_report_email(every_kind_invoice(lines=(evil,)), "Acme IT")
    assert "<b>" not in email.html and email.html.count("&lt;b&gt;&amp;") == 2
    assert email.text.count(EVIL) == 2


# --- billing-history view ------------------------------------------------------------------------


def test_the_view_names_every_line_kind_and_the_subscription_details() -> None:
    lines = invoice_view(every_kind_invoice()).model_dump(mode="json")["lines"]
    assert [line["kind"] for line in lines] == [kind.value for kind in LineKind]
    seats, late, period, credit, brought, carried = lines
    assert seats["subscription"] is None and seats["seats"] == 3 and seats["workspace_id"] == "ws_1"
    assert late["adjustment"] is True and late["month"] == "2026-05"
    assert period["subscription"] == {
        "subscription_id": "sub_1",
        "order_id": "ord_1",
        "customer_id": "dental-meyer",
        "sku": "backup-standard",
        "cycle": "P3Y/monthly",
        "quantity": 10,
        "period_first_day": "2026-06-23",
        "period_last_day": "2026-07-22",
        "charge_seq": 3,
        "price_list_version": "2026-01",
        "promotion": "three-year-10",
        "credit_for": None,
    }
    assert (period["unit_price"]["display"], period["amount"]["display"]) == ("USD 9.00", "USD 90.00")
    assert credit["amount"]["amount_minor"] == -87_123
    assert credit["subscription"]["credit_for"] == {
        "seq": 1,
        "period_first_day": "2026-03-15",
        "period_last_day": "2027-03-14",
        "amount": {"amount_minor": 120_000, "currency": "USD", "display": "USD 1200.00"},
    }
    assert (brought["amount"]["amount_minor"], carried["amount"]["amount_minor"]) == (-1_000, 78_123)
    assert brought["subscription"] is None and carried["subscription"] is None


def test_the_views_kind_names_are_the_domains() -> None:
    assert set(get_args(LineKindName)) == {kind.value for kind in LineKind}


# --- stored form of a line -----------------------------------------------------------------------


def test_every_line_round_trips_through_its_stored_form_and_seat_lines_keep_the_old_one() -> None:
    for line in every_kind_lines():
        assert _line_from_json(_line_to_json(line), "USD") == line
    seats, late = every_kind_lines()[:2]
    assert len(_line_to_json(seats)) == len(_line_to_json(late)) == 9  # as stored before kinds existed
    explicit = replace(seats, line_kind=LineKind.SEATS)
    assert _line_from_json(_line_to_json(explicit), "USD") == explicit


def test_a_line_stored_before_kinds_existed_reads_as_seats_or_adjustment() -> None:
    old = ["ws_1", "Acme", "anti-malware", 2, 3, 250, 500, "2026-05", 1]
    line = _line_from_json(old, "USD")
    assert line == InvoiceLine("ws_1", "Acme", "anti-malware", 2, 3, usd(250), usd(500), BillingMonth(2026, 5), True)
    assert line.kind is LineKind.SEAT_ADJUSTMENT and line.subscription is None


# --- download link -------------------------------------------------------------------------------


def test_the_reconciliation_link_is_offered_once_the_invoice_is_reported() -> None:
    invoices, reports = InMemoryInvoiceStore(), InMemoryUsageReports()
    history = BillingHistoryService(invoices=invoices, reports=reports)
    owner = PartnerIdentity("p-42", Role.OWNER, "owner")
    with pytest.raises(NotFound, match="no invoice"):
        history.reconciliation_link(owner, "2026-06")
    saved = invoices.save_invoice(every_kind_invoice())
    reports.put(reconciliation_key("p-42", JUNE), reconciliation_csv(saved))
    with pytest.raises(NotFound, match="reconciliation file for 2026-06 is not ready"):
        history.reconciliation_link(owner, "2026-06")  # written, but the invoice is not reported yet
    invoices.save_invoice(replace(saved, reported_at=datetime(2026, 7, 1, 0, 6, tzinfo=UTC)))
    link = history.reconciliation_link(owner, "2026-06")
    assert link.url.endswith("usage-reports/p-42/2026-06-reconciliation.csv?X-Amz-Expires=900")
    assert link.expires_in_seconds == 900
