"""The billing-history API's pagination and scoping, against DynamoDB Local."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from chalice.test import Client

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus
from billing_core.domain.money import Money
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from tests.helpers import auth_headers, new_partner_id

pytestmark = pytest.mark.integration


def store_invoice(wired: Services, partner: str, month: BillingMonth, seats: int) -> None:
    price = Money(250, "USD")
    line = InvoiceLine("ws1", "Acme", "anti-malware", seats, seats, price, price.times(seats), month)
    invoice = Invoice(
        partner,
        month,
        "USD",
        "2026-01",
        (line,),
        datetime(2026, 12, 1, tzinfo=UTC),
        status=InvoiceStatus.PAID,
        payment_id=f"pi_{month}",
    )
    wired.invoices.save_invoice(invoice)


def test_invoices_page_newest_first_and_cursors_stay_with_their_partner(
    settings: BillingSettings, client: Client
) -> None:
    wired = Services(settings)
    partner, other = new_partner_id(), new_partner_id()
    for number, month in enumerate((BillingMonth(2026, 8), BillingMonth(2026, 9), BillingMonth(2026, 10)), start=1):
        store_invoice(wired, partner, month, seats=number)
    store_invoice(wired, other, BillingMonth(2026, 10), seats=7)

    headers = auth_headers(partner)
    first = json.loads(client.http.get("/invoices?limit=2", headers=headers).body)
    assert [item["month"] for item in first["items"]] == ["2026-10", "2026-09"]
    assert first["next"]
    second = json.loads(client.http.get(f"/invoices?limit=2&after={first['next']}", headers=headers).body)
    assert [item["month"] for item in second["items"]] == ["2026-08"]
    assert second["next"] is None
    assert second["items"][0]["lines"][0]["amount"]["amount_minor"] == 250

    # A cursor of another partner's listing is refused, not followed.
    forged = json.loads(base64.urlsafe_b64decode(first["next"]))
    forged["pk"]["S"] = f"PARTNER#{other}"
    cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
    assert client.http.get(f"/invoices?after={cursor}", headers=headers).status_code == 400
    assert client.http.get("/invoices?after=garbage", headers=headers).status_code == 400
    assert client.http.get("/invoices?limit=0", headers=headers).status_code == 422
    assert client.http.get("/invoices?limit=abc", headers=headers).status_code == 422
