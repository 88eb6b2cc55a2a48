"""Partner API: workspaces on the plan and their licence documents."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import (
    MAX_PATH_ID_LENGTH,
    answers_errors,
    json_response,
    parse_body,
    partner_authorizer,
    partner_identity,
    path_id,
)
from billing_core.api.openapi import Param, items_of, operation
from billing_core.schemas import (
    ChangeWorkspaceLicenceRequest,
    CreateWorkspaceRequest,
    LicenceDocumentView,
    SwitchWorkspaceToPlanRequest,
    WorkspaceView,
)
from billing_core.wiring import services

workspaces_api = Blueprint(__name__)

WORKSPACE_ID = {
    "workspace_id": Param(
        "The workspace's id, as POST /workspaces answered it (ws_...)",
        {"type": "string", "minLength": 1, "maxLength": MAX_PATH_ID_LENGTH},
    )
}
NOT_FOUND = "no such workspace (another partner's workspace answers this too)"


@workspaces_api.route("/workspaces", methods=["POST"], authorizer=partner_authorizer)
@operation(
    "Create a workspace, directly on the plan (edition, max_devices) or off it (on_plan: false)",
    request=CreateWorkspaceRequest,
    responses={201: WorkspaceView},
    errors={
        409: "on_plan and the plan is not active; or a concurrent change",
        422: "edition or max_devices missing while on_plan, or an edition not on the price list",
    },
    tags=["Workspaces"],
    description=(
        "On the plan (the default) `edition` and `max_devices` are required and the plan must be active: the "
        'devices the agents report count from now on. With `"on_plan": false` the workspace is created off the '
        "plan; switch it later with `PUT /workspaces/{workspace_id}/plan`. Every partner role may call it."
    ),
)
@answers_errors
def create_workspace() -> Response:
    request = workspaces_api.current_request
    identity = partner_identity(request)
    body = parse_body(request, CreateWorkspaceRequest)
    return json_response(services().workspaces.create_workspace(identity, body), status_code=201)


@workspaces_api.route("/workspaces", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "The partner's workspaces",
    responses={200: items_of(WorkspaceView)},
    tags=["Workspaces"],
    description="Every workspace of the caller's partner, on the plan or off it.",
)
@answers_errors
def list_workspaces() -> Response:
    identity = partner_identity(workspaces_api.current_request)
    return json_response(services().workspaces.list_workspaces(identity))


@workspaces_api.route("/workspaces/{workspace_id}", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "One workspace",
    responses={200: WorkspaceView},
    path_params=WORKSPACE_ID,
    errors={404: NOT_FOUND},
    tags=["Workspaces"],
    description="A workspace of the caller's partner; another partner's workspace answers 404, as an unknown id does.",
)
@answers_errors
def get_workspace(workspace_id: str) -> Response:
    identity = partner_identity(workspaces_api.current_request)
    workspace_id = path_id(workspace_id, "workspace")
    return json_response(services().workspaces.get_workspace(identity, workspace_id))


@workspaces_api.route("/workspaces/{workspace_id}/plan", methods=["PUT"], authorizer=partner_authorizer)
@operation(
    "Switch an existing workspace to the plan with an edition and a maximum device count",
    request=SwitchWorkspaceToPlanRequest,
    responses={200: WorkspaceView},
    path_params=WORKSPACE_ID,
    errors={
        404: NOT_FOUND,
        409: "the plan is not active, the workspace is already on it, or a concurrent change",
        422: "an edition not on the price list",
    },
    tags=["Workspaces"],
    description=(
        "Puts a workspace that is off the plan on it, from now on, with an edition and a device cap (the plan "
        "must be active)."
    ),
)
@answers_errors
def switch_workspace_to_plan(workspace_id: str) -> Response:
    request = workspaces_api.current_request
    identity = partner_identity(request)
    workspace_id = path_id(workspace_id, "workspace")
    body = parse_body(request, SwitchWorkspaceToPlanRequest)
    return json_response(services().workspaces.switch_workspace_to_plan(identity, workspace_id, body))


@workspaces_api.route("/workspaces/{workspace_id}/licence", methods=["PATCH"], authorizer=partner_authorizer)
@operation(
    "Change the edition and/or the maximum device count of a workspace on the plan",
    request=ChangeWorkspaceLicenceRequest,
    responses={200: WorkspaceView},
    path_params=WORKSPACE_ID,
    errors={
        404: NOT_FOUND,
        409: "the workspace is not on the plan, the plan is not active, or a concurrent change",
        422: "neither edition nor max_devices given, or an edition not on the price list",
    },
    tags=["Workspaces"],
    description=(
        "Changes the edition, the device cap or both. A month is rated with the licence as it is at the end of "
        "that month."
    ),
)
@answers_errors
def change_workspace_licence(workspace_id: str) -> Response:
    request = workspaces_api.current_request
    identity = partner_identity(request)
    workspace_id = path_id(workspace_id, "workspace")
    body = parse_body(request, ChangeWorkspaceLicenceRequest)
    return json_response(services().workspaces.change_workspace_licence(identity, workspace_id, body))


@workspaces_api.route("/workspaces/{workspace_id}/licence", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "The licence document the protection software fetches: plan, edition, max devices, status, valid through",
    responses={200: LicenceDocumentView},
    path_params=WORKSPACE_ID,
    errors={404: NOT_FOUND},
    tags=["Workspaces"],
    description=(
        "What the protection software fetches to know whether it is licensed: `status` is `active` (valid through"
        " the end of the month, or the plan's end date when a cancellation is scheduled), `ended` or "
        "`not_on_plan`."
    ),
)
@answers_errors
def licence_document(workspace_id: str) -> Response:
    identity = partner_identity(workspaces_api.current_request)
    workspace_id = path_id(workspace_id, "workspace")
    return json_response(services().workspaces.licence_document(identity, workspace_id))
