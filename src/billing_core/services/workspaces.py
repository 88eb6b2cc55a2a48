"""Workspaces on the plan: create, switch, change, list, and the licence document."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from billing_core.domain.audit import AuditEvent
from billing_core.domain.errors import FieldProblem, InvalidRequest, NotFound
from billing_core.domain.identity import PartnerIdentity
from billing_core.domain.pricing import Prices
from billing_core.domain.workspace import Workspace, licence_document
from billing_core.ports import Clock, PlanStore, WorkspaceStore
from billing_core.schemas import (
    ChangeWorkspaceLicenceRequest,
    CreateWorkspaceRequest,
    LicenceDocumentView,
    SwitchWorkspaceToPlanRequest,
    WorkspaceView,
)
from billing_core.services.views import licence_document_view, workspace_view


def new_workspace_id() -> str:
    return f"ws_{uuid.uuid4().hex}"


@dataclass
class WorkspaceService:
    plans: PlanStore
    workspaces: WorkspaceStore
    clock: Clock
    prices: Prices  # the published price lists: editions as they are on the day of the change

    def create_workspace(self, identity: PartnerIdentity, request: CreateWorkspaceRequest) -> WorkspaceView:
        now = self.clock.now()
        workspace = Workspace(
            workspace_id=new_workspace_id(), partner_id=identity.partner_id, name=request.name, created_at=now
        )
        if request.on_plan:
            missing = [
                FieldProblem(name, "required when on_plan is true")
                for name in ("edition", "max_devices")
                if getattr(request, name) is None
            ]
            if request.edition is None or request.max_devices is None:
                raise InvalidRequest(missing)
            workspace = workspace.put_on_plan(
                plan=self.plans.load_plan(identity.partner_id),
                prices=self.prices.on(now.date()),
                edition=request.edition,
                max_devices=request.max_devices,
                now=now,
            )
        saved = self.workspaces.save_workspace(
            workspace,
            audit=self._audit(identity, "workspace_created", workspace, on_plan=workspace.on_plan),
        )
        return workspace_view(saved)

    def switch_workspace_to_plan(
        self, identity: PartnerIdentity, workspace_id: str, request: SwitchWorkspaceToPlanRequest
    ) -> WorkspaceView:
        workspace = self._owned_workspace(identity, workspace_id)
        switched = workspace.put_on_plan(
            plan=self.plans.load_plan(identity.partner_id),
            prices=self.prices.on(self.clock.now().date()),
            edition=request.edition,
            max_devices=request.max_devices,
            now=self.clock.now(),
        )
        saved = self.workspaces.save_workspace(
            switched, audit=self._audit(identity, "workspace_switched_to_plan", switched)
        )
        return workspace_view(saved)

    def change_workspace_licence(
        self, identity: PartnerIdentity, workspace_id: str, request: ChangeWorkspaceLicenceRequest
    ) -> WorkspaceView:
        workspace = self._owned_workspace(identity, workspace_id)
        changed = workspace.change_licence(
            plan=self.plans.load_plan(identity.partner_id),
            prices=self.prices.on(self.clock.now().date()),
            edition=request.edition,
            max_devices=request.max_devices,
            now=self.clock.now(),
        )
        saved = self.workspaces.save_workspace(
            changed,
            audit=self._audit(
                identity,
                "workspace_licence_changed",
                changed,
                previous_edition=workspace.edition,
                previous_max_devices=workspace.max_devices,
            ),
        )
        return workspace_view(saved)

    def list_workspaces(self, identity: PartnerIdentity) -> list[WorkspaceView]:
        return [workspace_view(w) for w in self.workspaces.list_workspaces(identity.partner_id)]

    def get_workspace(self, identity: PartnerIdentity, workspace_id: str) -> WorkspaceView:
        return workspace_view(self._owned_workspace(identity, workspace_id))

    def licence_document(self, identity: PartnerIdentity, workspace_id: str) -> LicenceDocumentView:
        workspace = self._owned_workspace(identity, workspace_id)
        plan = self.plans.load_plan(identity.partner_id)
        return licence_document_view(licence_document(workspace, plan, self.clock.now()))

    def _owned_workspace(self, identity: PartnerIdentity, workspace_id: str) -> Workspace:
        workspace = self.workspaces.load_workspace(workspace_id)
        # Another partner's workspace is indistinguishable from a missing one.
        if workspace is None or workspace.partner_id != identity.partner_id:
            raise NotFound(f"workspace {workspace_id} not found")
        return workspace

    def _audit(self, identity: PartnerIdentity, event_type: str, workspace: Workspace, **details: object) -> AuditEvent:
        return AuditEvent(
            identity.partner_id,
            event_type,
            self.clock.now(),
            identity.subject,
            {
                "workspace_id": workspace.workspace_id,
                "edition": workspace.edition,
                "max_devices": workspace.max_devices,
                **details,
            },
        )
