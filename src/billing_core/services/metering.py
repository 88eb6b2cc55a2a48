"""Metering ingestion: turn a batch of agent messages into device-month records, cheaply and exactly.

Per batch: parse and validate every message (bad ones are rejected with a reason, never retried),
classify each sighting, keep one per device-month (the earliest), skip those this container already
knows are recorded, look the rest up in one batched read, and write only true first sightings, each
with one conditional write. A failed write fails only the messages that carried that device-month, so
only they are retried (partial batch failure); retries are harmless because writes are conditional.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import TransientFailure
from billing_core.domain.metering import (
    Billability,
    ChargedMonthCheck,
    DeviceMonthKey,
    Sighting,
    classify_sighting,
    first_sightings,
    require_not_in_future,
)
from billing_core.domain.workspace import Workspace
from billing_core.messages import METERING_MESSAGE, DailyReportMessage, SightingMessage
from billing_core.ports import Clock, UsageStore, WorkspaceDirectory


@dataclass(frozen=True)
class InboundMessage:
    message_id: str
    body: str


@dataclass
class BatchOutcome:
    failed_message_ids: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)  # message id -> reason
    sightings: int = 0
    first_sightings_written: int = 0
    by_billability: dict[str, int] = field(default_factory=dict)


class RecentKeys:
    """Bounded LRU set of device-months this container knows are recorded (saves reads on repeats)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[tuple[DeviceMonthKey, bool], None] = OrderedDict()

    def __contains__(self, key: tuple[DeviceMonthKey, bool]) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def add(self, key: tuple[DeviceMonthKey, bool]) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)


@dataclass
class _CachedWorkspace:
    workspace: Workspace | None  # None: no such workspace
    fetched_at: datetime


def parse_message(message: InboundMessage, now: datetime) -> list[Sighting]:
    """The sightings one message carries; raises ValueError (with a readable reason) if it is malformed."""
    try:
        parsed = METERING_MESSAGE.validate_json(message.body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['msg']}" for detail in error.errors()
        )
        raise ValueError(f"invalid message: {problems}") from None
    observed_at = require_not_in_future(parsed.observed_at, now)
    if isinstance(parsed, SightingMessage):
        device_ids = [parsed.device_id]
    else:
        assert isinstance(parsed, DailyReportMessage)
        device_ids = parsed.device_ids
    return [Sighting(parsed.event_id, parsed.workspace_id, device_id, observed_at) for device_id in device_ids]


