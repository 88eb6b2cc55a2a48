"""Dunning is not a dead end, and not escapable by a trick (issue 27, item 3), on DynamoDB Local: a past-due
plan takes no new workspace until the partner gives a new payment method, which settles every unpaid invoice
at once, exactly once; a cancelled plan with an unpaid invoice is not activated again before it is settled."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import Conflict, PaymentDeclined, PlanPastDue, UnpaidInvoice
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus
from billing_core.domain.plan import PlanState
from billing_core.schemas import (
    ActivatePlanRequest,
    CancelPlanRequest,
    CreateWorkspaceRequest,
    UpdatePaymentMethodRequest,
)
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from tests.fakes import FixedClock, InMemoryPlanEndSchedules, RecordingPaymentProvider
from tests.helpers import new_partner_id
from tests.integration.test_monthly_charge_run import sighting

pytestmark = pytest.mark.integration
OCTOBER = BillingMonth(2026, 10)
FAILS_OFF_SESSION = "pm_card_offSessionDeclined"  # pays the activation, declines every monthly charge
VISA, MASTERCARD = "pm_card_visa", "pm_card_mastercard"


class World:
    def __init__(self, settings: BillingSettings) -> None:
        self.clock = FixedClock(datetime(2026, 9, 10, 9, 0, tzinfo=UTC))
        self.provider = RecordingPaymentProvider()
        self.wired = Services(settings, clock=self.clock, payments=self.provider)
        self.partner = new_partner_id()
        self.owner = PartnerIdentity(self.partner, Role.OWNER, "owner", email=f"billing@{self.partner}.example")

    def october_charged_with(self, card: str) -> None:
        """Activated in September on ``card``, one device in October, the run on 1 November."""
        request = ActivatePlanRequest(payment_method=card)
        assert self.wired.activation.activate_monthly_billing(self.owner, uuid.uuid4().hex, request).status == (
            "activated"
        )
        workspace = self.wired.workspaces.create_workspace(
            self.owner, CreateWorkspaceRequest(name="Acme", edition="anti-malware", max_devices=5)
        )
        self.clock.current = datetime(2026, 10, 5, tzinfo=UTC)
        self.wired.metering.record_batch([sighting(workspace.workspace_id, "a", self.clock.current)])
        self.run_on(date(2026, 11, 1))

    def run_on(self, day: date) -> None:
        self.clock.current = datetime(day.year, day.month, day.day, 0, 5, tzinfo=UTC)
        self.wired.monthly_charge.charge_partner_for_month(self.partner, OCTOBER)

    def past_due(self) -> None:
        for day in (3, 5, 7):  # the retries all decline
            self.run_on(date(2026, 11, day))
        invoice = self.wired.invoices.load_invoice(self.partner, OCTOBER)
        assert invoice is not None and invoice.status is InvoiceStatus.PAST_DUE

    def new_card(self, card: str, key: str | None = None) -> object:
        return self.wired.settlement.update_payment_method(
            self.owner, key or uuid.uuid4().hex, UpdatePaymentMethodRequest(payment_method=card)
        )

    def october_paid_charges(self) -> int:
        return sum(
            1
            for key, outcome in self.provider.ledger
            if key.startswith(f"month:{self.partner}:2026-10:") and outcome.succeeded
        )


def test_a_past_due_plan_takes_no_workspace_until_a_new_card_settles_it_once(settings: BillingSettings) -> None:
    world = World(settings)
    world.october_charged_with(FAILS_OFF_SESSION)
    world.past_due()
    assert world.wired.store.load_plan(world.partner).state is PlanState.PAST_DUE
    with pytest.raises(PlanPastDue):
        world.wired.workspaces.create_workspace(
            world.owner, CreateWorkspaceRequest(name="New", edition="anti-malware", max_devices=2)
        )

    answer = world.new_card(MASTERCARD, key="new-card")

    assert answer.plan_state == "active" and answer.payment_method == MASTERCARD  # type: ignore[attr-defined]
    assert [(v.month, v.status) for v in answer.settled] == [("2026-10", "paid")]  # type: ignore[attr-defined]
    assert answer.unpaid == []  # type: ignore[attr-defined]
    assert world.october_paid_charges() == 1
    assert world.new_card(MASTERCARD, key="new-card") == answer  # a replay: nothing charged again
    assert world.new_card(VISA).settled == []  # type: ignore[attr-defined]  # nothing left to settle
    assert world.october_paid_charges() == 1
    assert world.wired.store.load_plan(world.partner).payment_method_ref == VISA  # the latest card is kept
    world.wired.workspaces.create_workspace(
        world.owner, CreateWorkspaceRequest(name="New", edition="anti-malware", max_devices=2)
    )


def test_a_new_card_that_declines_too_leaves_the_invoice_unpaid_and_the_plan_past_due(
    settings: BillingSettings,
) -> None:
    world = World(settings)
    world.october_charged_with(FAILS_OFF_SESSION)
    world.past_due()

    answer = world.new_card(FAILS_OFF_SESSION)

    assert [(v.month, v.status, v.failure_code) for v in answer.unpaid] == [  # type: ignore[attr-defined]
        ("2026-10", "past_due", "card_declined")
    ]
    assert world.wired.store.load_plan(world.partner).state is PlanState.PAST_DUE
    assert world.october_paid_charges() == 0


def test_a_card_refused_when_saved_changes_nothing(settings: BillingSettings) -> None:
    world = World(settings)
    world.october_charged_with(FAILS_OFF_SESSION)
    with pytest.raises(PaymentDeclined):
        world.new_card("pm_card_chargeDeclined")
    assert world.wired.store.load_plan(world.partner).payment_method_ref == FAILS_OFF_SESSION


def test_a_declined_invoice_is_settled_before_its_retry_day(settings: BillingSettings) -> None:
    world = World(settings)
    world.october_charged_with(FAILS_OFF_SESSION)  # declined on the 1st, next retry on the 3rd
    world.clock.current = datetime(2026, 11, 2, 9, tzinfo=UTC)
    answer = world.new_card(VISA)
    assert [(v.month, v.status) for v in answer.settled] == [("2026-10", "paid")]  # type: ignore[attr-defined]
    world.run_on(date(2026, 11, 3))  # the retry day: nothing left to charge
    assert world.october_paid_charges() == 1


def test_a_cancelled_plan_whose_final_invoice_is_past_due_is_not_activated_before_it_is_settled(
    settings: BillingSettings,
) -> None:
    world = World(settings)
    world.wired.cancellation.schedules = InMemoryPlanEndSchedules()
    world.october_charged_with(FAILS_OFF_SESSION)  # (October is not the final month: it went past due first)
    world.past_due()
    world.wired.cancellation.cancel_plan(world.owner, CancelPlanRequest(ends_on=date(2026, 11, 30)))
    world.clock.current = datetime(2026, 12, 1, tzinfo=UTC)
    world.wired.cancellation.end_plan_as_scheduled(world.partner, date(2026, 11, 30))
    world.clock.current = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    world.wired.monthly_charge.charge_partner_for_month(world.partner, BillingMonth(2026, 11))  # the final invoice
    world.clock.current = datetime(2026, 12, 10, 9, tzinfo=UTC)
    again = ActivatePlanRequest(payment_method=VISA)

    with pytest.raises(UnpaidInvoice):
        world.wired.activation.activate_monthly_billing(world.owner, "again-1", again)
    assert world.wired.store.load_plan(world.partner).state is PlanState.CANCELLED

    answer = world.new_card(VISA)
    assert "2026-10" in [v.month for v in answer.settled]  # type: ignore[attr-defined]
    assert world.wired.activation.activate_monthly_billing(world.owner, "again-2", again).status == "activated"


def test_a_plan_left_past_due_after_its_invoice_was_paid_is_cleared_by_the_next_request(
    settings: BillingSettings,
) -> None:
    """The mark can outlive the debt (a request that paid, then died before clearing it; a run that read the
    invoice before it was paid): the run no longer marks a paid invoice, and any later request clears it."""
    world = World(settings)
    world.october_charged_with(FAILS_OFF_SESSION)
    world.past_due()
    world.new_card(VISA)
    world.wired.monthly_charge._mark_plan_past_due(world.partner, OCTOBER)  # a run's late write: no effect now
    assert world.wired.store.load_plan(world.partner).state is PlanState.ACTIVE
    plan = world.wired.store.load_plan(world.partner)
    world.wired.store.save_plan(  # as left by a request that died between paying and clearing
        plan.mark_past_due(OCTOBER), audit=AuditEvent(world.partner, "plan_past_due", world.clock.now(), "test")
    )
    answer = world.new_card(MASTERCARD)
    assert answer.plan_state == "active" and answer.settled == []  # type: ignore[attr-defined]


def test_no_card_is_taken_before_the_plan_was_ever_active(settings: BillingSettings) -> None:
    world = World(settings)
    with pytest.raises(Conflict) as refused:
        world.new_card(VISA)
    assert refused.value.code == "plan_not_active"
