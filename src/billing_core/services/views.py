"""Domain objects -> response models. One place, shared by every use case that answers with them."""

from __future__ import annotations

from datetime import datetime

from billing_core.domain.money import Money
from billing_core.domain.plan import Plan
from billing_core.domain.workspace import LicenceDocument, Workspace
from billing_core.schemas import LicenceDocumentView, MoneyView, PlanStatusView, WorkspaceView


def money_view(money: Money) -> MoneyView:
    return MoneyView(amount_minor=money.amount_minor, currency=money.currency, display=money.format())


def workspace_view(workspace: Workspace) -> WorkspaceView:
    return WorkspaceView(
        workspace_id=workspace.workspace_id,
        name=workspace.name,
        on_plan=workspace.on_plan,
        edition=workspace.edition,
        max_devices=workspace.max_devices,
        created_at=workspace.created_at,
        joined_plan_at=workspace.joined_plan_at,
    )


def plan_status_view(plan: Plan, workspaces: list[Workspace], now: datetime) -> PlanStatusView:
    return PlanStatusView(
        partner_id=plan.partner_id,
        state=plan.state.value,
        currency=plan.currency,
        price_list_version=plan.price_list_version,
        activated_at=plan.activated_at,
        covered_through=plan.covered_through(),
        next_charge_date=plan.next_charge_date(now),
        workspaces_on_plan=[workspace_view(w) for w in workspaces if w.on_plan],
    )


def licence_document_view(document: LicenceDocument) -> LicenceDocumentView:
    return LicenceDocumentView(
        workspace_id=document.workspace_id,
        plan=document.plan,
        edition=document.edition,
        max_devices=document.max_devices,
        status=document.status.value,
        valid_through=document.valid_through,
    )