class MeteringService:
    def __init__(
        self,
        usage: UsageStore,
        directory: WorkspaceDirectory,
        clock: Clock,
        *,
        directory_ttl: timedelta = timedelta(seconds=60),
        recent_capacity: int = 500_000,
        write_concurrency: int = 8,
    ) -> None:
        self._usage = usage
        self._directory = directory
        self._clock = clock
        self._directory_ttl = directory_ttl
        self._recent = RecentKeys(recent_capacity)
        self._workspaces: dict[str, _CachedWorkspace] = {}
        self._write_concurrency = write_concurrency

    def record_batch(self, messages: list[InboundMessage]) -> BatchOutcome:
        now = self._clock.now()
        outcome = BatchOutcome()
        sightings_by_message: dict[str, list[Sighting]] = {}
        for message in messages:
            try:
                sightings_by_message[message.message_id] = parse_message(message, now)
            except (ValueError, OverflowError) as error:  # FutureTimestamp is a ValueError
                self._reject(message, str(error), now, outcome)
        all_sightings = [s for sightings in sightings_by_message.values() for s in sightings]
        outcome.sightings = len(all_sightings)
        if not all_sightings:
            return outcome

        workspaces = self._lookup_workspaces({s.workspace_id for s in all_sightings}, now)
        # Only a sighting of an earlier month can be late; for those the charged month is read fresh
        # (never cached), since a monthly run may have just closed that month.
        current_month = BillingMonth.containing(now)
        partners_with_past_sightings = {
            workspace.partner_id
            for sighting in all_sightings
            if sighting.key.month < current_month and (workspace := workspaces.get(sighting.workspace_id)) is not None
        }
        charged = (
            dict(self._directory.charged_months(partners_with_past_sightings)) if partners_with_past_sightings else {}
        )

        # Group by (device-month, billable?) with the messages that carried each, keep the earliest.
        carriers: dict[tuple[DeviceMonthKey, bool], set[str]] = defaultdict(set)
        grouped: dict[Billability, list[Sighting]] = defaultdict(list)
        for message_id, sightings in sightings_by_message.items():
            for sighting in sightings:
                workspace = workspaces.get(sighting.workspace_id)
                read = charged.get(workspace.partner_id) if workspace else None
                billability = classify_sighting(sighting, workspace, read.last_charged_month if read else None)
                outcome.by_billability[billability.value] = outcome.by_billability.get(billability.value, 0) + 1
                grouped[billability].append(sighting)
                carriers[(sighting.key, billability.billable)].add(message_id)

        to_write: list[tuple[Sighting, Billability]] = []
        for billability, sightings in grouped.items():
            candidates = {
                key: sighting
                for key, sighting in first_sightings(sightings).items()
                if (key, billability.billable) not in self._recent
            }
            if not candidates:
                continue
            try:
                recorded = self._usage.find_recorded(list(candidates), billability)
            except TransientFailure:
                for key in candidates:
                    outcome.failed_message_ids |= carriers[(key, billability.billable)]
                continue
            for key, sighting in candidates.items():
                if key in recorded:
                    self._recent.add((key, billability.billable))
                else:
                    to_write.append((sighting, billability))

        def write(item: tuple[Sighting, Billability]) -> tuple[tuple[Sighting, Billability], bool | None]:
            sighting, billability = item
            workspace = workspaces.get(sighting.workspace_id)
            partner_id = workspace.partner_id if workspace else None
            # Late usage goes on the invoice of the month it is recorded in (one rule, also after a cancelled
            # plan's final invoice: that month's run then makes a closing invoice for it).
            bill_in = current_month if billability is Billability.LATE else None
            # A billable sighting of an earlier month is only written if that month's run has not closed
            # it since we read the plan (otherwise it would be neither on that invoice nor late usage).
            check = (
                charged.get(partner_id, ChargedMonthCheck(partner_id, None))
                if partner_id and billability.billable and sighting.key.month < current_month
                else None
            )
            try:
                written = self._usage.record_first_sighting(sighting, billability, partner_id, now, bill_in, check)
            except TransientFailure:
                return item, None
            return item, written

        with ThreadPoolExecutor(max_workers=self._write_concurrency) as pool:
            for (sighting, billability), written in pool.map(write, to_write):
                cache_key = (sighting.key, billability.billable)
                if written is None:
                    outcome.failed_message_ids |= carriers[cache_key]
                    continue
                self._recent.add(cache_key)
                outcome.first_sightings_written += int(written)
        return outcome

    def _reject(self, message: InboundMessage, reason: str, now: datetime, outcome: BatchOutcome) -> None:
        try:
            self._usage.record_rejection(message.message_id, reason, message.body, now)
        except TransientFailure:
            outcome.failed_message_ids.add(message.message_id)  # retried until the rejection is recorded
            return
        outcome.rejected[message.message_id] = reason

    def _lookup_workspaces(self, workspace_ids: set[str], now: datetime) -> dict[str, Workspace | None]:
        """Workspaces cached for a short while: they change rarely, sightings arrive constantly. A
        workspace just switched to the plan may be seen as not on it for up to ``directory_ttl``; those
        devices are recorded as not billable and billed from their next report."""
        cache = self._workspaces
        stale = {i for i in workspace_ids if i not in cache or now - cache[i].fetched_at > self._directory_ttl}
        if stale:
            fetched = self._directory.workspaces(stale)
            for workspace_id in stale:
                cache[workspace_id] = _CachedWorkspace(fetched.get(workspace_id), now)
        return {workspace_id: cache[workspace_id].workspace for workspace_id in workspace_ids}
