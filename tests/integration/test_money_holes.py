"""The money holes of issues 17 and 19, closed and proven on the local stack (DynamoDB Local over the
wire, the sandbox provider, a fixed test clock per test): past due surviving a reactivation, the licence
as of the month's end, late usage after a cancelled plan's final invoice, the finaliser's plan checks
and strongly consistent money reads."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pynamodb.connection.base import Connection

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import InvoiceStatus
from billing_core.domain.plan import PlanState
from billing_core.schemas import (
    ActivatePlanRequest,
    CancelPlanRequest,
    ChangeWorkspaceLicenceRequest,
    CreateWorkspaceRequest,
)
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


# -- 17.1 / 19.3 the licence as of the month's end ---------------------------------------------------
def change_licence(wired: Services, owner: PartnerIdentity, workspace: str, **change: object) -> None:
    wired.workspaces.change_workspace_licence(owner, workspace, ChangeWorkspaceLicenceRequest.model_validate(change))


def test_an_edition_change_at_00_01_on_the_1st_before_the_run_is_not_billed_for_the_month_before(
    settings: BillingSettings,
) -> None:
    clock = FixedClock(datetime(2026, 10, 10, tzinfo=UTC))
    wired, owner, workspace = activated_partner(settings, clock, edition="anti-malware", max_devices=5)
    clock.current = datetime(2026, 11, 10, tzinfo=UTC)
    wired.metering.record_batch([sighting(workspace, device, clock.current) for device in ("a", "b", "c")])
    clock.current = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)  # the run starts at 00:05
    change_licence(wired, owner, workspace, edition="enterprise-security", max_devices=2)
    clock.current = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    invoice = wired.monthly_charge.charge_partner_for_month(owner.partner_id, NOVEMBER)
    assert invoice is not None
    [line] = invoice.lines
    assert (line.edition, line.seats, line.devices, line.amount.amount_minor) == ("anti-malware", 3, 3, 750)
    # A redelivered run, later still, rates the same (the invoice exists; it is carried on, not re-rated).
    clock.current = datetime(2026, 12, 2, tzinfo=UTC)
    again = wired.monthly_charge.charge_partner_for_month(owner.partner_id, NOVEMBER)
    assert again is not None and again.lines == invoice.lines and again.status is InvoiceStatus.PAID


def test_a_late_adjustment_never_exceeds_the_cap_the_month_had_at_its_end(settings: BillingSettings) -> None:
    clock = FixedClock(datetime(2026, 10, 10, tzinfo=UTC))
    wired, owner, workspace = activated_partner(settings, clock, edition="anti-malware", max_devices=2)
    clock.current = datetime(2026, 11, 10, tzinfo=UTC)
    wired.metering.record_batch([sighting(workspace, "a", clock.current)])
    clock.current = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    november = wired.monthly_charge.charge_partner_for_month(owner.partner_id, NOVEMBER)
    assert november is not None and [line.seats for line in november.lines] == [1]
    # November's cap was 2; it grows to 10 (and the edition changes) before November's late devices arrive.
    clock.current = datetime(2026, 12, 3, tzinfo=UTC)
    change_licence(wired, owner, workspace, edition="business-security", max_devices=10)
    late = [sighting(workspace, device, datetime(2026, 11, 29, tzinfo=UTC)) for device in ("b", "c", "d")]
    wired.metering.record_batch(late)
    clock.current = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    december = wired.monthly_charge.charge_partner_for_month(owner.partner_id, DECEMBER)
    assert december is not None
    adjustments = [line for line in december.lines if line.adjustment]
    assert [(a.month, a.edition, a.seats, a.devices) for a in adjustments] == [(NOVEMBER, "anti-malware", 1, 3)]
    assert adjustments[0].amount.amount_minor == 250
    stored = wired.store.load_workspace(workspace)
    assert stored is not None and [term.max_devices for term in stored.licence_history] == [2, 10]


# -- 19.7 reads that decide money are strongly consistent ---------------------------------------------
def test_every_read_of_the_monthly_run_is_strongly_consistent(
    settings: BillingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB Local is always consistent, so the requests themselves are checked: a GSI (never consistent)
    or a read without ConsistentRead could miss a workspace created or a late device recorded a moment ago."""
    clock = FixedClock(datetime(2026, 10, 10, tzinfo=UTC))
    wired, owner, workspace = activated_partner(settings, clock)
    clock.current = datetime(2026, 11, 10, tzinfo=UTC)
    wired.metering.record_batch([sighting(workspace, "a", clock.current)])
    clock.current = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
    assert wired.monthly_charge.charge_partner_for_month(owner.partner_id, NOVEMBER) is not None
    wired.metering.record_batch([sighting(workspace, "late", datetime(2026, 11, 30, tzinfo=UTC))])
    wired.workspaces.create_workspace(owner, CreateWorkspaceRequest(name="Created just now", on_plan=False))

    reads: list[tuple[str, dict[str, Any]]] = []
    real_call = Connection._make_api_call

    def recording_call(self: Connection, operation_name: str, operation_kwargs: dict[str, Any]) -> Any:
        if operation_name in ("GetItem", "Query", "BatchGetItem", "Scan"):
            reads.append((operation_name, operation_kwargs))
        return real_call(self, operation_name, operation_kwargs)

    monkeypatch.setattr(Connection, "_make_api_call", recording_call)
    clock.current = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    december = wired.monthly_charge.charge_partner_for_month(owner.partner_id, DECEMBER)
    assert december is not None and [line.adjustment for line in december.lines] == [False, True]
    assert {operation for operation, _ in reads} >= {"GetItem", "Query", "BatchGetItem"}
    for operation, request in reads:
        assert "IndexName" not in request, (operation, request)
        if operation == "BatchGetItem":
            assert all(keys.get("ConsistentRead") for keys in request["RequestItems"].values()), request
        else:
            assert request.get("ConsistentRead") is True, (operation, request)
