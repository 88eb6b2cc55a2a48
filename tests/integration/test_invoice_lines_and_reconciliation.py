"""Invoices with every line kind on the local stack: the DynamoDB store keeps every line and its
subscription detail (and still reads lines stored before kinds existed), and the reconciliation file is
written by the monthly run next to the usage report and downloaded through the partner API."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from chalice.test import Client

from billing_core.adapters.dynamodb.models import InvoiceItem, partner_pk
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceLine, InvoiceStatus, LineKind
from billing_core.domain.reporting import RECONCILIATION_COLUMNS, reconciliation_csv
from billing_core.schemas import ActivatePlanRequest
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from tests.fakes import FixedClock
from tests.helpers import auth_headers, new_partner_id
from tests.invoice_samples import JUNE, every_kind_invoice, usd

pytestmark = pytest.mark.integration


def test_an_invoice_with_every_line_kind_is_stored_and_loaded_back_equal(settings: BillingSettings) -> None:
    wired = Services(settings)
    partner = new_partner_id()
    invoice = every_kind_invoice(partner)
    saved = wired.invoices.save_invoice(invoice)
    loaded = wired.invoices.load_invoice(partner, JUNE)
    assert loaded is not None and loaded == saved
    assert replace(loaded, version=None) == invoice
    assert [line.kind for line in loaded.lines] == list(LineKind)
    assert loaded.lines == invoice.lines  # subscription details included, credited charge and all
    (listed,), _ = wired.invoices.list_invoices(partner, limit=5, after=None)
    assert listed == saved


def test_lines_stored_before_line_kinds_existed_still_read_as_seats_and_adjustments(settings: BillingSettings) -> None:
    partner = new_partner_id()
    InvoiceItem(
        pk=partner_pk(partner),
        sk=f"INVOICE#{JUNE}",
        partner_id=partner,
        month=str(JUNE),
        status="paid",
        currency="USD",
        price_list_version="2026-01",
        total_minor=1_000,
        lines=[
            ["ws_1", "Acme", "anti-malware", 3, 4, 250, 750, "2026-06", 0],
            ["ws_1", "Acme: late usage for 2026-05", "anti-malware", 1, 1, 250, 250, "2026-05", 1],
        ],
        created_at=datetime(2026, 7, 1, tzinfo=UTC),
    ).save()
    loaded = Services(settings).invoices.load_invoice(partner, JUNE)
    assert loaded is not None
    assert loaded.lines == (
        InvoiceLine("ws_1", "Acme", "anti-malware", 3, 4, usd(250), usd(750), JUNE),
        InvoiceLine(
            "ws_1",
            "Acme: late usage for 2026-05",
            "anti-malware",
            1,
            1,
            usd(250),
            usd(250),
            BillingMonth(2026, 5),
            True,
        ),
    )
    assert [line.kind for line in loaded.lines] == [LineKind.SEATS, LineKind.SEAT_ADJUSTMENT]


def test_the_run_writes_the_reconciliation_file_and_the_api_links_it(settings: BillingSettings, client: Client) -> None:
    clock = FixedClock(datetime(2026, 6, 2, 9, 0, tzinfo=UTC))
    wired = Services(settings, clock=clock)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    # June's invoice as the run rates it once subscriptions are billed: settled (nothing due), not reported.
    wired.invoices.save_invoice(every_kind_invoice(partner))
    headers = auth_headers(partner)

    not_ready = client.http.get("/invoices/2026-06/reconciliation", headers=headers)
    assert not_ready.status_code == 404, not_ready.body
    assert "not ready" in json.loads(not_ready.body)["error"]["message"]

    viewed = json.loads(client.http.get("/invoices/2026-06", headers=headers).body)
    assert [line["kind"] for line in viewed["lines"]] == [kind.value for kind in LineKind]
    credit = viewed["lines"][3]["subscription"]
    assert (credit["subscription_id"], credit["order_id"], credit["period_last_day"]) == (
        "sub_1",
        "ord_1",
        "2027-03-14",
    )
    assert credit["credit_for"]["amount"]["amount_minor"] == 120_000

    clock.current = datetime(2026, 7, 1, 0, 10, tzinfo=UTC)
    reported = wired.monthly_charge.charge_partner_for_month(partner, JUNE)
    assert reported is not None and reported.reported_at is not None
    assert reported.status is InvoiceStatus.NOTHING_DUE

    response = client.http.get("/invoices/2026-06/reconciliation", headers=headers)
    assert response.status_code == 200, response.body
    link = json.loads(response.body)
    assert link["expires_in_seconds"] <= 900 and "X-Amz-Expires=900" in link["url"]
    assert f"usage-reports/{partner}/2026-06-reconciliation.csv" in link["url"]
    with urllib.request.urlopen(link["url"], timeout=10) as download:  # noqa: S310 - the local moto server
        text = download.read().decode()
    assert text == reconciliation_csv(reported)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(RECONCILIATION_COLUMNS)
    assert [(row["line_kind"], row["amount"]) for row in rows] == [
        ("seats", "7.50"),
        ("seat_adjustment", "2.50"),
        ("licence_period", "90.00"),
        ("change_credit", "-871.23"),
        ("credit_brought_forward", "-10.00"),
        ("credit_carried_forward", "781.23"),
    ]
    assert rows[3]["credit_for_first_day"] == "2026-03-15" and rows[3]["credit_for_amount"] == "1200.00"
    # The usage report of the same invoice is still there, beside it.
    assert client.http.get("/invoices/2026-06/usage-report", headers=headers).status_code == 200

    assert client.http.get("/invoices/2026-05/reconciliation", headers=headers).status_code == 404
    assert client.http.get("/invoices/2026-13/reconciliation", headers=headers).status_code == 422
    technician = auth_headers(partner, Role.TECHNICIAN)
    assert client.http.get("/invoices/2026-06/reconciliation", headers=technician).status_code == 403
    other = auth_headers(new_partner_id())
    assert client.http.get("/invoices/2026-06/reconciliation", headers=other).status_code == 404
