"""A scripted month on the local stack: activate, meter, advance to the 1st, run; then re-run.

DynamoDB Local for state, the moto server for the charge queue (SQS), the usage report (S3) and the
e-mail (SES), the sandbox payment provider; the clock is a fixed test clock.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.request
import uuid
from datetime import UTC, datetime

import boto3
import pytest
from chalice.test import Client

from billing_core.adapters.dynamodb.models import PaymentItem, partner_pk
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus
from billing_core.schemas import ActivatePlanRequest, CreateWorkspaceRequest
from billing_core.services.metering import InboundMessage
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from infra.stack import LocalStack
from tests.fakes import FixedClock
from tests.helpers import auth_headers, new_partner_id

pytestmark = pytest.mark.integration
OCTOBER = BillingMonth(2026, 10)


def sighting(workspace_id: str, device_id: str, at: datetime) -> InboundMessage:
    body = {"type": "sighting", "event_id": uuid.uuid4().hex, "workspace_id": workspace_id, "device_id": device_id,
            "observed_at": at.isoformat()}  # fmt: skip
    return InboundMessage(uuid.uuid4().hex, json.dumps(body))


def emails_sent(local_stack: LocalStack) -> float:
    ses = boto3.client("ses", endpoint_url=local_stack.moto_url, region_name="us-east-1")
    return float(ses.get_send_quota()["SentLast24Hours"])


def test_a_scripted_month_is_invoiced_paid_reported_and_downloadable_once(
    local_stack: LocalStack, settings: BillingSettings, client: Client
) -> None:
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    wired = Services(settings, clock=clock)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    workspace = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Acme, Inc.", edition="business-security", max_devices=2)
    )

    # September is covered by the activation fee; October is the first billed month.
    assert wired.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 9)) is None
    clock.current = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
    october_day = clock.current
    outcome = wired.metering.record_batch([sighting(workspace.workspace_id, d, october_day) for d in ("a", "b", "c")])
    assert outcome.first_sightings_written == 3

    clock.current = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    sent_before = emails_sent(local_stack)
    month, dispatched = wired.monthly_run.dispatch_monthly_run()
    assert month == OCTOBER and dispatched >= 1
    invoice = wired.monthly_charge.charge_partner_for_month(partner, month)
    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    assert [(line.seats, line.devices) for line in invoice.lines] == [(2, 3)]  # capped at max_devices
    assert invoice.total.amount_minor == 2 * 350
    assert emails_sent(local_stack) == sent_before + 1

    # Re-running the month changes nothing: one payment, one e-mail.
    for _ in range(2):
        again = wired.monthly_charge.charge_partner_for_month(partner, month)
        assert again is not None and again.version == invoice.version
    payments = list(PaymentItem.query(partner_pk(partner), PaymentItem.sk.startswith("PAYMENT#month")))
    assert [(p.amount_minor, p.idempotency_key) for p in payments] == [(700, f"month:{partner}:2026-10:attempt-1")]
    assert emails_sent(local_stack) == sent_before + 1

    # The billing history and the usage report download, through the partner API.
    headers = auth_headers(partner)
    listed = json.loads(client.http.get("/invoices", headers=headers).body)
    assert [(i["month"], i["status"], i["total"]["amount_minor"]) for i in listed["items"]] == [
        ("2026-10", "paid", 700)
    ]
    link = json.loads(client.http.get("/invoices/2026-10/usage-report", headers=headers).body)
    assert link["expires_in_seconds"] <= 900 and "X-Amz-Expires=900" in link["url"]
    with urllib.request.urlopen(link["url"], timeout=10) as response:  # noqa: S310 - the local moto server
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    assert sorted((row["device_id"], row["status"]) for row in rows) == [
        ("a", "billed"), ("b", "billed"), ("c", "over_cap")]  # fmt: skip
    assert {row["workspace_name"] for row in rows} == {"Acme, Inc."}
    assert client.http.get("/invoices/2026-09", headers=headers).status_code == 404
    assert client.http.get("/invoices/2026-13", headers=headers).status_code == 422
    assert client.http.get("/invoices", headers=auth_headers(partner, Role.TECHNICIAN)).status_code == 403
    assert client.http.get("/invoices/2026-10", headers=auth_headers(new_partner_id())).status_code == 404


def test_dispatcher_and_worker_entry_points(local_stack: LocalStack) -> None:
    from infra import PROJECT_ROOT
    from infra.lambda_runtime import LocalLambdaContext, load_handler, sqs_event, sqs_record

    code = PROJECT_ROOT / "functions" / "monthly_charge"
    dispatch = load_handler(code, "app.dispatch", "monthly_charge_dispatch_under_test")
    charge = load_handler(code, "app.charge", "monthly_charge_charge_under_test")
    partner = new_partner_id()
    Services(BillingSettings()).activation.activate_monthly_billing(  # type: ignore[call-arg]
        PartnerIdentity(partner, Role.OWNER, "o"), "k", ActivatePlanRequest(payment_method="pm_card_visa")
    )
    result = dispatch({"month": "2026-10"}, LocalLambdaContext("dispatch"))
    assert result["month"] == "2026-10" and result["partners"] >= 1

    sqs = boto3.client("sqs", endpoint_url=local_stack.moto_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=local_stack.names.physical("ChargeQueue"))["QueueUrl"]
    bodies: list[dict[str, str]] = []
    while received := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        bodies += [json.loads(m["Body"]) for m in received]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
        )
    assert {"partner_id": partner, "month": "2026-10"} in bodies

    arn = "arn:aws:sqs:us-east-1:123456789012:charge"
    good = sqs_record("good", json.dumps({"partner_id": partner, "month": "2026-10"}), arn)
    bad = sqs_record("bad", json.dumps({"partner_id": partner, "month": "October"}), arn)
    response = charge(sqs_event([good, bad]), LocalLambdaContext("charge"))
    # Activated this month, so October is not billable: nothing to charge, and no failure either.
    assert response["batchItemFailures"] == [{"itemIdentifier": "bad"}]
