"""Big invoices without DynamoDB: how lines are packed into chunks, the size an invoice may not exceed, the billing
report of thousands of seat lines, and the billing history's listing of big invoices."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from billing_core.adapters.dynamodb.invoices import (
    LINES_BUDGET_BYTES,
    DynamoInvoiceStore,
    InvoiceTooLarge,
    chunk_encoded_lines,
)
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import Invoice, InvoiceLine
from billing_core.domain.money import Money
from billing_core.domain.reporting import EMAIL_SEAT_LINES_MAX, billing_report_email
from billing_core.services.history import LISTED_LINES_MAX, BillingHistoryService
from tests.fakes import InMemoryInvoiceStore, InMemoryUsageReports

OCTOBER = BillingMonth(2026, 10)


def seat_line(number: int, *, edition: str = "business-security", price: int = 350, name: str = "") -> InvoiceLine:
    unit = Money(price, "USD")
    seats = 1 + number % 3
    name = name or f"Customer {number:06d}"
    return InvoiceLine(f"ws_{number:06d}", name, edition, seats, seats + 1, unit, unit.times(seats), OCTOBER)


def invoice_of(lines: list[InvoiceLine], month: BillingMonth = OCTOBER) -> Invoice:
    return Invoice("p-big", month, "USD", "2026-01", tuple(lines), datetime(2026, 11, 1, 0, 5, tzinfo=UTC))


# --- chunks ----------------------------------------------------------------------------------------


def test_lines_are_packed_in_order_into_chunks_of_at_most_the_limit() -> None:
    encoded = [json.dumps([n, "x" * (n % 7)], separators=(",", ":")) for n in range(1_000)]
    chunks = chunk_encoded_lines(encoded, 1_000)
    assert all(len(chunk.encode()) <= 1_000 for chunk in chunks)
    assert [line for chunk in chunks for line in json.loads(chunk)] == [json.loads(line) for line in encoded]
    # Greedy: no chunk could have taken the next chunk's first line.
    for chunk, following in itertools.pairwise(chunks):
        assert len(chunk.encode()) + 1 + len(json.dumps(json.loads(following)[0], separators=(",", ":"))) > 1_000


def test_a_chunk_is_filled_to_the_exact_byte_and_one_byte_more_starts_the_next() -> None:
    line = '["' + "a" * 96 + '"]'  # 100 bytes
    assert chunk_encoded_lines([line] * 3, 2 + 3 * 100 + 2) == ["[" + ",".join([line] * 3) + "]"]  # 304 bytes
    assert len(chunk_encoded_lines([line] * 3, 303)) == 2
    assert chunk_encoded_lines([], 303) == []
    with pytest.raises(InvoiceTooLarge):  # a line no chunk can hold
        chunk_encoded_lines([line], 101)


def test_an_invoice_beyond_one_transaction_is_refused_before_anything_is_written() -> None:
    """Long non-Latin workspace names (200 characters, 3 bytes each in UTF-8) make about 690 bytes a line: 6,500
    lines exceed the 4 MB a transaction can create. Refused by the adapter before any call to DynamoDB (the
    store here has no reachable endpoint)."""
    lines = [seat_line(n, name="漢" * 198 + f"{n % 100:02d}") for n in range(6_500)]
    with pytest.raises(InvoiceTooLarge, match=f"exceed the {LINES_BUDGET_BYTES} bytes"):
        DynamoInvoiceStore("us-east-1").save_invoice(invoice_of(lines))


# --- the billing report e-mail ---------------------------------------------------------------------


def test_a_billing_report_of_thousands_of_seat_lines_sums_them_per_edition_and_points_to_the_reconciliation_file() -> (
    None
):
    editions = (("business-security", 350), ("anti-malware", 250))
    lines = [seat_line(n, edition=editions[n % 2][0], price=editions[n % 2][1]) for n in range(5_000)]
    late = InvoiceLine(
        "ws_000001", "Customer 000001: late usage for 2026-09", "anti-malware", 1, 1, Money(250, "USD"),
        Money(250, "USD"), BillingMonth(2026, 9), adjustment=True,
    )  # fmt: skip
    invoice = invoice_of([*lines, late])
    email = billing_report_email(invoice, "Big MSP")

    assert "5,001 workspace lines, summed above per edition" in email.text
    assert "reconciliation file (CSV)" in email.text and 'class="lines-note"' in email.html
    assert email.text.count("\n- ") == 3  # usage per edition (2), late usage (1)
    assert email.html.count("<tr>\n  <td>") == 3
    by_edition = {
        edition: sum(line.amount.amount_minor for line in lines if line.edition == edition)
        for edition in ("anti-malware", "business-security")
    }
    assert f"2,500 workspaces: edition anti-malware, {sum(1 + n % 3 for n in range(1, 5_000, 2))} seats" in email.text
    assert Money(by_edition["anti-malware"], "USD").format() in email.text
    assert Money(by_edition["business-security"], "USD").format() in email.text
    assert "[Adjustments for late usage] 1 late-usage lines: edition anti-malware, 1 seats" in email.text
    assert f"Total: {invoice.total.format()}" in email.text
    assert len(email.html.encode()) + len(email.text.encode()) < 10_000


def test_a_billing_report_up_to_the_limit_lists_every_seat_line_as_before() -> None:
    lines = [seat_line(n) for n in range(EMAIL_SEAT_LINES_MAX)]
    email = billing_report_email(invoice_of(lines), "MSP")
    assert email.text.count("\n- ") == EMAIL_SEAT_LINES_MAX and "summed above" not in email.text
    assert "lines-note" not in email.html and '</table>\n<p class="payment-status">' in email.html
    summed = billing_report_email(invoice_of([*lines, seat_line(EMAIL_SEAT_LINES_MAX)]), "MSP")
    assert f"{EMAIL_SEAT_LINES_MAX + 1} workspace lines" in summed.text


# --- the billing history's listing -----------------------------------------------------------------


def test_the_listing_carries_lines_of_small_invoices_and_only_totals_and_counts_of_big_ones() -> None:
    invoices = InMemoryInvoiceStore(inline_lines_max=500)
    history = BillingHistoryService(invoices=invoices, reports=InMemoryUsageReports())
    owner = PartnerIdentity("p-big", Role.OWNER, "owner")
    for month, count in ((BillingMonth(2026, 8), LISTED_LINES_MAX), (BillingMonth(2026, 9), LISTED_LINES_MAX + 1)):
        invoices.save_invoice(invoice_of([seat_line(n) for n in range(count)], month))
    invoices.save_invoice(invoice_of([seat_line(n) for n in range(5_000)]))  # October: lines stored apart

    page = history.list_invoices(owner, limit=10, after=None)
    listed = {item.month: item for item in page.items}
    assert listed["2026-08"].lines is not None and len(listed["2026-08"].lines) == LISTED_LINES_MAX
    assert listed["2026-09"].lines is None and listed["2026-09"].line_count == LISTED_LINES_MAX + 1
    october = listed["2026-10"]
    assert october.lines is None and october.line_count == 5_000
    assert october.total.amount_minor == sum(350 * (1 + n % 3) for n in range(5_000))
    single = history.get_invoice(owner, "2026-10")
    assert single.lines is not None and len(single.lines) == single.line_count == 5_000
    assert len(page.model_dump_json()) < 25_000  # August's 50 lines, then two headers
