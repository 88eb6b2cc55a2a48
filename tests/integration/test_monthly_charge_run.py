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
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from chalice.test import Client

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import PaymentAttemptInProgress
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus
from billing_core.schemas import ActivatePlanRequest, CreateWorkspaceRequest
from billing_core.services.metering import InboundMessage
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from infra.stack import LocalStack
from tests.fakes import CrashingProvider, FixedClock, WorkerCrash
from tests.helpers import auth_headers, new_partner_id

pytestmark = pytest.mark.integration
OCTOBER = BillingMonth(2026, 10)


def sighting(workspace_id: str, device_id: str, at: datetime) -> InboundMessage:
    body = {
        "type": "sighting",
        "event_id": uuid.uuid4().hex,
        "workspace_id": workspace_id,
        "device_id": device_id,
        "observed_at": at.isoformat(),
    }
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

    clock.current = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
    # September is covered by the activation fee; October is the first billed month.
    assert wired.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 9)) is None
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
    stored = wired.invoices.load_invoice(partner, OCTOBER)
    assert stored is not None and stored.payment_id == invoice.payment_id
    paid_events = [e.details for e in stored.events if e.event_type == "invoice_paid"]
    assert [(e["amount"]["amount_minor"], e["idempotency_key"]) for e in paid_events] == [
        (700, f"month:{partner}:2026-10:attempt-1")
    ]
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
        ("a", "billed"),
        ("b", "billed"),
        ("c", "over_cap"),
    ]
    assert {row["workspace_name"] for row in rows} == {"Acme, Inc."}
    assert client.http.get("/invoices/2026-09", headers=headers).status_code == 404
    assert client.http.get("/invoices/2026-13", headers=headers).status_code == 422
    assert client.http.get("/invoices", headers=auth_headers(partner, Role.TECHNICIAN)).status_code == 403
    assert client.http.get("/invoices/2026-10", headers=auth_headers(new_partner_id())).status_code == 404

    # A device first reported for October after October was charged is late usage on November's
    # invoice; October's cap (2) is already full, so it adds a line with no extra seat.
    clock.current = datetime(2026, 11, 10, tzinfo=UTC)
    wired.metering.record_batch([sighting(workspace.workspace_id, "d", october_day)])
    clock.current = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    november = wired.monthly_charge.charge_partner_for_month(partner, BillingMonth(2026, 11))
    assert november is not None and november.status is InvoiceStatus.NOTHING_DUE
    assert [(str(line.month), line.seats, line.devices) for line in november.lines if line.adjustment] == [
        ("2026-10", 0, 1)
    ]


def test_dispatcher_and_worker_entry_points(local_stack: LocalStack) -> None:
    from infra import PROJECT_ROOT
    from infra.lambda_runtime import LocalLambdaContext, load_handler, sqs_event, sqs_record

    code = PROJECT_ROOT / "functions" / "monthly_charge"
    dispatch = load_handler(code, "app.dispatch", "monthly_charge_dispatch_under_test")
    charge = load_handler(code, "app.charge", "monthly_charge_charge_under_test")
    partner = new_partner_id()
    Services(BillingSettings.from_environment()).activation.activate_monthly_billing(
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


def test_a_worker_dying_after_the_provider_charged_is_reconciled_on_dynamodb_local(
    settings: BillingSettings,
) -> None:
    clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
    provider = CrashingProvider()
    wired = Services(settings, clock=clock, payments=provider)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    provider.crash_after_charge = False
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    workspace = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Acme", edition="anti-malware", max_devices=5)
    )
    clock.current = datetime(2026, 10, 2, tzinfo=UTC)
    wired.metering.record_batch([sighting(workspace.workspace_id, "a", clock.current)])
    clock.current = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    provider.crash_after_charge = True
    with pytest.raises(WorkerCrash):
        wired.monthly_charge.charge_partner_for_month(partner, OCTOBER)
    with pytest.raises(PaymentAttemptInProgress):  # redelivered at once: the dead worker's lease still runs
        wired.monthly_charge.charge_partner_for_month(partner, OCTOBER)
    clock.current += timedelta(minutes=9)  # SQS redelivers after the visibility timeout
    invoice = wired.monthly_charge.charge_partner_for_month(partner, OCTOBER)
    assert invoice is not None and invoice.status is InvoiceStatus.PAID
    charges = [key for key in provider.charges if key.startswith("month:")]
    assert charges == [f"month:{partner}:2026-10:attempt-1"]
    assert provider.calls == 2 and provider.found == 1  # activation, the crashed charge; the retry found it
    assert provider.successful_charges == 2  # the activation fee and October, once
