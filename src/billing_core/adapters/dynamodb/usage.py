"""UsageStore and WorkspaceDirectory on DynamoDB via PynamoDB.

Usage table item layout (pk / sk):
  WS#<workspace>#<YYYY-MM>   / DEV#<device>           a billable (or late) device-month, written once
  NB#<workspace>#<YYYY-MM>   / DEV#<device>           a not-billable device-month (unknown / not on plan)
  LATE#<partner>             / <bill-in>#<YYYY-MM>#<ws>#<dev>   late usage, queued for the invoice of <bill-in>
  REJECTED#<YYYY-MM-DD>      / <message id>           a rejected message and why
Every item expires (TTL ``expires_at``) after the retention period.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from pynamodb.attributes import TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from billing_core.adapters.dynamodb.models import PlanItem, PlanRunsItem, WorkspaceItem, partner_pk, workspace_pk
from billing_core.adapters.dynamodb.repositories import (
    BATCH_GET_LIMIT,
    CHARGEABLE,
    PLAN_SK,
    WORKSPACE_SK,
    workspace_from_item,
)
from billing_core.adapters.dynamodb.retryable import RETRYABLE_CODES
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import TransientFailure
from billing_core.domain.invoicing import LateDevices
from billing_core.domain.metering import Billability, ChargedMonthCheck, DeviceMonthKey, RecordedDevice, Sighting
from billing_core.domain.plan import Plan, PlanState
from billing_core.domain.workspace import Workspace

UNBOUND = "unbound-usage-table"
T = TypeVar("T")


class DeviceMonthItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    first_seen_at = UTCDateTimeAttribute()
    event_id = UnicodeAttribute()
    billability = UnicodeAttribute()
    partner_id = UnicodeAttribute(null=True)
    recorded_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()


class LateUsageItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    workspace_id = UnicodeAttribute()
    device_id = UnicodeAttribute()
    month = UnicodeAttribute()
    first_seen_at = UTCDateTimeAttribute()
    recorded_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()


class RejectionItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    reason = UnicodeAttribute()
    body = UnicodeAttribute()
    received_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()


USAGE_MODELS: tuple[type[Model], ...] = (DeviceMonthItem, LateUsageItem, RejectionItem)


def bind_usage_table(table_name: str, region: str) -> None:
    for model in USAGE_MODELS:
        meta: Any = model.Meta
        meta.table_name = table_name
        meta.region = region


def device_month_pk(workspace_id: str, month: BillingMonth, billability: Billability) -> str:
    prefix = "WS" if billability.billable else "NB"
    return f"{prefix}#{workspace_id}#{month}"


def device_sk(device_id: str) -> str:
    return f"DEV#{device_id}"


def _retryable(operation: Callable[[], T], what: str) -> T:
    try:
        return operation()
    except PynamoDBException as error:
        if error.cause_response_code in RETRYABLE_CODES:
            raise TransientFailure(f"{what}: {error.cause_response_code}") from error
        raise


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DynamoUsageStore:
    def __init__(self, retention: timedelta, region: str) -> None:
        self._retention = retention
        self._connection = Connection(region=region)  # for the rare cross-table transaction

    def find_recorded(self, keys: list[DeviceMonthKey], billability: Billability) -> set[DeviceMonthKey]:
        by_item_key = {(device_month_pk(k.workspace_id, k.month, billability), device_sk(k.device_id)): k for k in keys}
        found: set[DeviceMonthKey] = set()
        for chunk in _chunks(list(by_item_key), BATCH_GET_LIMIT):
            items = _retryable(
                lambda chunk=chunk: list(  # type: ignore[misc]
                    DeviceMonthItem.batch_get(chunk, attributes_to_get=["pk", "sk"])
                ),
                "reading recorded devices",
            )
            found.update(by_item_key[(item.pk, item.sk)] for item in items)
        return found

    def record_first_sighting(
        self,
        sighting: Sighting,
        billability: Billability,
        partner_id: str | None,
        recorded_at: datetime,
        late_bill_in: BillingMonth | None = None,
        charged_check: ChargedMonthCheck | None = None,
    ) -> bool:
        key = sighting.key
        item = DeviceMonthItem(
            pk=device_month_pk(key.workspace_id, key.month, billability),
            sk=device_sk(key.device_id),
            first_seen_at=sighting.observed_at,
            event_id=sighting.event_id,
            billability=billability.value,
            partner_id=partner_id,
            recorded_at=recorded_at,
            expires_at=recorded_at + self._retention,
        )
        late = None
        if billability is Billability.LATE and partner_id is not None and late_bill_in is not None:
            late = LateUsageItem(
                pk=f"LATE#{partner_id}",
                sk=f"{late_bill_in}#{key.month}#{key.workspace_id}#{key.device_id}",
                workspace_id=key.workspace_id,
                device_id=key.device_id,
                month=str(key.month),
                first_seen_at=sighting.observed_at,
                recorded_at=recorded_at,
                expires_at=recorded_at + self._retention,
            )
        if late is None and charged_check is None:  # the common case: one conditional PutItem
            try:
                _retryable(lambda: item.save(condition=DeviceMonthItem.pk.does_not_exist()), "recording a device")
            except PynamoDBException as error:
                if error.cause_response_code == "ConditionalCheckFailedException":
                    return False  # recorded meanwhile by a concurrent delivery
                raise
            return True
        return self._record_guarded(item, late, charged_check)

    def _record_guarded(
        self, item: DeviceMonthItem, late: LateUsageItem | None, charged_check: ChargedMonthCheck | None
    ) -> bool:
        """A sighting of an earlier month: device item, late-usage item and the check that the month was
        not closed since it was classified, all or nothing (rare, so a transaction is affordable)."""
        checked_first = False
        try:
            with TransactWrite(connection=self._connection) as transaction:
                transaction.save(item, condition=DeviceMonthItem.pk.does_not_exist())
                if late is not None:
                    transaction.save(late, condition=LateUsageItem.pk.does_not_exist())
                if charged_check is not None:
                    checked_first = self._guard_charged_month(transaction, charged_check, late, item.recorded_at)
        except TransactWriteError as error:
            reasons = [reason.code if reason else None for reason in error.cancellation_reasons]
            device_index = 1 if checked_first else 0  # condition checks come first
            if len(reasons) > device_index and reasons[device_index] == "ConditionalCheckFailed":
                return False  # the device-month was recorded meanwhile
            if "ConditionalCheckFailed" in reasons:
                raise TransientFailure("the month was closed meanwhile; retry to record it as late usage") from error
            if error.cause_response_code in RETRYABLE_CODES or any(code in RETRYABLE_CODES for code in reasons):
                raise TransientFailure(f"recording a device: {error.cause_response_code}") from error
            raise
        return True

    @staticmethod
    def _guard_charged_month(
        transaction: TransactWrite, check: ChargedMonthCheck, late: LateUsageItem | None, recorded_at: datetime
    ) -> bool:
        """Add the check that the plan's last charged month is still the one read; True if it is a condition
        check (which DynamoDB lists before the puts), False if it is the update that brings an ended plan back
        into the monthly runs for its closing invoice (listed after them)."""
        expected = check.last_charged_month
        unchanged = (
            PlanRunsItem.last_charged_month == str(expected)
            if expected
            else PlanRunsItem.last_charged_month.does_not_exist()
        )
        key = (partner_pk(check.partner_id), PLAN_SK)
        if not (check.plan_has_ended and late is not None):
            transaction.condition_check(PlanRunsItem, *key, condition=unchanged)
            return True
        # The version is bumped without being read: a run retiring the plan meanwhile fails and decides again,
        # and concurrent sightings never conflict with each other.
        transaction.update(
            PlanRunsItem(*key),
            actions=[
                PlanRunsItem.left_monthly_runs.set(False),
                PlanRunsItem.charge_index.set(CHARGEABLE),
                PlanRunsItem.updated_at.set(recorded_at),
                PlanRunsItem.version.add(1),
            ],
            condition=unchanged & PlanRunsItem.pk.exists(),
        )
        return False

    def record_rejection(self, message_id: str, reason: str, body: str, received_at: datetime) -> None:
        item = RejectionItem(
            pk=f"REJECTED#{received_at.date().isoformat()}",
            sk=message_id,
            reason=reason[:1000],
            body=body[:4000],
            received_at=received_at,
            expires_at=received_at + timedelta(days=30),
        )
        _retryable(lambda: item.save(), "recording a rejection")

    def recorded_devices(self, workspace_id: str, month: BillingMonth, *, billable: bool) -> list[RecordedDevice]:
        pk = device_month_pk(workspace_id, month, Billability.BILLABLE if billable else Billability.NOT_ON_PLAN)
        # Consistent: the usage report must list exactly the devices the invoice counted (consistently).
        items = _retryable(
            lambda: list(
                DeviceMonthItem.query(
                    pk, attributes_to_get=["sk", "first_seen_at", "billability"], consistent_read=True
                )
            ),
            "reading devices",
        )
        return [
            RecordedDevice(
                item.sk.removeprefix("DEV#"), item.first_seen_at, late=item.billability == Billability.LATE.value
            )
            for item in items
        ]

    def late_devices(self, partner_id: str, bill_in: BillingMonth) -> list[LateDevices]:
        items = _retryable(
            # Strongly consistent: the run reads it right after closing the month, and what it misses is unbilled.
            lambda: list(
                LateUsageItem.query(
                    f"LATE#{partner_id}", LateUsageItem.sk.startswith(f"{bill_in}#"), consistent_read=True
                )
            ),
            "reading late usage",
        )
        counts = Counter((BillingMonth.parse(item.month), item.workspace_id) for item in items)
        return [LateDevices(month, workspace_id, devices) for (month, workspace_id), devices in sorted(counts.items())]

    def late_usage_queued_from(self, partner_id: str, bill_in: BillingMonth) -> bool:
        query = LateUsageItem.query(
            f"LATE#{partner_id}", LateUsageItem.sk >= f"{bill_in}#", consistent_read=True, limit=1
        )
        return bool(_retryable(lambda: list(query), "reading late usage"))

    def count_devices(self, workspace_id: str, month: BillingMonth) -> int:
        """Devices of the month's own invoice: late devices share the partition (one record per
        device-month) but are billed as adjustments later, so they are filtered out. Strongly
        consistent, because the run counts right after closing the month."""
        pk = device_month_pk(workspace_id, month, Billability.BILLABLE)
        not_late = DeviceMonthItem.billability != Billability.LATE.value
        return int(
            _retryable(
                lambda: DeviceMonthItem.count(pk, filter_condition=not_late, consistent_read=True), "counting devices"
            )
        )


class DynamoWorkspaceDirectory:
    def workspaces(self, workspace_ids: set[str]) -> dict[str, Workspace | None]:
        keys = [(workspace_pk(workspace_id), WORKSPACE_SK) for workspace_id in sorted(workspace_ids)]
        found: dict[str, Workspace | None] = {}
        for chunk in _chunks(keys, BATCH_GET_LIMIT):
            # Consistent: a workspace created a moment ago must not have its first devices recorded as unknown.
            items = _retryable(
                lambda chunk=chunk: list(WorkspaceItem.batch_get(chunk, consistent_read=True)),  # type: ignore[misc]
                "reading workspaces",
            )
            found.update((item.workspace_id, workspace_from_item(item)) for item in items)
        return found

    def charged_months(self, partner_ids: set[str]) -> dict[str, ChargedMonthCheck]:
        keys = [(partner_pk(partner_id), PLAN_SK) for partner_id in sorted(partner_ids)]
        checks = {partner_id: ChargedMonthCheck(partner_id, None) for partner_id in partner_ids}
        for chunk in _chunks(keys, BATCH_GET_LIMIT):
            items = _retryable(
                lambda chunk=chunk: list(
                    PlanItem.batch_get(
                        chunk, attributes_to_get=["partner_id", "last_charged_month", "state", "ended_on"]
                    )
                ),  # type: ignore[misc]
                "reading plans",
            )
            for item in items:
                plan = Plan(
                    item.partner_id,
                    PlanState(item.state),
                    last_charged_month=BillingMonth.parse(item.last_charged_month) if item.last_charged_month else None,
                    ended_on=date.fromisoformat(item.ended_on) if item.ended_on else None,
                )
                checks[item.partner_id] = ChargedMonthCheck(
                    item.partner_id, plan.last_charged_month, plan_has_ended=plan.has_ended
                )
        return checks
