"""Partner API: workspaces on the plan and their licence documents."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from billing_core.api.http import answers_errors, json_response, parse_body, partner_authorizer, partner_identity
from billing_core.schemas import ChangeWorkspaceLicenceRequest, CreateWorkspaceRequest, SwitchWorkspaceToPlanRequest
from billing_core.wiring import services

workspaces_api = Blueprint(__name__)


@workspaces_api.route("/workspaces", methods=["POST"], authorizer=partner_authorizer)
@answers_errors
def create_workspace() -> Response:
    request = workspaces_api.current_request
    identity = partner_identity(request)
    body = parse_body(request, CreateWorkspaceRequest)
    return json_response(services().workspaces.create_workspace(identity, body), status_code=201)


@workspaces_api.route("/workspaces", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def list_workspaces() -> Response:
    identity = partner_identity(workspaces_api.current_request)
    return json_response(services().workspaces.list_workspaces(identity))


@workspaces_api.route("/workspaces/{workspace_id}", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def get_workspace(workspace_id: str) -> Response:
    identity = partner_identity(workspaces_api.current_request)
    return json_response(services().workspaces.get_workspace(identity, workspace_id))


@workspaces_api.route("/workspaces/{workspace_id}/plan", methods=["PUT"], authorizer=partner_authorizer)
@answers_errors
def switch_workspace_to_plan(workspace_id: str) -> Response:
    request = workspaces_api.current_request
    identity = partner_identity(request)
    body = parse_body(request, SwitchWorkspaceToPlanRequest)
    return json_response(services().workspaces.switch_workspace_to_plan(identity, workspace_id, body))


@workspaces_api.route("/workspaces/{workspace_id}/licence", methods=["PATCH"], authorizer=partner_authorizer)
@answers_errors
def change_workspace_licence(workspace_id: str) -> Response:
    request = workspaces_api.current_request
    identity = partner_identity(request)
    body = parse_body(request, ChangeWorkspaceLicenceRequest)
    return json_response(services().workspaces.change_workspace_licence(identity, workspace_id, body))


@workspaces_api.route("/workspaces/{workspace_id}/licence", methods=["GET"], authorizer=partner_authorizer)
@answers_errors
def licence_document(workspace_id: str) -> Response:
    identity = partner_identity(workspaces_api.current_request)
    return json_response(services().workspaces.licence_document(identity, workspace_id))
