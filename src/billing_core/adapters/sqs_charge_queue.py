"""ChargeQueue on SQS: the monthly run's fan-out, one message per partner."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING

import boto3

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import TransientFailure

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SEND_BATCH_LIMIT = 10
ATTEMPTS = 3


class SqsChargeQueue:
    def __init__(self, queue_url: str) -> None:
        self._queue_url = queue_url

    @cached_property
    def client(self) -> SQSClient:
        return boto3.client("sqs")

    def enqueue_charges(self, partner_ids: list[str], month: BillingMonth) -> None:
        for start in range(0, len(partner_ids), SEND_BATCH_LIMIT):
            entries = {
                str(index): json.dumps({"partner_id": partner_id, "month": str(month)})
                for index, partner_id in enumerate(partner_ids[start : start + SEND_BATCH_LIMIT])
            }
            for _ in range(ATTEMPTS):
                response = self.client.send_message_batch(
                    QueueUrl=self._queue_url, Entries=[{"Id": i, "MessageBody": body} for i, body in entries.items()]
                )
                entries = {failed["Id"]: entries[failed["Id"]] for failed in response.get("Failed", [])}
                if not entries:
                    break
            if entries:
                raise TransientFailure(f"{len(entries)} charge messages could not be queued")
