"""Workspaces (one per end customer) and the licence document the protection software fetches."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.domain.plan import Plan, PlanState, plan_end_instant
from billing_core.domain.pricing import PriceList

MAX_DEVICES_LIMIT = 100_000


class LicenceStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    NOT_ON_PLAN = "not_on_plan"


@dataclass(frozen=True)
class Workspace:
    workspace_id: str
    partner_id: str
    name: str
    created_at: datetime
    on_plan: bool = False
    edition: str | None = None
    max_devices: int | None = None
    joined_plan_at: datetime | None = None
    # Set when the plan ended under the workspace: the last day its plan licence was valid.
    licence_ended_on: date | None = None
    version: int | None = None

    def on_plan_at(self, moment: datetime) -> bool:
        """Whether the workspace's devices occupied plan seats at ``moment``: from joining the plan until
        the end of the licence's last day (if it has ended)."""
        moment = require_utc(moment)
        if self.joined_plan_at is None or moment < self.joined_plan_at:
            return False
        if self.on_plan:
            return True
        return self.licence_ended_on is not None and moment < plan_end_instant(self.licence_ended_on)

    def billed_in(self, month: BillingMonth) -> bool:
        """On the plan for at least part of ``month``: still on it, or its licence ended during or after it."""
        return self.on_plan or (self.licence_ended_on is not None and self.licence_ended_on >= month.first_day)

    def end_licence(self, ends_on: date) -> Workspace:
        """The plan ended: the workspace leaves it (a later activation does not bring it back silently)."""
        return replace(self, on_plan=False, licence_ended_on=ends_on)

    def put_on_plan(self, *, plan: Plan, prices: PriceList, edition: str, max_devices: int, now: datetime) -> Workspace:
        plan.require_live(now)
        if self.on_plan:
            raise Conflict(f"workspace {self.workspace_id} is already on the monthly billing plan")
        prices.require_edition(edition)
        return replace(
            self,
            on_plan=True,
            edition=edition,
            max_devices=validate_max_devices(max_devices),
            joined_plan_at=require_utc(now),
            licence_ended_on=None,
        )

    def change_licence(
        self,
        *,
        plan: Plan,
        prices: PriceList,
        edition: str | None,
        max_devices: int | None,
        now: datetime | None = None,
    ) -> Workspace:
        plan.require_live(now)
        if not self.on_plan:
            raise Conflict(f"workspace {self.workspace_id} is not on the monthly billing plan; switch it first")
        if edition is None and max_devices is None:
            raise InvalidRequest.for_field("edition", "give edition and/or max_devices to change")
        if edition is not None:
            prices.require_edition(edition)
        return replace(
            self,
            edition=edition if edition is not None else self.edition,
            max_devices=validate_max_devices(max_devices) if max_devices is not None else self.max_devices,
        )


def validate_max_devices(value: int) -> int:
    if not 1 <= value <= MAX_DEVICES_LIMIT:
        raise InvalidRequest.for_field("max_devices", f"must be between 1 and {MAX_DEVICES_LIMIT}")
    return value


@dataclass(frozen=True)
class LicenceDocument:
    workspace_id: str
    plan: str | None
    edition: str | None
    max_devices: int | None
    status: LicenceStatus
    valid_through: date | None
    # Set while a cancellation is scheduled: the licence ends with the plan at the end of this day.
    ends_on: date | None = None


def licence_document(workspace: Workspace, plan: Plan, now: datetime) -> LicenceDocument:
    """What the protection software applies at its next online update.

    A plan licence renews monthly, so while the plan is live it is valid through the last day of the
    current UTC month, or the plan's end date if that comes first. Once the plan has ended (or its end
    date is over, even if the end-of-plan schedule is late) the licence has ended with it.
    """
    if workspace.licence_ended_on is not None and not workspace.on_plan:
        return LicenceDocument(
            workspace.workspace_id,
            "monthly",
            workspace.edition,
            workspace.max_devices,
            LicenceStatus.ENDED,
            workspace.licence_ended_on,
        )
    if not workspace.on_plan:
        return LicenceDocument(workspace.workspace_id, None, None, None, LicenceStatus.NOT_ON_PLAN, None)
    ends_on = plan.cancellation_ends_on or plan.ended_on
    valid_through: date | None
    if plan.licence_active_at(now):
        status, valid_through = LicenceStatus.ACTIVE, BillingMonth.containing(now).last_day
        if ends_on is not None:
            valid_through = min(valid_through, ends_on)
    else:
        status, valid_through = LicenceStatus.ENDED, ends_on
    plan_name = "monthly" if plan.state is not PlanState.INACTIVE else None
    return LicenceDocument(
        workspace_id=workspace.workspace_id,
        plan=plan_name,
        edition=workspace.edition,
        max_devices=workspace.max_devices,
        status=status,
        valid_through=valid_through,
        ends_on=plan.cancellation_ends_on if status is LicenceStatus.ACTIVE else None,
    )
