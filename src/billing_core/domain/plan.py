"""The monthly billing plan of one partner: its states and the activation rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth, require_utc
from billing_core.domain.errors import (
    ActivationInProgress,
    AuthenticationPending,
    Conflict,
    InvalidRequest,
    PlanAlreadyActive,
    PlanNotActive,
    PlanPastDue,
    TransientFailure,
)
from billing_core.domain.money import Money


class PlanState(StrEnum):
    INACTIVE = "inactive"  # never activated, or the last activation was declined
    ACTIVATING = "activating"  # an activation payment is under way (a claim, see below)
    ACTIVE = "active"
    CANCELLATION_SCHEDULED = "cancellation_scheduled"
    PAST_DUE = "past_due"
    CANCELLED = "cancelled"


# States in which the plan exists for billing: workspaces may be on it and seats are charged.
LIVE_STATES = frozenset({PlanState.ACTIVE, PlanState.CANCELLATION_SCHEDULED, PlanState.PAST_DUE})
CANCELLABLE_STATES = LIVE_STATES
# States from which a (new) activation may start.
ACTIVATABLE_STATES = frozenset({PlanState.INACTIVE, PlanState.CANCELLED})
# An activation claim older than this is considered abandoned (its Lambda died) and may be resumed
# by any caller. Resuming is safe because the provider idempotency key depends only on the partner
# and the attempt number, never on who resumes it.
ACTIVATION_CLAIM_TTL = timedelta(minutes=5)
# A partner may end the plan at the end of the current month or of one of the next two months.
CANCELLATION_OPTION_COUNT = 3
# How long the customer has to authenticate the activation payment (3-D Secure) once the provider asked for
# it. Until then the attempt waits (another activation gets 409 authentication_pending); after it, the next
# activation request cancels the payment at the provider and the attempt is declined (authentication_abandoned).
AUTHENTICATION_WINDOW = timedelta(minutes=30)


def plan_end_instant(ends_on: date) -> datetime:
    """The plan (and every licence on it) ends when its last day is over: 00:00 UTC the day after."""
    return datetime.combine(ends_on + timedelta(days=1), time(0), tzinfo=UTC)


def cancellation_end_dates(now: datetime) -> list[date]:
    """The end dates on offer: the last day of this month and of the next two (UTC)."""
    month = BillingMonth.containing(require_utc(now))
    dates = []
    for _ in range(CANCELLATION_OPTION_COUNT):
        dates.append(month.last_day)
        month = month.next()
    return dates


class PlanEndNotDue(TransientFailure):
    """The end-of-plan schedule fired before the end date was over; its retry will come back."""

    code = "plan_end_not_due"


@dataclass(frozen=True)
class PendingAuthentication:
    """An activation attempt whose payment the provider holds until the customer authenticates it (3-D
    Secure). It keeps what completing the activation later needs, priced when the attempt was made, and
    which request started it (the same ``Idempotency-Key`` with another body is refused while it waits)."""

    payment_id: str
    amount: Money
    price_list_version: str
    customer_ref: str
    payment_method_ref: str
    billing_email: str | None
    request_key: str  # the client's Idempotency-Key of the request that started the attempt
    request_fingerprint: str  # a digest of that request's body
    requested_at: datetime  # when the provider asked for authentication

    @property
    def expires_at(self) -> datetime:
        return self.requested_at + AUTHENTICATION_WINDOW

    def expired_at(self, now: datetime) -> bool:
        return require_utc(now) >= self.expires_at

    def to_dict(self) -> dict[str, str | int | None]:
        return {
            "payment_id": self.payment_id,
            "amount_minor": self.amount.amount_minor,
            "currency": self.amount.currency,
            "price_list_version": self.price_list_version,
            "customer_ref": self.customer_ref,
            "payment_method_ref": self.payment_method_ref,
            "billing_email": self.billing_email,
            "request_key": self.request_key,
            "request_fingerprint": self.request_fingerprint,
            "requested_at": require_utc(self.requested_at).isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> PendingAuthentication:
        email = data.get("billing_email")
        return cls(
            payment_id=str(data["payment_id"]),
            amount=Money(int(str(data["amount_minor"])), str(data["currency"])),
            price_list_version=str(data["price_list_version"]),
            customer_ref=str(data["customer_ref"]),
            payment_method_ref=str(data["payment_method_ref"]),
            billing_email=str(email) if email is not None else None,
            request_key=str(data["request_key"]),
            request_fingerprint=str(data["request_fingerprint"]),
            requested_at=require_utc(datetime.fromisoformat(str(data["requested_at"]))),
        )


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
    # Set while a cancellation is scheduled: the last day of the plan.
    cancellation_ends_on: date | None = None
    # Set when a cancelled plan has ended: its last day (the final month is the month of this day).
    ended_on: date | None = None
    # A cancelled plan stays visited by monthly runs until its final month is behind them.
    left_monthly_runs: bool = False
    # Set when an invoice went past due (the last retry failed), also while a cancellation is scheduled,
    # so a reactivation returns the plan to past due instead of active; cleared when it is settled.
    past_due_month: BillingMonth | None = None
    # Set while the activation attempt's payment awaits the customer's authentication (state activating, no
    # claim running): the attempt is settled by looking the payment up, never by charging again.
    pending_authentication: PendingAuthentication | None = None
    # Optimistic-locking version held by the repository; None for a plan never stored.
    version: int | None = None

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    def require_live(self, now: datetime | None = None) -> None:
        """The plan can take workspaces: live, and (given ``now``) its end date, if any, not over."""
        if not self.is_live:
            raise PlanNotActive(f"the monthly billing plan is {self.state.value}; activate it first")
        if now is not None and not self.licence_active_at(now):
            raise PlanNotActive(f"the monthly billing plan ended on {self.cancellation_ends_on}; activate it again")

    @property
    def has_ended(self) -> bool:
        """Cancelled and ended, also while an activation of a new life is under way (until it succeeds): the
        ended life's committed licence terms still run to their end and are billed."""
        return self.ended_on is not None and self.state in (PlanState.CANCELLED, PlanState.ACTIVATING)

    def require_open_to_new_workspaces(self, now: datetime) -> None:
        """Live, its end date not over, and not past due (dunning: the workspaces already on a past-due plan stay
        protected, no new one joins until the unpaid invoice is settled)."""
        self.require_live(now)
        if self.state is PlanState.PAST_DUE:
            raise PlanPastDue(
                f"the invoice of {self.past_due_month} is past due: give a new payment method "
                "(PUT /plan/payment-method) to settle it; until then no workspace joins the plan"
            )

    @property
    def visited_by_monthly_runs(self) -> bool:
        """Live plans, and ended ones until a run for a month after their final month retires them."""
        return self.is_live or (self.has_ended and not self.left_monthly_runs)

    @property
    def ends_on(self) -> date | None:
        """The plan's last day, once an end is scheduled or done (None while it runs without end)."""
        if self.has_ended:
            return self.ended_on
        return self.cancellation_ends_on if self.state is PlanState.CANCELLATION_SCHEDULED else None

    @property
    def final_month(self) -> BillingMonth | None:
        """The last month the plan is (or will be) billed for, once an end date is set."""
        last_day = self.ended_on if self.has_ended else self.cancellation_ends_on
        return BillingMonth.containing_date(last_day) if last_day is not None else None

    def month_of_final_invoice(self) -> BillingMonth | None:
        """A cancelled plan's final month when it is billed (not its activation month): its invoice must
        exist before the partner activates again, or the new plan life would make that month look like
        it preceded the plan, and it would never be invoiced."""
        final, first = self.final_month, self.first_billable_month()
        if self.state is not PlanState.CANCELLED or final is None or first is None or final < first:
            return None
        return final

    def licence_active_at(self, now: datetime) -> bool:
        """Licences on the plan are valid while it is live and its end date (if any) is not over, even
        when the end-of-plan schedule is late."""
        if not self.is_live:
            return False
        return self.cancellation_ends_on is None or require_utc(now) < plan_end_instant(self.cancellation_ends_on)

    def begin_activation(self, now: datetime) -> Plan:
        """Claim the plan for one activation attempt, or resume an abandoned attempt."""
        now = require_utc(now)
        if self.state in LIVE_STATES:
            raise PlanAlreadyActive(f"the monthly billing plan is already {self.state.value}")
        if self.state is PlanState.ACTIVATING:
            if self.pending_authentication is not None:
                # Its payment exists: charging again could charge twice. The service settles it first.
                raise AuthenticationPending(
                    f"the activation payment {self.pending_authentication.payment_id} awaits the customer's "
                    "authentication"
                )
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

    def await_authentication(self, pending: PendingAuthentication) -> Plan:
        """The claimed attempt's payment waits for the customer's authentication: the claim is released (no
        request is running) and the attempt stays open, bound to that payment."""
        if self.state is not PlanState.ACTIVATING:
            raise Conflict(f"no activation is under way (the plan is {self.state.value})")
        return replace(self, activation_started_at=None, pending_authentication=pending)

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
            # A new activation after a cancellation starts a new plan life.
            cancellation_ends_on=None,
            ended_on=None,
            left_monthly_runs=False,
            past_due_month=None,
            pending_authentication=None,
        )

    def decline_activation(self) -> Plan:
        """The attempt failed: a plan that had ended is the cancelled plan it was (its committed licence terms
        go on being billed), any other is inactive."""
        state = PlanState.CANCELLED if self.ended_on is not None else PlanState.INACTIVE
        return replace(self, state=state, activation_started_at=None, pending_authentication=None)

    # -- cancellation ----------------------------------------------------------------------------
    def schedule_cancellation(self, ends_on: date, now: datetime) -> Plan:
        """End the plan on one of the offered dates. Cancelling again replaces the date. A past-due plan can be
        cancelled too (it remembers the unpaid month, which a reactivation returns to)."""
        if self.state not in CANCELLABLE_STATES or not self.licence_active_at(now):
            raise PlanNotActive(f"only an active plan can be cancelled; this plan is {self.state.value}")
        offered = cancellation_end_dates(now)
        if ends_on not in offered:
            allowed = ", ".join(day.isoformat() for day in offered)
            raise InvalidRequest.for_field("ends_on", f"must be one of the offered end dates: {allowed}")
        return replace(self, state=PlanState.CANCELLATION_SCHEDULED, cancellation_ends_on=ends_on)

    def reactivate(self, now: datetime) -> Plan:
        """Withdraw a scheduled cancellation before the end date: the plan continues as if never cancelled."""
        if self.state is not PlanState.CANCELLATION_SCHEDULED or self.cancellation_ends_on is None:
            raise Conflict(
                f"no cancellation is scheduled (the plan is {self.state.value})", code="no_cancellation_scheduled"
            )
        if not self.licence_active_at(now):
            raise Conflict(
                f"the plan ended on {self.cancellation_ends_on.isoformat()}; activate it again instead",
                code="plan_ended",
            )
        state = PlanState.PAST_DUE if self.past_due_month is not None else PlanState.ACTIVE
        return replace(self, state=state, cancellation_ends_on=None)

    # -- dunning ---------------------------------------------------------------------------------
    def needs_past_due_mark(self) -> bool:
        """Whether a past-due invoice still has to be recorded on the plan: an active plan becomes past
        due; a plan with a scheduled cancellation keeps its course but remembers it for a reactivation.
        A cancelled plan keeps its state (its final invoice is dunned on its own)."""
        return self.state is PlanState.ACTIVE or (
            self.state is PlanState.CANCELLATION_SCHEDULED and self.past_due_month is None
        )

    def mark_past_due(self, month: BillingMonth) -> Plan:
        """The invoice of ``month`` went past due."""
        if not self.needs_past_due_mark():
            return self
        state = PlanState.PAST_DUE if self.state is PlanState.ACTIVE else self.state
        return replace(self, state=state, past_due_month=self.past_due_month or month)

    def clear_past_due(self) -> Plan:
        """The past-due invoice was settled: a past-due plan is active again, a scheduled cancellation
        stays scheduled."""
        state = PlanState.ACTIVE if self.state is PlanState.PAST_DUE else self.state
        return replace(self, state=state, past_due_month=None)

    def end_as_scheduled(self, ends_on: date, now: datetime) -> Plan | None:
        """What an end-of-plan schedule for ``ends_on`` does: end the plan if that cancellation is still
        the scheduled one, else nothing (None: a stale or repeated firing)."""
        if self.state is not PlanState.CANCELLATION_SCHEDULED or self.cancellation_ends_on != ends_on:
            return None
        if require_utc(now) < plan_end_instant(ends_on):
            raise PlanEndNotDue(f"the plan of {self.partner_id} ends after {ends_on.isoformat()}; not yet")
        return replace(self, state=PlanState.CANCELLED, cancellation_ends_on=None, ended_on=ends_on)

    def leave_monthly_runs(self) -> Plan:
        return replace(self, left_monthly_runs=True)

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
        charge_on = max(first, BillingMonth.containing(now).next().first_day)
        final = self.final_month
        if final is not None and BillingMonth.containing_date(charge_on) > final.next():
            return None  # the plan ends before another month is billed
        return charge_on

    def first_billable_month(self) -> BillingMonth | None:
        if self.activated_at is None:
            return None
        return BillingMonth.containing(self.activated_at).next()
