"""A minimal metering agent for the local stack: sends schema-v1 messages to the metering queue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infra import DEFAULT_STACK_NAME
from infra.lambda_runtime import wait_until_drained
from infra.processes import LocalStackError
from infra.template import LocalNames


def _client(service: str, port: int) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]  # one helper for two services
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local servers ignore credentials
    )


def _queue(moto_port: int) -> tuple[Any, str]:
    sqs = _client("sqs", moto_port)
    try:
        url = sqs.get_queue_url(QueueName=LocalNames(DEFAULT_STACK_NAME).physical("MeteringQueue"))["QueueUrl"]
    except Exception as error:
        raise LocalStackError(f"no local metering queue on port {moto_port}; is `msp-billing up` running?") from error
    return sqs, url


@dataclass(frozen=True)
class SentReport:
    message_id: str  # the SQS message id: the meter records a rejection under it
    event_id: str
    workspace_id: str
    device_ids: list[str]
    observed_at: datetime
    body: str


def send_daily_report(
    moto_port: int, workspace_id: str, device_ids: list[str], observed_at: datetime | None = None
) -> SentReport:
    """One agent's daily report; ``observed_at`` defaults to now (pass the local clock's now when it moved)."""
    sqs, url = _queue(moto_port)
    event_id = f"local-{uuid.uuid4().hex}"
    observed_at = observed_at or datetime.now(UTC)
    body = json.dumps(
        {
            "type": "daily_report",
            "schema_version": 1,
            "event_id": event_id,
            "workspace_id": workspace_id,
            "observed_at": observed_at.isoformat(),
            "device_ids": device_ids,
            "agent": {"product": "msp-billing local agent", "version": "1"},
        }
    )
    message_id = str(sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"])
    return SentReport(message_id, event_id, workspace_id, device_ids, observed_at, body)


def wait_until_consumed(moto_port: int, timeout_s: float = 30) -> None:
    sqs, url = _queue(moto_port)
    if wait_until_drained(sqs, [url], timeout_s):
        raise LocalStackError(f"the metering queue was not consumed within {timeout_s:.0f}s")


@dataclass
class ReportOutcome:
    """What the meter made of a consumed report: its rejection reason, or how each device counts this month."""

    rejection: str | None = None
    # Device id -> billability of its device-month (billable, late, unknown_workspace, not_on_plan).
    counted_now: dict[str, str] = field(default_factory=dict)  # first recorded by this report
    counted_before: dict[str, str] = field(default_factory=dict)  # already recorded by an earlier report
    # The meter's (test) clock when it recorded this report's devices: far from ``observed_at`` means the
    # report was stamped with another clock than the stack's.
    recorded_at: datetime | None = None

    @property
    def found(self) -> bool:
        return self.rejection is not None or bool(self.counted_now) or bool(self.counted_before)


def report_outcome(dynamodb_port: int, report: SentReport, meter_days: Iterable[date]) -> ReportOutcome:
    """Look up, in the usage table, what the meter recorded for ``report`` (call after the queue is consumed).
    The meter records a rejection under ``REJECTED#<its day>`` and the message id; ``meter_days`` are the days
    its clock may have shown (the test clock's, on either side of the wait). Raises ``LocalStackError`` if
    DynamoDB Local does not answer or holds no usage table."""
    from billing_core.domain.calendar import BillingMonth

    dynamodb = _client("dynamodb", dynamodb_port)
    table = LocalNames(DEFAULT_STACK_NAME).physical("UsageTable")
    try:
        for day in sorted(set(meter_days)):
            key = {"pk": {"S": f"REJECTED#{day.isoformat()}"}, "sk": {"S": report.message_id}}
            item = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
            if item:
                return ReportOutcome(rejection=item["reason"]["S"])
        outcome = ReportOutcome()
        month = BillingMonth.containing(report.observed_at)
        # A device-month is recorded once, by its first sighting, under WS# (billable) or NB# (not billable).
        keys = [
            {"pk": {"S": f"{prefix}#{report.workspace_id}#{month}"}, "sk": {"S": f"DEV#{device}"}}
            for prefix in ("WS", "NB")
            for device in dict.fromkeys(report.device_ids)
        ]
        for start in range(0, len(keys), 100):
            request = {table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
            while request:
                response = dynamodb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(table, []):
                    by_this_report = item["event_id"]["S"] == report.event_id
                    counted = outcome.counted_now if by_this_report else outcome.counted_before
                    counted[item["sk"]["S"].removeprefix("DEV#")] = item["billability"]["S"]
                    if by_this_report:  # PynamoDB's UTCDateTimeAttribute format
                        outcome.recorded_at = datetime.strptime(item["recorded_at"]["S"], "%Y-%m-%dT%H:%M:%S.%f%z")
                request = response.get("UnprocessedKeys") or {}
        if not outcome.found:  # rejected on a day the test clock did not show here (another clock file)
            outcome.rejection = _scan_for_rejection(dynamodb, table, report.message_id)
        return outcome
    except (BotoCoreError, ClientError) as error:
        raise LocalStackError(
            f"could not read the usage table from DynamoDB Local on 127.0.0.1:{dynamodb_port}: {error}"
        ) from error


def _scan_for_rejection(dynamodb: Any, table: str, message_id: str) -> str | None:
    arguments: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(pk, :rejected) AND sk = :message",
        "ExpressionAttributeValues": {":rejected": {"S": "REJECTED#"}, ":message": {"S": message_id}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.scan(**arguments)
        if page.get("Items"):
            return str(page["Items"][0]["reason"]["S"])
        if "LastEvaluatedKey" not in page:
            return None
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
