"""Workspace use cases against in-memory fakes."""

from datetime import UTC, datetime

import pytest

from billing_core.domain.errors import Conflict, InvalidRequest, NotFound, PlanNotActive
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.schemas import (
    ActivatePlanRequest,
    ChangeWorkspaceLicenceRequest,
    CreateWorkspaceRequest,
    SwitchWorkspaceToPlanRequest,
)
from billing_core.services.activation import ActivationService
from billing_core.services.workspaces import WorkspaceService
from tests.fakes import (
    FixedClock,
    InMemoryBillingStore,
    InMemoryIdempotencyGuard,
    InMemoryInvoiceStore,
    InMemoryUsageStore,
    RecordingPaymentProvider,
)
from tests.helpers import PRICE_LIST_2026_01

TECH = PartnerIdentity("p1", Role.TECHNICIAN, "tech-1")
OTHER = PartnerIdentity("p2", Role.OWNER, "owner-2")


@pytest.fixture
def store() -> InMemoryBillingStore:
    return InMemoryBillingStore()


@pytest.fixture
def workspaces(store: InMemoryBillingStore) -> WorkspaceService:
    return WorkspaceService(store, store, FixedClock(datetime(2026, 11, 20, tzinfo=UTC)), PRICE_LIST_2026_01)


def activate(store: InMemoryBillingStore) -> None:
    ActivationService(
        plans=store,
        workspaces=store,
        payments=RecordingPaymentProvider(),
        usage=InMemoryUsageStore(),
        clock=FixedClock(datetime(2026, 11, 20, tzinfo=UTC)),
        prices=PRICE_LIST_2026_01,
        idempotency=InMemoryIdempotencyGuard(),
        invoices=InMemoryInvoiceStore(),
    ).activate_monthly_billing(
        PartnerIdentity("p1", Role.OWNER, "o"), "k", ActivatePlanRequest(payment_method="pm_card_visa")
    )


def test_on_plan_workspace_needs_an_active_plan(workspaces: WorkspaceService) -> None:
    request = CreateWorkspaceRequest(name="Acme", edition="anti-malware", max_devices=5)
    with pytest.raises(PlanNotActive):
        workspaces.create_workspace(TECH, request)


def test_missing_plan_fields_are_named(workspaces: WorkspaceService, store: InMemoryBillingStore) -> None:
    activate(store)
    with pytest.raises(InvalidRequest) as error:
        workspaces.create_workspace(TECH, CreateWorkspaceRequest(name="Acme"))
    assert [p.field for p in error.value.problems] == ["edition", "max_devices"]


def test_create_switch_change_and_licence(workspaces: WorkspaceService, store: InMemoryBillingStore) -> None:
    existing = workspaces.create_workspace(TECH, CreateWorkspaceRequest(name="Old", on_plan=False))
    assert workspaces.licence_document(TECH, existing.workspace_id).status == "not_on_plan"
    activate(store)
    switched = workspaces.switch_workspace_to_plan(
        TECH, existing.workspace_id, SwitchWorkspaceToPlanRequest(edition="enterprise-security", max_devices=3)
    )
    assert switched.on_plan and switched.max_devices == 3
    with pytest.raises(Conflict):
        workspaces.switch_workspace_to_plan(
            TECH, existing.workspace_id, SwitchWorkspaceToPlanRequest(edition="anti-malware", max_devices=3)
        )
    changed = workspaces.change_workspace_licence(
        TECH, existing.workspace_id, ChangeWorkspaceLicenceRequest(edition="anti-malware")
    )
    assert (changed.edition, changed.max_devices) == ("anti-malware", 3)
    licence = workspaces.licence_document(TECH, existing.workspace_id)
    assert (licence.status, licence.edition, str(licence.valid_through)) == ("active", "anti-malware", "2026-11-30")
    assert [e.event_type for e in store.audit if e.event_type.startswith("workspace")] == [
        "workspace_created",
        "workspace_switched_to_plan",
        "workspace_licence_changed",
    ]


def test_another_partners_workspace_is_not_found(workspaces: WorkspaceService) -> None:
    mine = workspaces.create_workspace(TECH, CreateWorkspaceRequest(name="Mine", on_plan=False))
    with pytest.raises(NotFound):
        workspaces.get_workspace(OTHER, mine.workspace_id)
    assert workspaces.list_workspaces(OTHER) == []
