"""Cancelling the monthly plan on a chosen end date, changing one's mind, and ending it on that date.

Order of writes, so that no crash or race can end a plan early or leave it unended:

- cancel: the one-time schedule is created *before* the plan records the date. A crash in between
  leaves a schedule the plan does not know, which is a stale firing later and changes nothing.
- reactivate: the plan is active again *before* the schedule is deleted; a schedule that survives a
  failed delete fires stale and changes nothing.
- end (the schedule fires): only the cancellation the plan still holds is carried out, and only once
  its date is over. Licences are ended first, the plan last, so a crash in between is finished by
  the scheduler's retry (the plan still says "cancellation scheduled").
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import ConcurrentModification, PlanNotActive, TransientFailure
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.plan import CANCELLABLE_STATES, Plan, PlanState, cancellation_end_dates, plan_end_instant
from billing_core.domain.pricing import Prices
from billing_core.domain.reporting import (
    EndingLicence,
    RenderedEmail,
    cancellation_scheduled_email,
    plan_reactivated_email,
)
from billing_core.domain.subscriptions import end_with_plan
from billing_core.domain.workspace import Workspace
from billing_core.ports import (
    Clock,
    Mailer,
    PlanEndSchedules,
    PlanStore,
    SubscriptionStore,
    UsageStore,
    WorkspaceStore,
)
from billing_core.schemas import (
    CancellationOptionsView,
    CancellationOptionView,
    CancellationView,
    CancelPlanRequest,
    EndingWorkspaceView,
    PlanStatusView,
)
from billing_core.services.views import plan_status_view

log = logging.getLogger("msp-billing.cancellation")
SCHEDULE_ACTOR = "plan-end-schedule"


class PlanEndOutcome(StrEnum):
    ENDED = "ended"
    ALREADY_ENDED = "already_ended"  # a repeated firing
    STALE = "stale"  # reactivated, or the date was replaced: nothing to do


@dataclass
class CancellationService:
    plans: PlanStore
    workspaces: WorkspaceStore
    usage: UsageStore
    schedules: PlanEndSchedules
    mailer: Mailer
    clock: Clock
    subscriptions: SubscriptionStore
    prices: Prices

    def cancellation_options(self, identity: PartnerIdentity) -> CancellationOptionsView:
        plan = self.plans.load_plan(identity.partner_id)
        now = self.clock.now()
        if plan.state not in CANCELLABLE_STATES or not plan.licence_active_at(now):
            raise PlanNotActive(f"only an active plan can be cancelled; this plan is {plan.state.value}")
        return CancellationOptionsView(
            options=[
                CancellationOptionView(ends_on=day, final_invoice_on=BillingMonth.containing_date(day).next().first_day)
                for day in cancellation_end_dates(now)
            ],
            scheduled_ends_on=plan.cancellation_ends_on,
        )

    def cancel_plan(self, identity: PartnerIdentity, request: CancelPlanRequest) -> CancellationView:
        """Schedule the end of the plan. Cancelling again with another offered date replaces the date
        (and its schedule); with the same date it changes nothing and answers the same."""
        now = self.clock.now()
        plan = self.plans.load_plan(identity.partner_id)
        cancelled = plan.schedule_cancellation(request.ends_on, now)  # 409 / 422 before anything is written
        ending = self._ending_licences(plan.partner_id, BillingMonth.containing(now))
        if plan.cancellation_ends_on == request.ends_on:
            self.schedules.schedule_plan_end(plan.partner_id, request.ends_on)  # re-assert; it may have been lost
            return self._cancellation_view(plan, ending, email_sent=False)
        schedule_name = self.schedules.schedule_plan_end(plan.partner_id, request.ends_on)
        previous = plan.cancellation_ends_on
        saved = self.plans.save_plan(
            cancelled,
            audit=self._audit(
                identity,
                "cancellation_date_changed" if previous else "cancellation_scheduled",
                ends_on=request.ends_on.isoformat(),
                previous_ends_on=previous.isoformat() if previous else None,
                schedule=schedule_name,
                workspaces=[e.workspace_id for e in ending],
            ),
        )
        if previous is not None:
            self._delete_schedule(plan.partner_id, previous)
        email = cancellation_scheduled_email(
            plan.partner_id,
            request.ends_on,
            [EndingLicence(e.workspace_id, e.name, e.edition or "", e.devices_this_month) for e in ending],
        )
        return self._cancellation_view(saved, ending, email_sent=self._notify(saved, email))

    def reactivate_plan(self, identity: PartnerIdentity) -> PlanStatusView:
        """Withdraw the scheduled cancellation: the plan is active exactly as before."""
        now = self.clock.now()
        plan = self.plans.load_plan(identity.partner_id)
        active = plan.reactivate(now)  # 409 when nothing is scheduled or the end date is over
        assert plan.cancellation_ends_on is not None
        saved = self.plans.save_plan(
            active,
            audit=self._audit(identity, "plan_reactivated", withdrawn_ends_on=plan.cancellation_ends_on.isoformat()),
        )
        self._delete_schedule(plan.partner_id, plan.cancellation_ends_on)
        self._notify(saved, plan_reactivated_email(plan.partner_id, plan.cancellation_ends_on))
        on_plan = [w for w in self.workspaces.list_workspaces(plan.partner_id) if w.on_plan]
        month = BillingMonth.containing(now)
        devices = {w.workspace_id: self.usage.count_devices(w.workspace_id, month) for w in on_plan}
        return plan_status_view(saved, on_plan, devices, now)

    def end_plan_as_scheduled(self, partner_id: str, ends_on: date) -> PlanEndOutcome:
        """What the one-time schedule does at the end date. Idempotent and state-checked."""
        now = self.clock.now()
        plan = self.plans.load_plan(partner_id)
        if plan.state is PlanState.CANCELLED and plan.ended_on == ends_on:
            return PlanEndOutcome.ALREADY_ENDED
        ended = plan.end_as_scheduled(ends_on, now)  # raises PlanEndNotDue when fired early: retried
        if ended is None:
            return PlanEndOutcome.STALE
        # Every licence write is conditional on the plan's version as read here: a plan changed meanwhile (a
        # reactivation, a new activation) fails the firing (retried, then stale) instead of ending licences
        # of a plan that goes on.
        ended_workspaces = self._end_licences(partner_id, ends_on, now, plan)
        # Before the plan is marked ended (a re-fire after a crash repeats this): stored, so a later plan
        # life never renews them.
        self._end_subscriptions(partner_id, ends_on, now)
        final = ended.final_month
        saved = self.plans.save_plan(
            ended,
            audit=AuditEvent(
                partner_id,
                "plan_ended",
                now,
                SCHEDULE_ACTOR,
                {
                    "ended_on": ends_on.isoformat(),
                    "final_month": str(final) if final else None,
                    "licences_ended": ended_workspaces,
                },
            ),
        )
        # A workspace put on the plan just before the end whose write the first listing did not see yet (never
        # one of a new plan life activated since: the plan's version guards each write).
        with contextlib.suppress(ConcurrentModification):
            self._end_licences(partner_id, ends_on, now, saved)
        return PlanEndOutcome.ENDED

    def _end_subscriptions(self, partner_id: str, ends_on: date, now: datetime) -> None:
        for order in self.subscriptions.list_orders(partner_id):
            loaded = self.subscriptions.load_order(partner_id, order.order_id)
            if loaded is None:
                continue
            stored_order, subscriptions = loaded
            ending = [end_with_plan(sub, ends_on, self.prices) for sub in subscriptions]
            if ending != subscriptions:
                self.subscriptions.save_order(
                    stored_order,
                    ending,
                    audit=AuditEvent(
                        partner_id,
                        "subscriptions_end_with_plan",
                        now,
                        SCHEDULE_ACTOR,
                        {"order_id": order.order_id, "plan_ended_on": ends_on.isoformat()},
                    ),
                )

    def _end_licences(self, partner_id: str, ends_on: date, now: datetime, plan: Plan) -> list[str]:
        ended = []
        for workspace in self.workspaces.list_workspaces(partner_id):
            if workspace.on_plan:
                self.workspaces.save_workspace(
                    workspace.end_licence(ends_on),
                    while_plan_is=plan,
                    audit=AuditEvent(
                        partner_id,
                        "licence_ended",
                        now,
                        SCHEDULE_ACTOR,
                        {"workspace_id": workspace.workspace_id, "ended_on": ends_on.isoformat()},
                    ),
                )
                ended.append(workspace.workspace_id)
        return ended

    # -- helpers ---------------------------------------------------------------------------------
    def _ending_licences(self, partner_id: str, month: BillingMonth) -> list[EndingWorkspaceView]:
        on_plan: list[Workspace] = [w for w in self.workspaces.list_workspaces(partner_id) if w.on_plan]
        return [
            EndingWorkspaceView(
                workspace_id=w.workspace_id,
                name=w.name,
                edition=w.edition,
                max_devices=w.max_devices,
                devices_this_month=self.usage.count_devices(w.workspace_id, month),
            )
            for w in sorted(on_plan, key=lambda w: (w.name, w.workspace_id))
        ]

    def _cancellation_view(
        self, plan: Plan, ending: list[EndingWorkspaceView], *, email_sent: bool
    ) -> CancellationView:
        assert plan.cancellation_ends_on is not None
        final, first = plan.final_month, plan.first_billable_month()
        return CancellationView(
            state=plan.state.value,
            ends_on=plan.cancellation_ends_on,
            licences_end_at=plan_end_instant(plan.cancellation_ends_on),
            final_invoice_on=final.next().first_day if final and first and final >= first else None,
            workspaces_losing_protection=ending,
            confirmation_email_sent=email_sent,
        )

    def _delete_schedule(self, partner_id: str, ends_on: date) -> None:
        try:
            self.schedules.delete_plan_end(partner_id, ends_on)
        except TransientFailure as error:
            # Harmless: the plan no longer holds this date, so the schedule's firing is a no-op.
            log.warning("could not delete the plan-end schedule of %s for %s: %s", partner_id, ends_on, error)

    def _notify(self, plan: Plan, email: RenderedEmail) -> bool:
        if plan.billing_email is None:
            return False
        try:
            self.mailer.send(plan.billing_email, email)
        except TransientFailure as error:
            # The state change is done and answered; the e-mail is a courtesy copy of the answer.
            log.warning("could not send %r to partner %s: %s", email.subject, plan.partner_id, error)
            return False
        return True

    def _audit(self, identity: PartnerIdentity, event_type: str, **details: object) -> AuditEvent:
        return AuditEvent(identity.partner_id, event_type, self.clock.now(), identity.subject, dict(details))
