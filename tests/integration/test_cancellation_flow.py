"""Cancellation on the local stack: the partner API (Chalice routing, real handlers), DynamoDB Local, the
one-time schedule kept by moto's EventBridge Scheduler and fired by the local test clock, the meter and
charge functions fed by their queues, the template's cron rule for the monthly runs.

The tests move the shared test clock forward only (in file order); the fixture resets it afterwards so
the rest of the session runs at real time again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from billing_core.adapters.dynamodb.models import PlanItem, partner_pk
from billing_core.adapters.dynamodb.repositories import PLAN_SK
from billing_core.adapters.plan_end_scheduler import plan_end_schedule_name
from billing_core.domain.calendar import BillingMonth
from billing_core.wiring import services
from infra.local_schedules import LocalScheduleRuntime
from infra.stack import LocalStack
from tests.helpers import auth_headers, body, new_partner_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def schedules(local_stack: LocalStack) -> Iterator[LocalScheduleRuntime]:
    sqs = boto3.client("sqs", endpoint_url=local_stack.moto_url, region_name="us-east-1")
    for queue in ("MeteringQueue", "ChargeQueue"):  # leftovers of other tests' runs are not ours to deliver
        sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName=local_stack.names.physical(queue))["QueueUrl"])
    # The monthly runs this module fires visit every plan in the ChargeablePlans index; other modules'
    # partners (hundreds, from the matrix and the fuzzer) are not this story's and would only slow it down.
    for partner_id in list(services().store.chargeable_partners()):  # services() binds the tables
        PlanItem.get(partner_pk(partner_id), PLAN_SK, consistent_read=True).update(
            actions=[PlanItem.charge_index.remove()]
        )
    local_stack.start_event_sources()
    yield local_stack.schedules()
    local_stack.stop_event_sources()
    for path in (local_stack.clock.path, local_stack.clock.path.with_suffix(".lock")):
        path.unlink(missing_ok=True)  # back to real time for the rest of the session


def call(client: Client, method: str, path: str, partner: str, data: Any = None, **headers: str) -> Any:
    response = getattr(client.http, method)(
        path, headers=auth_headers(partner, **headers), body=body(data) if data is not None else None
    )
    return response.status_code, json.loads(response.body or b"null")


def active_partner(client: Client, devices_cap: int = 3) -> tuple[str, str]:
    partner = new_partner_id()
    status, _ = call(
        client,
        "post",
        "/plan/activation",
        partner,
        {"payment_method": "pm_card_visa", "billing_email": f"billing@{partner}.example"},
        **{"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201
    status, workspace = call(
        client, "post", "/workspaces", partner, {"name": "Acme", "edition": "anti-malware", "max_devices": devices_cap}
    )
    assert status == 201
    return partner, workspace["workspace_id"]


def schedule_exists(local_stack: LocalStack, partner: str, ends_on: str) -> bool:
    scheduler = boto3.client("scheduler", endpoint_url=local_stack.moto_url, region_name="us-east-1")
    try:
        scheduler.get_schedule(Name=plan_end_schedule_name(partner, date.fromisoformat(ends_on)))
    except ClientError:
        return False
    return True


def report_devices(local_stack: LocalStack, workspace_id: str, devices: list[str], at: datetime) -> None:
    sqs = boto3.client("sqs", endpoint_url=local_stack.moto_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=local_stack.names.physical("MeteringQueue"))["QueueUrl"]
    message = {
        "type": "daily_report",
        "schema_version": 1,
        "event_id": uuid.uuid4().hex,
        "workspace_id": workspace_id,
        "observed_at": at.isoformat(),
        "device_ids": devices,
    }
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))
    assert local_stack.wait_for_queues(30)


def end_event(partner: str, ends_on: str) -> dict[str, str]:
    return {"schema": "plan-end/v1", "partner_id": partner, "ends_on": ends_on}


def test_cancel_reactivate_then_a_stale_schedule_fires_and_nothing_changes(
    local_stack: LocalStack, schedules: LocalScheduleRuntime, client: Client
) -> None:
    partner, workspace = active_partner(client)
    _, options = call(client, "get", "/plan/cancellation/options", partner)
    ends_on = options["options"][0]["ends_on"]  # the end of this month
    status, cancelled = call(client, "post", "/plan/cancellation", partner, {"ends_on": ends_on})
    assert status == 200 and cancelled["state"] == "cancellation_scheduled"
    assert [w["workspace_id"] for w in cancelled["workspaces_losing_protection"]] == [workspace]
    assert schedule_exists(local_stack, partner, ends_on)
    _, licence = call(client, "get", f"/workspaces/{workspace}/licence", partner)
    assert (licence["status"], licence["ends_on"]) == ("active", ends_on)

    status, reactivated = call(client, "delete", "/plan/cancellation", partner)
    assert status == 200 and reactivated["state"] == "active" and reactivated["cancellation_ends_on"] is None
    assert not schedule_exists(local_stack, partner, ends_on)
    _, plan_before = call(client, "get", "/plan", partner)

    # The clock passes the end date; then a stale copy of the deleted schedule fires anyway.
    schedules.advance_to(datetime.fromisoformat(ends_on).replace(tzinfo=UTC) + timedelta(days=1, minutes=1))
    assert local_stack.invoke("PlanEndFunction", end_event(partner, ends_on))["outcome"] == "stale"
    _, plan_after = call(client, "get", "/plan", partner)
    assert plan_after["state"] == "active" and plan_after["workspaces_on_plan"] == plan_before["workspaces_on_plan"]
    _, licence = call(client, "get", f"/workspaces/{workspace}/licence", partner)
    assert licence["status"] == "active" and licence["ends_on"] is None


def test_cancelled_plan_ends_on_time_its_final_month_is_invoiced_and_no_later_month_ever_is(
    local_stack: LocalStack, schedules: LocalScheduleRuntime, client: Client
) -> None:
    partner, workspace = active_partner(client, devices_cap=3)
    activation_month = BillingMonth.containing(schedules.clock.now())
    final_month = activation_month.next()  # the first billed month is also the last
    schedules.advance_to(final_month.starts_at + timedelta(days=9, hours=12))
    report_devices(local_stack, workspace, ["d1", "d2", "d3", "d4"], schedules.clock.now())

    _, options = call(client, "get", "/plan/cancellation/options", partner)
    ends_on = options["options"][0]["ends_on"]
    assert ends_on == final_month.last_day.isoformat()
    assert options["options"][0]["final_invoice_on"] == final_month.next().first_day.isoformat()
    status, cancelled = call(client, "post", "/plan/cancellation", partner, {"ends_on": ends_on})
    assert status == 200
    assert [(w["workspace_id"], w["devices_this_month"]) for w in cancelled["workspaces_losing_protection"]] == [
        (workspace, 4)
    ]
    assert cancelled["licences_end_at"].startswith(final_month.next().first_day.isoformat())

    # Midnight after the last day: the schedule fires, every licence ends, the plan is cancelled.
    fired = schedules.advance_to(final_month.next().starts_at + timedelta(minutes=1))
    assert any(plan_end_schedule_name(partner, date.fromisoformat(ends_on)) in entry for entry in fired)
    assert not schedule_exists(local_stack, partner, ends_on)  # ActionAfterCompletion: DELETE
    _, plan = call(client, "get", "/plan", partner)
    assert (plan["state"], plan["ended_on"], plan["workspaces_on_plan"]) == ("cancelled", ends_on, [])
    _, licence = call(client, "get", f"/workspaces/{workspace}/licence", partner)
    assert (licence["status"], licence["valid_through"]) == ("ended", ends_on)
    status, _ = call(client, "delete", "/plan/cancellation", partner)
    assert status == 409  # too late to reactivate

    # 00:05 on the 1st: the template's cron rule runs the month; the final month is invoiced.
    schedules.advance_to(final_month.next().starts_at + timedelta(minutes=10))
    status, invoice = call(client, "get", f"/invoices/{final_month}", partner)
    assert status == 200 and invoice["status"] == "paid"
    assert [(line["workspace_id"], line["seats"], line["devices"]) for line in invoice["lines"]] == [(workspace, 3, 4)]

    # Two more months of runs (1st, 3rd, 5th, 7th): nothing is ever invoiced again.
    schedules.advance_to(final_month.next().next().next().starts_at + timedelta(days=8))
    _, history = call(client, "get", "/invoices", partner)
    assert [item["month"] for item in history["items"]] == [str(final_month)]
    # The finaliser firing again (a duplicate delivery) changes nothing.
    assert local_stack.invoke("PlanEndFunction", end_event(partner, ends_on))["outcome"] == "already_ended"
    _, plan_again = call(client, "get", "/plan", partner)
    assert {**plan_again, "month": None} == {**plan, "month": None}  # only the current month moved on


def test_cancellation_errors_and_replacing_the_date(
    local_stack: LocalStack, schedules: LocalScheduleRuntime, client: Client
) -> None:
    inactive = new_partner_id()
    status, error = call(client, "post", "/plan/cancellation", inactive, {"ends_on": "2030-01-31"})
    assert status == 409 and error["error"]["code"] == "plan_not_active"

    partner, _ = active_partner(client)
    _, options = call(client, "get", "/plan/cancellation/options", partner)
    offered = [option["ends_on"] for option in options["options"]]
    status, error = call(client, "post", "/plan/cancellation", partner, {"ends_on": "2030-01-30"})
    assert status == 422 and error["error"]["fields"][0]["field"] == "ends_on"
    assert all(day in error["error"]["fields"][0]["message"] for day in offered)
    status, error = call(client, "post", "/plan/cancellation", partner, {"ends_on": "tomorrow"})
    assert status == 422 and error["error"]["fields"][0]["field"] == "ends_on"
    # A date is "YYYY-MM-DD": not a number of seconds, and not a timestamp that happens to be midnight.
    midnight = f"{offered[0]}T00:00:00"
    for not_a_date in (1893456000, midnight):
        status, error = call(client, "post", "/plan/cancellation", partner, {"ends_on": not_a_date})
        assert status == 422 and error["error"]["fields"][0]["field"] == "ends_on", (not_a_date, error)
    _, options_after = call(client, "get", "/plan/cancellation/options", partner)
    assert options_after["scheduled_ends_on"] is None
    status, error = call(client, "delete", "/plan/cancellation", partner)
    assert status == 409 and error["error"]["code"] == "no_cancellation_scheduled"

    # Cancelling twice replaces the date and its schedule.
    assert call(client, "post", "/plan/cancellation", partner, {"ends_on": offered[2]})[0] == 200
    status, replaced = call(client, "post", "/plan/cancellation", partner, {"ends_on": offered[1]})
    assert status == 200 and replaced["ends_on"] == offered[1]
    assert schedule_exists(local_stack, partner, offered[1]) and not schedule_exists(local_stack, partner, offered[2])
    _, options = call(client, "get", "/plan/cancellation/options", partner)
    assert options["scheduled_ends_on"] == offered[1]
    # A malformed schedule event is refused (the scheduler retries it, then parks it in the DLQ).
    with pytest.raises(ValueError, match="ends_on"):
        local_stack.invoke("PlanEndFunction", {"schema": "plan-end/v1", "partner_id": partner, "ends_on": "soon"})


def test_late_usage_after_the_final_invoice_gets_a_closing_invoice_and_the_plan_leaves_the_runs_again(
    local_stack: LocalStack, schedules: LocalScheduleRuntime, client: Client
) -> None:
    """Issue 27, item 2: an agent that was offline reports a device of the final month after the final
    invoice was made and the plan had left the monthly runs. Before, that late usage was queued for an
    invoice that never came; now it brings the plan back into the runs, the next run makes a closing invoice
    with the adjustment line and charges it, and the run after retires the plan again."""
    partner, workspace = active_partner(client, devices_cap=5)
    activation_month = BillingMonth.containing(schedules.clock.now())
    final_month = activation_month.next()
    schedules.advance_to(final_month.starts_at + timedelta(days=3))
    report_devices(local_stack, workspace, ["d1", "d2", "d3"], schedules.clock.now())
    ends_on = final_month.last_day.isoformat()
    assert call(client, "post", "/plan/cancellation", partner, {"ends_on": ends_on})[0] == 200
    # The final invoice is made on the 1st; the runs of the next month retire the plan.
    schedules.advance_to(final_month.next().next().starts_at + timedelta(days=8))
    _, history = call(client, "get", "/invoices", partner)
    assert [(item["month"], item["status"]) for item in history["items"]] == [(str(final_month), "paid")]
    assert partner not in set(services().store.chargeable_partners())

    # Weeks later the agent comes back online and reports a device it saw in the final month.
    recorded_in = BillingMonth.containing(schedules.clock.now())
    seen_in_final_month = final_month.starts_at + timedelta(days=20)
    report_devices(local_stack, workspace, ["d1", "d4"], seen_in_final_month)
    assert partner in set(services().store.chargeable_partners())  # back in the runs for its closing invoice

    # The run on the 1st makes the closing invoice of the month the late usage was recorded in, and charges it.
    schedules.advance_to(recorded_in.next().starts_at + timedelta(minutes=10))
    status, closing = call(client, "get", f"/invoices/{recorded_in}", partner)
    assert status == 200 and closing["status"] == "paid", closing
    assert [(line["workspace_id"], line["month"], line["seats"], line["adjustment"]) for line in closing["lines"]] == [
        (workspace, str(final_month), 1, True)
    ]
    assert closing["total"] == closing["lines"][0]["amount"] and closing["total"]["amount_minor"] > 0
    # The next month's run finds nothing to bill and retires the plan again; nothing else is ever invoiced.
    schedules.advance_to(recorded_in.next().next().starts_at + timedelta(days=8))
    _, history = call(client, "get", "/invoices", partner)
    assert [item["month"] for item in history["items"]] == [str(recorded_in), str(final_month)]
    assert partner not in set(services().store.chargeable_partners())
