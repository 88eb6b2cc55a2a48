"""The local partner API server (Chalice's, as `make up` serves it) behaves like API Gateway where a
client can tell: path parameters arrive URL-decoded."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from billing_core.domain.identity import Role
from infra.dev_tokens import development_token
from infra.local_api import ApiGatewayRouteMatcher, LocalApiServer, composed_partner_api
from infra.processes import free_port
from infra.stack import LocalStack
from tests.helpers import new_partner_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(local_stack: LocalStack) -> Iterator[LocalApiServer]:
    api = LocalApiServer(composed_partner_api(local_stack.template), "127.0.0.1", free_port())
    api.start()
    yield api
    api.stop()


def call(url: str, token: str, method: str = "GET", payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the local server on loopback
        url,
        method=method,
        data=json.dumps(payload).encode() if payload is not None else None,
        headers={"Authorization": token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_an_url_encoded_path_parameter_reaches_the_view_decoded(server: LocalApiServer) -> None:
    token = development_token(new_partner_id(), Role.OWNER)
    status, workspace = call(f"{server.url}/workspaces", token, "POST", {"name": "Encoded", "on_plan": False})
    assert status == 201
    workspace_id: str = workspace["workspace_id"]
    assert workspace_id.startswith("ws_")
    # "ws%5F..." is "ws_..." percent-encoded: API Gateway hands the function the decoded id.
    encoded = "ws%5F" + workspace_id.removeprefix("ws_")
    status, found = call(f"{server.url}/workspaces/{encoded}", token)
    assert (status, found["workspace_id"]) == (200, workspace_id)
    status, licence = call(f"{server.url}/workspaces/{encoded}/licence", token)
    assert (status, licence["status"]) == (200, "not_on_plan")
    # An encoded slash stays inside its segment (it is part of the id, not a path separator).
    status, missing = call(f"{server.url}/workspaces/ws%2Fother", token)
    assert status == 404 and "ws/other" in missing["error"]["message"]


def test_the_route_matcher_decodes_only_the_captured_parameters() -> None:
    matcher = ApiGatewayRouteMatcher(["/workspaces/{workspace_id}", "/invoices/{month}/usage-report"])
    matched = matcher.match_route("/invoices/2026%2D10/usage-report?x=%41")
    assert (matched.route, matched.captured) == ("/invoices/{month}/usage-report", {"month": "2026-10"})
    assert matched.query_params == {"x": ["A"]}
    assert matcher.match_route("/workspaces/a%20b").captured == {"workspace_id": "a b"}
