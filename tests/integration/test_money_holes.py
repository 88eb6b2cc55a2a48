"""The money holes of issues 17 and 19, closed and proven on the local stack (DynamoDB Local over the
wire, the sandbox provider, a fixed test clock per test): past due surviving a reactivation, the licence
as of the month's end, late usage after a cancelled plan's final invoice, the finaliser's plan checks
and strongly consistent money reads."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus
from billing_core.domain.plan import PlanState
from billing_core.schemas import ActivatePlanRequest, CancelPlanRequest, CreateWorkspaceRequest
from billing_core.services.metering import InboundMessage
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from tests.fakes import FixedClock
from tests.helpers import new_partner_id

pytestmark = pytest.mark.integration
OCTOBER, NOVEMBER, DECEMBER = BillingMonth(2026, 10), BillingMonth(2026, 11), BillingMonth(2026, 12)


def sighting(workspace_id: str, device_id: str, at: datetime) -> InboundMessage:
    body = {
        "type": "sighting",
        "event_id": uuid.uuid4().hex,
        "workspace_id": workspace_id,
        "device_id": device_id,
        "observed_at": at.isoformat(),
    }
    return InboundMessage(uuid.uuid4().hex, json.dumps(body))


def activated_partner(
    settings: BillingSettings, clock: FixedClock, *, edition: str = "anti-malware", max_devices: int = 5
) -> tuple[Services, PartnerIdentity, str]:
    """A partner activated on ``clock.current`` with one workspace on the plan."""
    wired = Services(settings, clock=clock)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    workspace = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Acme", edition=edition, max_devices=max_devices)
    )
    return wired, owner, workspace.workspace_id


def use_card(wired: Services, partner: str, payment_method: str) -> None:
    plan = wired.store.load_plan(partner)
    wired.store.save_plan(
        replace(plan, payment_method_ref=payment_method),
        audit=AuditEvent(partner, "test_card_changed", wired.clock.now(), "test", {}),
    )


# -- 17.4 past due survives a reactivation ---------------------------------------------------------
def test_a_reactivated_plan_whose_invoice_went_past_due_meanwhile_is_past_due(settings: BillingSettings) -> None:
    clock = FixedClock(datetime(2026, 9, 10, tzinfo=UTC))
    wired, owner, workspace = activated_partner(settings, clock)
    clock.current = datetime(2026, 10, 6, tzinfo=UTC)
    wired.metering.record_batch([sighting(workspace, "a", clock.current)])
    wired.cancellation.cancel_plan(owner, CancelPlanRequest(ends_on=date(2026, 11, 30)))
    use_card(wired, owner.partner_id, "pm_card_chargeCustomerFail")
    for day in (1, 3, 5, 7):
        clock.current = datetime(2026, 11, day, 0, 5, tzinfo=UTC)
        invoice = wired.monthly_charge.charge_partner_for_month(owner.partner_id, OCTOBER)
    assert invoice is not None and invoice.status is InvoiceStatus.PAST_DUE
    plan = wired.store.load_plan(owner.partner_id)
    assert (plan.state, plan.past_due_month) == (PlanState.CANCELLATION_SCHEDULED, OCTOBER)
    clock.current = datetime(2026, 11, 8, tzinfo=UTC)
    assert wired.cancellation.reactivate_plan(owner).state == "past_due"
    assert wired.store.load_plan(owner.partner_id).state is PlanState.PAST_DUE
