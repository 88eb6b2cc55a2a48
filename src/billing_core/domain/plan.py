"""The monthly billing plan of one partner: its states and the activation rules."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.errors import ActivationInProgress, PlanAlreadyActive, PlanNotActive


class PlanState(StrEnum):
    INACTIVE = "inactive"  # never activated, or the last activation was declined
    ACTIVATING = "activating"  # an activation payment is under way (a claim, see below)
    ACTIVE = "active"
    CANCELLATION_SCHEDULED = "cancellation_scheduled"
    PAST_DUE = "past_due"
    CANCELLED = "cancelled"


# States in which the plan exists for billing: workspaces may be on it and seats are charged.
LIVE_STATES = frozenset({PlanState.ACTIVE, PlanState.CANCELLATION_SCHEDULED, PlanState.PAST_DUE})
# States from which a (new) activation may start.
ACTIVATABLE_STATES = frozenset({PlanState.INACTIVE, PlanState.CANCELLED})
# An activation claim older than this is considered abandoned (its Lambda died) and may be resumed
# by any caller. Resuming is safe because the provider idempotency key depends only on the partner
# and the attempt number, never on who resumes it.
ACTIVATION_CLAIM_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class Plan:
    partner_id: str
    state: PlanState = PlanState.INACTIVE
    currency: str | None = None
    price_list_version: str | None = None
    activated_at: datetime | None = None
    activation_attempt: int = 0
    activation_started_at: datetime | None = None
    payment_customer_ref: str | None = None
    payment_method_ref: str | None = None
    # Where billing reports and failed-payment notices go.
    billing_email: str | None = None
    # The latest month a monthly charge run has invoiced; sightings for it or earlier are late usage.
    last_charged_month: BillingMonth | None = None
    # Optimistic-locking version held by the repository; None for a plan never stored.
    version: int | None = None

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    def require_live(self) -> None:
        if not self.is_live:
            raise PlanNotActive(f"the monthly billing plan is {self.state.value}; activate it first")

    def begin_activation(self, now: datetime) -> Plan:
        """Claim the plan for one activation attempt, or resume an abandoned attempt."""
        now = require_utc(now)
        if self.state in LIVE_STATES:
            raise PlanAlreadyActive(f"the monthly billing plan is already {self.state.value}")
        if self.state is PlanState.ACTIVATING:
            started = self.activation_started_at
            if started is not None and now - started < ACTIVATION_CLAIM_TTL:
                raise ActivationInProgress("an activation for this partner is in progress; retry shortly")
            return replace(self, activation_started_at=now)  # resume the same attempt number
        return replace(
            self,
            state=PlanState.ACTIVATING,
            activation_attempt=self.activation_attempt + 1,
            activation_started_at=now,
        )

    def activation_payment_key(self) -> str:
        """Provider idempotency key of the current attempt: any retry of it reuses the key."""
        return f"activation:{self.partner_id}:{self.activation_attempt}"

    def complete_activation(
        self,
        *,
        now: datetime,
        currency: str,
        price_list_version: str,
        customer_ref: str,
        payment_method_ref: str,
        billing_email: str | None = None,
    ) -> Plan:
        return replace(
            self,
            billing_email=billing_email or self.billing_email,
            state=PlanState.ACTIVE,
            activated_at=require_utc(now),
            currency=currency,
            price_list_version=price_list_version,
            payment_customer_ref=customer_ref,
            payment_method_ref=payment_method_ref,
            activation_started_at=None,
        )

    def decline_activation(self) -> Plan:
        return replace(self, state=PlanState.INACTIVE, activation_started_at=None)

    def covered_through(self) -> date | None:
        """Last day covered by the activation fee: the rest of the activation month, never prorated."""
        if self.activated_at is None or not self.is_live:
            return None
        return BillingMonth.containing(self.activated_at).last_day

    def first_charge_date(self) -> date | None:
        """The 1st after the first full month: activation in November -> December is the first full
        month -> the first regular charge is on 1 January (for December's seats)."""
        if self.activated_at is None:
            return None
        return BillingMonth.containing(self.activated_at).next().next().first_day

    def next_charge_date(self, now: datetime) -> date | None:
        first = self.first_charge_date()
        if first is None or not self.is_live:
            return None
        return max(first, BillingMonth.containing(now).next().first_day)

    def first_billable_month(self) -> BillingMonth | None:
        if self.activated_at is None:
            return None
        return BillingMonth.containing(self.activated_at).next()
