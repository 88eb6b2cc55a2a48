"""Every error the partner API answers itself is in the documented shape and never repeats the caller's token
(API Gateway's own answers: tests/unit/test_template_operations.py). Only answers given before any store is
asked, so no stack is needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from billing_core.api.http import ErrorResponse
from infra.dev_tokens import development_token
from infra.local_api import composed_partner_api
from infra.template import load_template


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with Client(composed_partner_api(load_template())) as test_client:
        yield test_client


def _token(partner_id: str, role: str) -> str:
    return development_token(partner_id, role)


CASES: list[tuple[str, str, str, str, dict[str, str], int]] = [
    # (what, method, path, body, extra headers, status); the token is added by the test
    ("a role no partner user has", "GET", "/plan", "", {}, 403),
    ("a technician on a billing route", "GET", "/invoices", "", {}, 403),
    ("a body that is not JSON", "POST", "/workspaces", "{not json", {"Content-Type": "application/json"}, 400),
    ("a body that is not an object", "POST", "/workspaces", "[1, 2]", {"Content-Type": "application/json"}, 400),
    ("a content type that is not JSON", "POST", "/workspaces", "name=x", {"Content-Type": "text/plain"}, 415),
    ("a method no route has", "PUT", "/invoices", "", {}, 405),
    ("no Idempotency-Key", "POST", "/plan/activation", "{}", {"Content-Type": "application/json"}, 400),
]
ROLES = {"a role no partner user has": "auditor", "a technician on a billing route": "technician"}


@pytest.mark.parametrize(("what", "method", "path", "body", "headers", "status"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("prefix", ["", "Bearer "])
def test_error_answers_are_in_the_documented_shape_without_the_token(
    client: Client, what: str, method: str, path: str, body: str, headers: dict[str, str], status: int, prefix: str
) -> None:
    token = _token("acme-echo-check", ROLES.get(what, "owner"))
    response = client.http.request(
        method, path, headers={"Authorization": prefix + token, **headers}, body=body.encode()
    )
    assert response.status_code == status, response.body
    text = response.body.decode()
    for part in [token, *token.split(".")]:
        assert part not in text, f"{what}: the answer repeats the token"
        assert all(part not in str(value) for value in response.headers.values())
    answer: dict[str, Any] = json.loads(text)
    assert ErrorResponse.model_validate(answer).model_dump(mode="json", exclude_none=True) == answer
