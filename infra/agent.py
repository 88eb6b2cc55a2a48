"""A minimal metering agent for the local stack: sends schema-v1 messages to the metering queue."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3

from infra import DEFAULT_STACK_NAME
from infra.lambda_runtime import wait_until_drained
from infra.processes import LocalStackError
from infra.template import LocalNames


def _queue(moto_port: int) -> tuple[Any, str]:
    sqs = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{moto_port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the moto server ignores credentials
    )
    try:
        url = sqs.get_queue_url(QueueName=LocalNames(DEFAULT_STACK_NAME).physical("MeteringQueue"))["QueueUrl"]
    except Exception as error:
        raise LocalStackError(f"no local metering queue on port {moto_port}; is `msp-billing up` running?") from error
    return sqs, url


def send_daily_report(
    moto_port: int, workspace_id: str, device_ids: list[str], observed_at: datetime | None = None
) -> str:
    """One agent's daily report; ``observed_at`` defaults to now (pass the local clock's now when it moved)."""
    sqs, url = _queue(moto_port)
    body = {
        "type": "daily_report",
        "schema_version": 1,
        "event_id": f"local-{uuid.uuid4().hex}",
        "workspace_id": workspace_id,
        "observed_at": (observed_at or datetime.now(UTC)).isoformat(),
        "device_ids": device_ids,
        "agent": {"product": "msp-billing local agent", "version": "1"},
    }
    return str(sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))["MessageId"])


def wait_until_consumed(moto_port: int, timeout_s: float = 30) -> None:
    sqs, url = _queue(moto_port)
    if wait_until_drained(sqs, [url], timeout_s):
        raise LocalStackError(f"the metering queue was not consumed within {timeout_s:.0f}s")
