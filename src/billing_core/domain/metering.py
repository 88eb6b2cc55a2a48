"""Metering rules: which sightings count, and how many seats a workspace occupies in a month.

A device counts once per workspace and month, however often and however late it is reported. Which
devices are billed and which are over the cap is derived, not stored: the first ``max_devices``
devices by first recorded sighting (ties by device id) are billed, the rest are over cap. The seat
count, min(devices, max_devices), never depends on delivery order; which device is over the cap can
(a device is recorded once, with the earliest sighting of the batch that first carried it). So one write per
device-month suffices, and a cap raised during the month applies to the whole month, matching the rule
that a workspace is billed with the licence in effect at the end of the month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.workspace import Workspace

# Agents' clocks drift; anything further ahead than this is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class Billability(StrEnum):
    BILLABLE = "billable"
    LATE = "late"  # billable, but its month was already charged: an adjustment on the next invoice
    UNKNOWN_WORKSPACE = "unknown_workspace"
    NOT_ON_PLAN = "not_on_plan"

    @property
    def billable(self) -> bool:
        return self in (Billability.BILLABLE, Billability.LATE)


@dataclass(frozen=True, order=True)
class DeviceMonthKey:
    workspace_id: str
    month: BillingMonth
    device_id: str


@dataclass(frozen=True)
class Sighting:
    event_id: str
    workspace_id: str
    device_id: str
    observed_at: datetime

    @property
    def key(self) -> DeviceMonthKey:
        return DeviceMonthKey(self.workspace_id, BillingMonth.containing(self.observed_at), self.device_id)


@dataclass(frozen=True)
class ChargedMonthCheck:
    """What metering read as the partner's last charged month. A sighting of an earlier month is only
    written if that is still true, so a monthly run closing the month in between cannot lose it: the
    write fails, the message is retried, and the sighting becomes late usage."""

    partner_id: str
    last_charged_month: BillingMonth | None
    # The plan has ended: late usage needs a closing invoice, so its write also brings the plan back into
    # the monthly runs.
    plan_has_ended: bool = False


class FutureTimestamp(ValueError):
    pass


def require_not_in_future(observed_at: datetime, now: datetime) -> datetime:
    observed_at = require_utc(observed_at)
    if observed_at - require_utc(now) > MAX_CLOCK_SKEW:
        raise FutureTimestamp(
            f"observed_at {observed_at.isoformat()} is more than {MAX_CLOCK_SKEW} ahead of the server clock"
        )
    return observed_at


def first_sightings(sightings: list[Sighting]) -> dict[DeviceMonthKey, Sighting]:
    """One sighting per device-month: the earliest (so first-seen order does not depend on delivery order)."""
    earliest: dict[DeviceMonthKey, Sighting] = {}
    for sighting in sightings:
        known = earliest.get(sighting.key)
        if known is None or (sighting.observed_at, sighting.event_id) < (known.observed_at, known.event_id):
            earliest[sighting.key] = sighting
    return earliest


def classify_sighting(
    sighting: Sighting, workspace: Workspace | None, last_charged_month: BillingMonth | None
) -> Billability:
    """Whether a sighting occupies a seat: only while its workspace was on the plan."""
    if workspace is None:
        return Billability.UNKNOWN_WORKSPACE
    if not workspace.on_plan_at(sighting.observed_at):
        return Billability.NOT_ON_PLAN
    if last_charged_month is not None and sighting.key.month <= last_charged_month:
        return Billability.LATE
    return Billability.BILLABLE


@dataclass(frozen=True)
class RecordedDevice:
    device_id: str
    first_seen_at: datetime
    late: bool = False  # recorded after its month was charged: billed as late usage, not on the month's invoice


@dataclass(frozen=True)
class SeatCount:
    billed: list[RecordedDevice]
    over_cap: list[RecordedDevice]

    @property
    def seats(self) -> int:
        return len(self.billed)


def count_seats(devices: list[RecordedDevice], max_devices: int) -> SeatCount:
    ordered = sorted(devices, key=lambda device: (device.first_seen_at, device.device_id))
    return SeatCount(billed=ordered[:max_devices], over_cap=ordered[max_devices:])
