"""Metering message schema v1: what agents send to the metering queue (SQS message body, JSON).

Two message types, told apart by ``type``:

* ``sighting``: one device seen in one workspace at one moment;
* ``daily_report``: one workspace's active devices in one message.

Both carry ``event_id``, chosen by the agent and unique per message it sends; a redelivered or
replayed message is harmless because a device counts once per workspace and month anyway.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter

from billing_core.iso_dates import IsoAwareDatetime

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/+=-]+$")]

# A daily report must fit in one SQS message (256 KiB); 5,000 ids of up to 40 characters do.
MAX_DEVICES_PER_REPORT = 5000


class AgentInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product: str | None = Field(default=None, max_length=64)
    version: str | None = Field(default=None, max_length=32)
    hostname: str | None = Field(default=None, max_length=255)


class MessageV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Strict: schema_version is the integer 1 (not true, 1.0 or "1"), observed_at an ISO-8601 timestamp with a
    # zone (not a number of seconds).
    schema_version: Annotated[StrictInt, Field(ge=1, le=1)] = 1
    event_id: Identifier
    workspace_id: Identifier
    observed_at: IsoAwareDatetime = Field(strict=True)
    agent: AgentInfo | None = None


class SightingMessage(MessageV1):
    type: Literal["sighting"]
    device_id: Identifier


class DailyReportMessage(MessageV1):
    type: Literal["daily_report"]
    device_ids: list[Identifier] = Field(min_length=1, max_length=MAX_DEVICES_PER_REPORT)


MeteringMessage = Annotated[SightingMessage | DailyReportMessage, Field(discriminator="type")]
METERING_MESSAGE = TypeAdapter(MeteringMessage)


class PlanEndEvent(BaseModel):
    """The input of the cancellation finaliser, carried by the one-time end-of-plan schedule."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["plan-end/v1"] = Field(default="plan-end/v1", alias="schema")
    partner_id: str = Field(min_length=1, max_length=128)
    ends_on: date
