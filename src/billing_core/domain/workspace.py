"""Workspaces (one per end customer) and the licence document the protection software fetches."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.domain.plan import Plan, PlanState
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
    version: int | None = None

    def put_on_plan(self, *, plan: Plan, prices: PriceList, edition: str, max_devices: int, now: datetime) -> Workspace:
        plan.require_live()
        if self.on_plan:
            raise Conflict(f"workspace {self.workspace_id} is already on the monthly billing plan")
        prices.require_edition(edition)
        return replace(
            self,
            on_plan=True,
            edition=edition,
            max_devices=validate_max_devices(max_devices),
            joined_plan_at=require_utc(now),
        )

    def change_licence(
        self, *, plan: Plan, prices: PriceList, edition: str | None, max_devices: int | None
    ) -> Workspace:
        plan.require_live()
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


def licence_document(workspace: Workspace, plan: Plan, now: datetime) -> LicenceDocument:
    """What the protection software applies at its next online update.

    A plan licence renews monthly, so while the plan is live it is valid through the last day of the
    current UTC month; when the plan has ended the licence has ended with it.
    """
    if not workspace.on_plan:
        return LicenceDocument(workspace.workspace_id, None, None, None, LicenceStatus.NOT_ON_PLAN, None)
    if plan.is_live:
        status, valid_through = LicenceStatus.ACTIVE, BillingMonth.containing(now).last_day
    else:
        status, valid_through = LicenceStatus.ENDED, None
    plan_name = "monthly" if plan.state is not PlanState.INACTIVE else None
    return LicenceDocument(
        workspace_id=workspace.workspace_id,
        plan=plan_name,
        edition=workspace.edition,
        max_devices=workspace.max_devices,
        status=status,
        valid_through=valid_through,
    )
