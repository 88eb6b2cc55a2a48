"""The meter function's handler with SQS-shaped batches, against DynamoDB Local over the wire."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chalice.test import Client
from pynamodb.exceptions import PutError

from billing_core.adapters.dynamodb.usage import DeviceMonthItem, LateUsageItem, RejectionItem
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.schemas import ActivatePlanRequest, CreateWorkspaceRequest
from billing_core.wiring import services
from infra import PROJECT_ROOT
from infra.lambda_runtime import Handler, LocalLambdaContext, load_handler, sqs_event, sqs_record
from infra.stack import LocalStack
from tests.helpers import auth_headers, new_partner_id

pytestmark = pytest.mark.integration
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:msp-test-MeteringQueue"


@pytest.fixture(scope="module")
def meter(local_stack: LocalStack) -> Handler:
    return load_handler(PROJECT_ROOT / "functions" / "meter", "app.handler", "meter_app_under_test")


def partner_with_workspace(max_devices: int) -> tuple[str, str]:
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner")
    wired = services()
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    workspace = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Acme", edition="anti-malware", max_devices=max_devices)
    )
    return partner, workspace.workspace_id


def message(
    workspace_id: str, *, device: str | None = None, devices: list[str] | None = None, at: datetime | None = None
) -> dict[str, Any]:
    observed = (at or datetime.now(UTC)).isoformat()
    body: dict[str, Any] = {"event_id": uuid.uuid4().hex, "workspace_id": workspace_id, "observed_at": observed}
    if devices is not None:
        body |= {"type": "daily_report", "device_ids": devices}
    else:
        body |= {"type": "sighting", "device_id": device}
    return sqs_record(uuid.uuid4().hex, json.dumps(body), QUEUE_ARN)


def invoke(meter: Handler, records: list[dict[str, Any]]) -> list[str]:
    response = meter(sqs_event(records), LocalLambdaContext("meter"))
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def devices_recorded(workspace_id: str, prefix: str = "WS", month: BillingMonth | None = None) -> set[str]:
    month = month or BillingMonth.containing(datetime.now(UTC))
    return {item.sk.removeprefix("DEV#") for item in DeviceMonthItem.query(f"{prefix}#{workspace_id}#{month}")}


def test_a_batch_delivered_twice_counts_each_device_once_and_plan_status_shows_capped_seats(
    meter: Handler, client: Client
) -> None:
    partner, workspace = partner_with_workspace(max_devices=2)
    batch = [
        message(workspace, device="d1"),
        message(workspace, devices=["d1", "d2", "d3"]),
        message(workspace, device="d2"),
    ]
    assert invoke(meter, batch) == []
    assert invoke(meter, batch) == []
    assert devices_recorded(workspace) == {"d1", "d2", "d3"}
    status = json.loads(client.http.get("/plan", headers=auth_headers(partner)).body)
    (on_plan,) = status["workspaces_on_plan"]
    assert (on_plan["devices_this_month"], on_plan["seats_this_month"]) == (3, 2)


def test_a_mixed_batch_rejects_bad_messages_and_records_unknown_workspaces_as_not_billable(
    meter: Handler,
) -> None:
    _, workspace = partner_with_workspace(max_devices=10)
    future = message(workspace, device="d-future", at=datetime.now(UTC) + timedelta(minutes=10))
    malformed = sqs_record("bad-json", "{not json", QUEUE_ARN)
    invalid = sqs_record(
        "no-device",
        json.dumps(
            {
                "type": "sighting",
                "event_id": "e",
                "workspace_id": workspace,
                "observed_at": datetime.now(UTC).isoformat(),
            }
        ),
        QUEUE_ARN,
    )
    unknown_workspace = f"ws_unknown_{uuid.uuid4().hex[:8]}"
    batch = [message(workspace, device="d1"), future, malformed, invalid, message(unknown_workspace, device="x1")]
    assert invoke(meter, batch) == []
    assert devices_recorded(workspace) == {"d1"}
    assert devices_recorded(unknown_workspace, prefix="NB") == {"x1"}
    today = f"REJECTED#{datetime.now(UTC).date().isoformat()}"
    reasons = {item.sk: item.reason for item in RejectionItem.query(today)}
    assert {future["messageId"], "bad-json", "no-device"} <= set(reasons)
    assert "device_id" in reasons["no-device"]
    assert "ahead of the server clock" in reasons[future["messageId"]]


def test_a_throttled_write_fails_only_its_record(meter: Handler, monkeypatch: pytest.MonkeyPatch) -> None:
    _, workspace = partner_with_workspace(max_devices=10)
    original_save: Callable[..., Any] = DeviceMonthItem.save

    def throttled_save(self: DeviceMonthItem, *args: Any, **kwargs: Any) -> Any:
        if self.sk == "DEV#d-throttled":
            throttling = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}
            raise PutError("Failed to put item", cause=ClientError(throttling, "PutItem"))  # type: ignore[arg-type]
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(DeviceMonthItem, "save", throttled_save)
    throttled = message(workspace, device="d-throttled")
    batch = [message(workspace, device="d1"), throttled, message(workspace, device="d2")]
    assert invoke(meter, batch) == [throttled["messageId"]]
    assert devices_recorded(workspace) == {"d1", "d2"}
    monkeypatch.undo()
    assert invoke(meter, [throttled]) == []
    assert devices_recorded(workspace) == {"d1", "d2", "d-throttled"}


def test_a_sighting_for_a_charged_month_becomes_late_usage(meter: Handler) -> None:
    partner, workspace = partner_with_workspace(max_devices=10)
    store = services().activation.plans
    now = datetime.now(UTC)
    previous = BillingMonth.containing(now.replace(day=1) - timedelta(days=1))
    store.save_plan(
        replace(store.load_plan(partner), last_charged_month=previous),
        audit=AuditEvent(partner, "month_charged", now, "test"),
    )
    # The workspace joined the plan just now, so back-date its join to make last month's sighting count.
    wired = services()
    workspace_entity = wired.workspaces.workspaces.load_workspace(workspace)
    assert workspace_entity is not None
    wired.workspaces.workspaces.save_workspace(
        replace(workspace_entity, joined_plan_at=previous.starts_at),
        audit=AuditEvent(partner, "test_backdate", now, "test"),
    )
    last_month = previous.starts_at + timedelta(days=3)
    assert invoke(meter, [message(workspace, device="late-1", at=last_month)]) == []
    assert invoke(meter, [message(workspace, device="late-1", at=last_month + timedelta(hours=2))]) == []
    late = [(item.month, item.device_id) for item in LateUsageItem.query(f"LATE#{partner}")]
    assert late == [(str(previous), "late-1")]


def test_a_past_month_sighting_is_not_written_if_the_month_was_closed_after_it_was_classified() -> None:
    """The race between a metering batch and the monthly run: the batch read the plan before the run
    closed the month, and writes after the run counted. The write must fail (and be retried as late
    usage), not slip into a month that was already invoiced."""
    from billing_core.domain.errors import TransientFailure
    from billing_core.domain.metering import Billability, ChargedMonthCheck, Sighting

    partner, workspace = partner_with_workspace(max_devices=10)
    wired = services()
    last_month = BillingMonth.containing(datetime.now(UTC).replace(day=1) - timedelta(days=1))
    plan = wired.store.load_plan(partner)
    wired.store.close_month(plan, last_month)  # the run closes the month...
    seen = last_month.starts_at + timedelta(days=2)
    stale = ChargedMonthCheck(partner, None)  # ...after metering had read "nothing charged yet"
    sighting = Sighting("e-race", workspace, "d-race", seen)
    with pytest.raises(TransientFailure):
        wired.usage.record_first_sighting(sighting, Billability.BILLABLE, partner, datetime.now(UTC), None, stale)
    assert "d-race" not in devices_recorded(workspace, month=last_month)
    fresh = ChargedMonthCheck(partner, last_month)
    assert wired.usage.record_first_sighting(
        sighting, Billability.LATE, partner, datetime.now(UTC), last_month.next(), fresh
    )
    assert wired.usage.late_devices(partner, last_month.next())[0].devices == 1
    # Written once: the same device-month again is a no-op.
    assert not wired.usage.record_first_sighting(
        sighting, Billability.LATE, partner, datetime.now(UTC), last_month.next(), fresh
    )
