"""Workspaces (one per end customer) and the licence document the protection software fetches."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.errors import Conflict, InvalidRequest
from billing_core.domain.plan import Plan, PlanState, plan_end_instant
from billing_core.domain.pricing import PriceList

MAX_DEVICES_LIMIT = 100_000
# Licence terms kept per workspace: one per calendar month at most (only the state at a month's end is
# billed), so three years of monthly changes. Late usage older than that is rated at the oldest kept term.
MAX_LICENCE_TERMS = 36


class LicenceStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    NOT_ON_PLAN = "not_on_plan"


@dataclass(frozen=True)
class LicenceTerm:
    """The edition and cap a workspace's plan licence had from ``effective_from`` on (until the next term)."""

    effective_from: datetime
    edition: str
    max_devices: int


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
    # Every edition/cap the plan licence had, oldest first, so a month is billed as it was at its end
    # whenever the run (or a redelivered run, or a late-usage adjustment) happens.
    licence_history: tuple[LicenceTerm, ...] = ()
    version: int | None = None

    def licence_at_end_of(self, month: BillingMonth) -> tuple[str, int]:
        """Edition and cap in effect at the end of ``month`` (DESIGN rule: billed as of the month's end). A
        change at 00:01 on the 1st is the next month's. A workspace stored before the history existed, or a
        month before its oldest kept term, falls back to the oldest state known."""
        month_end = month.next().starts_at
        in_effect = [term for term in self.licence_history if term.effective_from < month_end]
        if in_effect:
            return in_effect[-1].edition, in_effect[-1].max_devices
        if self.licence_history:
            return self.licence_history[0].edition, self.licence_history[0].max_devices
        return self.edition or "", self.max_devices or 0

    def _with_licence_term(self, edition: str, max_devices: int, now: datetime) -> tuple[LicenceTerm, ...]:
        """The history with a new term from ``now``: earlier terms of the same month are superseded for every
        month end they could matter to, so they are dropped; the oldest go beyond MAX_LICENCE_TERMS."""
        current = BillingMonth.containing(now)
        kept = [term for term in self.licence_history if BillingMonth.containing(term.effective_from) != current]
        return (*kept, LicenceTerm(require_utc(now), edition, max_devices))[-MAX_LICENCE_TERMS:]

    def on_plan_at(self, moment: datetime) -> bool:
        """Whether the workspace's devices occupied plan seats at ``moment``: from joining the plan until
        the end of the licence's last day (if it has ended)."""
        moment = require_utc(moment)
        if self.joined_plan_at is None or moment < self.joined_plan_at:
            return False
        if self.on_plan:
            return True
        return self.licence_ended_on is not None and moment < plan_end_instant(self.licence_ended_on)

    def on_plan_throughout(self, month: BillingMonth) -> bool:
        """On the plan from a day before ``month`` began (far longer than metering's workspace cache) to its
        end: none of its sightings of the month can have been recorded as not billable."""
        return self.on_plan_at(month.starts_at - timedelta(days=1)) and self.on_plan_at(
            month.next().starts_at - timedelta(microseconds=1)
        )

    def billed_in(self, month: BillingMonth) -> bool:
        """On the plan for at least part of ``month``: joined before the month ended, and still on it or its
        licence ended during or after it. (One that joins after the month ended, before its run, is no line
        of that month's invoice, not even a 0-seat one.)"""
        if self.joined_plan_at is not None and self.joined_plan_at >= month.next().starts_at:
            return False
        return self.on_plan or (self.licence_ended_on is not None and self.licence_ended_on >= month.first_day)

    def end_licence(self, ends_on: date) -> Workspace:
        """The plan ended: the workspace leaves it (a later activation does not bring it back silently)."""
        return replace(self, on_plan=False, licence_ended_on=ends_on)

    def put_on_plan(self, *, plan: Plan, prices: PriceList, edition: str, max_devices: int, now: datetime) -> Workspace:
        plan.require_open_to_new_workspaces(now)
        if self.on_plan:
            raise Conflict(f"workspace {self.workspace_id} is already on the monthly billing plan")
        prices.require_edition(edition)
        max_devices = validate_max_devices(max_devices)
        return replace(
            self,
            on_plan=True,
            edition=edition,
            max_devices=max_devices,
            joined_plan_at=require_utc(now),
            licence_ended_on=None,
            licence_history=self._with_licence_term(edition, max_devices, now),
        )

    def change_licence(
        self,
        *,
        plan: Plan,
        prices: PriceList,
        edition: str | None,
        max_devices: int | None,
        now: datetime,
    ) -> Workspace:
        plan.require_live(now)
        if not self.on_plan:
            raise Conflict(f"workspace {self.workspace_id} is not on the monthly billing plan; switch it first")
        if edition is None and max_devices is None:
            raise InvalidRequest.for_field("edition", "give edition and/or max_devices to change")
        if edition is not None:
            prices.require_edition(edition)
        new_edition = edition if edition is not None else self.edition or ""
        new_cap = validate_max_devices(max_devices) if max_devices is not None else self.max_devices or 0
        history = self.licence_history
        if not history and self.joined_plan_at is not None and self.edition and self.max_devices:
            # Stored before the history existed: its licence so far becomes the first term.
            history = (LicenceTerm(self.joined_plan_at, self.edition, self.max_devices),)
        changed = replace(self, edition=new_edition, max_devices=new_cap, licence_history=history)
        return replace(changed, licence_history=changed._with_licence_term(new_edition, new_cap, now))


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
