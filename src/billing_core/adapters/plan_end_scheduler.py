"""PlanEndSchedules on EventBridge Scheduler: one ``at(...)`` schedule per partner and end date."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from billing_core.adapters.aws_errors import error_code
from billing_core.domain.errors import TransientFailure
from billing_core.domain.plan import plan_end_instant
from billing_core.messages import PlanEndEvent

if TYPE_CHECKING:
    from mypy_boto3_scheduler import EventBridgeSchedulerClient

# Scheduler names: 1-64 characters of [0-9a-zA-Z-_.].
_SAFE_PARTNER_ID = re.compile(r"[0-9A-Za-z_.-]{1,40}")
# The scheduler retries a failed invocation with backoff for up to a day, then sends the event to the DLQ.
RETRY_MAX_AGE_SECONDS = 24 * 3600
RETRIES = 185


def plan_end_schedule_name(partner_id: str, ends_on: date) -> str:
    """Derived from partner and date, so creating it twice is detected and deleting needs no lookup."""
    partner = (
        partner_id if _SAFE_PARTNER_ID.fullmatch(partner_id) else hashlib.sha256(partner_id.encode()).hexdigest()[:24]
    )
    return f"plan-end-{partner}-{ends_on.isoformat()}"


class EventBridgePlanEndSchedules:
    def __init__(self, *, function_arn: str, role_arn: str, dead_letter_arn: str, group: str = "default") -> None:
        self._function_arn = function_arn
        self._role_arn = role_arn
        self._dead_letter_arn = dead_letter_arn
        self._group = group

    @cached_property
    def client(self) -> EventBridgeSchedulerClient:
        return boto3.client("scheduler")

    def schedule_plan_end(self, partner_id: str, ends_on: date) -> str:
        name = plan_end_schedule_name(partner_id, ends_on)
        fires_at = plan_end_instant(ends_on)
        try:
            self.client.create_schedule(
                Name=name,
                GroupName=self._group,
                Description=f"End the monthly billing plan of {partner_id} after {ends_on.isoformat()}",
                ScheduleExpression=f"at({fires_at:%Y-%m-%dT%H:%M:%S})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={
                    "Arn": self._function_arn,
                    "RoleArn": self._role_arn,
                    "Input": PlanEndEvent(partner_id=partner_id, ends_on=ends_on).model_dump_json(by_alias=True),
                    "RetryPolicy": {"MaximumEventAgeInSeconds": RETRY_MAX_AGE_SECONDS, "MaximumRetryAttempts": RETRIES},
                    "DeadLetterConfig": {"Arn": self._dead_letter_arn},
                },
            )
        except ClientError as error:
            if error_code(error) != "ConflictException":  # same name: same partner, date and target
                raise TransientFailure(f"could not schedule the end of the plan: {error_code(error)}") from error
        except BotoCoreError as error:
            raise TransientFailure(f"could not reach the scheduler: {error}") from error
        return name

    def delete_plan_end(self, partner_id: str, ends_on: date) -> None:
        try:
            self.client.delete_schedule(Name=plan_end_schedule_name(partner_id, ends_on), GroupName=self._group)
        except ClientError as error:
            if error_code(error) != "ResourceNotFoundException":  # already fired (and deleted) or never made
                raise TransientFailure(f"could not delete the plan-end schedule: {error_code(error)}") from error
        except BotoCoreError as error:
            raise TransientFailure(f"could not reach the scheduler: {error}") from error
