"""The partner API through Chalice's test client, against DynamoDB Local over the wire."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.test import Client

from billing_core.adapters.dynamodb.models import AuditItem, PaymentItem, PlanItem, partner_pk
from billing_core.domain.identity import Role
from tests.helpers import auth_headers, body, new_partner_id

pytestmark = pytest.mark.integration

VISA = {"payment_method": "pm_card_visa", "currency": "USD"}


def answer(response: Any) -> tuple[int, dict[str, Any]]:
    return response.status_code, json.loads(response.body or b"{}")


def activate(client: Client, partner_id: str, key: str, payload: dict[str, Any] | None = None, **kw: Any) -> Any:
    headers = auth_headers(partner_id, **kw)
    if key:
        headers["Idempotency-Key"] = key
    return client.http.post("/plan/activation", headers=headers, body=body(payload or VISA))


def payments_of(partner_id: str) -> list[PaymentItem]:
    return list(PaymentItem.query(partner_pk(partner_id), PaymentItem.sk.startswith("PAYMENT#")))


def audit_types(partner_id: str) -> list[str]:
    return [item.event_type for item in AuditItem.query(partner_pk(partner_id), AuditItem.sk.startswith("AUDIT#"))]


def test_activation_is_charged_once_per_key_and_conflicts_afterwards(client: Client) -> None:
    partner = new_partner_id()
    status, first = answer(activate(client, partner, "key-1"))
    assert status == 201, first
    assert first["plan"]["state"] == "active"
    assert first["activation_fee"] == {"amount_minor": 1000, "currency": "USD", "display": "USD 10.00"}

    status, replay = answer(activate(client, partner, "key-1"))
    assert (status, replay) == (201, first)

    status, reused = answer(activate(client, partner, "key-1", {"payment_method": "pm_card_mastercard"}))
    assert status == 422
    assert reused["error"]["fields"][0]["field"] == "Idempotency-Key"

    status, conflict = answer(activate(client, partner, "key-2"))
    assert (status, conflict["error"]["code"]) == (409, "plan_already_active")

    payments = payments_of(partner)
    assert [(p.amount_minor, p.currency, p.provider_payment_id) for p in payments] == [
        (1000, "USD", first["payment_id"])
    ]
    assert audit_types(partner) == ["activation_started", "plan_activated"]


def test_activation_requires_an_idempotency_key(client: Client) -> None:
    status, error = answer(activate(client, new_partner_id(), ""))
    assert status == 400
    assert "Idempotency-Key" in error["error"]["message"]


def test_declined_activation_answers_402_and_leaves_the_plan_inactive(client: Client) -> None:
    partner = new_partner_id()
    status, declined = answer(activate(client, partner, "k1", {"payment_method": "pm_card_chargeDeclined"}))
    assert status == 402
    assert declined["error"]["decline_code"] == "card_declined"
    # The same key answers the same decline (stored outcome), without a new attempt.
    assert answer(activate(client, partner, "k1", {"payment_method": "pm_card_chargeDeclined"}))[0] == 402
    plan = PlanItem.get(partner_pk(partner), "PLAN")
    assert (plan.state, plan.activation_attempt) == ("inactive", 1)
    assert payments_of(partner) == []
    assert audit_types(partner) == ["activation_started", "activation_declined"]

    status, _ = answer(client.http.get("/plan", headers=auth_headers(partner)))
    assert status == 200
    status, activated = answer(activate(client, partner, "k2", {"payment_method": "pm_card_visa", "currency": "EUR"}))
    assert status == 201
    assert activated["activation_fee"]["currency"] == "EUR"
    assert len(payments_of(partner)) == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"payment_method": "pm_card_visa", "currency": "GBP"}, "currency"),
        ({"payment_method": "pm_card_visa", "currency": "usd"}, "currency"),
        ({"currency": "USD"}, "payment_method"),
        ({"payment_method": "pm_card_visa", "coupon": "X"}, "coupon"),
    ],
)
def test_invalid_activation_bodies_name_the_field(client: Client, payload: dict[str, Any], field: str) -> None:
    partner = new_partner_id()
    status, error = answer(activate(client, partner, "k", payload))
    assert status == 422, error
    assert field in [problem["field"] for problem in error["error"]["fields"]]
    assert payments_of(partner) == []


THREE_DS = {"payment_method": "pm_card_threeDSecure2Required", "currency": "EUR"}


def test_a_card_needing_3d_secure_answers_202_then_the_same_request_completes_it_once(client: Client) -> None:
    partner = new_partner_id()
    status, waiting = answer(activate(client, partner, "k1", THREE_DS))
    assert status == 202, waiting
    assert waiting["status"] == "requires_action"
    assert waiting["plan"] is None
    assert waiting["activation_fee"] == {"amount_minor": 1000, "currency": "EUR", "display": "EUR 10.00"}
    assert waiting["client_secret"].startswith(waiting["payment_id"] + "_secret_")
    assert waiting["authentication_expires_at"].endswith("Z")
    assert answer(client.http.get("/plan", headers=auth_headers(partner)))[1]["state"] == "activating"
    assert payments_of(partner) == []

    # The customer authenticated (the sandbox card's customer always does): the same request completes it.
    status, activated = answer(activate(client, partner, "k1", THREE_DS))
    assert status == 201, activated
    assert (activated["status"], activated["payment_id"]) == ("activated", waiting["payment_id"])
    assert activated["plan"]["state"] == "active" and activated["client_secret"] is None
    # From now on Powertools replays the stored answer; the fee was charged once.
    assert answer(activate(client, partner, "k1", THREE_DS)) == (201, activated)
    assert [(p.amount_minor, p.currency, p.provider_payment_id) for p in payments_of(partner)] == [
        (1000, "EUR", waiting["payment_id"])
    ]
    assert audit_types(partner) == ["activation_started", "authentication_requested", "plan_activated"]
    status, conflict = answer(activate(client, partner, "k2"))
    assert (status, conflict["error"]["code"]) == (409, "plan_already_active")


def test_a_failed_3d_secure_is_402_and_the_plan_stays_inactive(client: Client) -> None:
    partner = new_partner_id()
    failing = {"payment_method": "pm_card_threeDSecure2AuthenticationFails", "currency": "USD"}
    assert answer(activate(client, partner, "k1", failing))[0] == 202

    status, declined = answer(activate(client, partner, "k1", failing))

    assert status == 402, declined
    assert (declined["error"]["code"], declined["error"]["decline_code"]) == (
        "payment_declined",
        "authentication_failed",
    )
    assert answer(activate(client, partner, "k1", failing)) == (402, declined)
    plan = PlanItem.get(partner_pk(partner), "PLAN")
    assert (plan.state, plan.pending_authentication) == ("inactive", None)
    assert payments_of(partner) == []
    assert answer(activate(client, partner, "k2"))[0] == 201


def test_a_pending_3d_secure_waits_409_for_another_key_and_422_for_another_body(client: Client) -> None:
    partner = new_partner_id()
    never = {"payment_method": "pm_card_authenticationRequired", "currency": "USD"}
    status, waiting = answer(activate(client, partner, "k1", never))
    assert status == 202

    assert answer(activate(client, partner, "k1", never)) == (202, waiting)  # still waiting, nothing stored
    status, pending = answer(activate(client, partner, "k2"))
    assert (status, pending["error"]["code"]) == (409, "authentication_pending")
    assert waiting["payment_id"] in pending["error"]["message"]
    status, reused = answer(activate(client, partner, "k1"))
    assert status == 422
    assert reused["error"]["fields"][0]["field"] == "Idempotency-Key"
    assert payments_of(partner) == []


def test_not_json_is_a_400(client: Client) -> None:
    headers = auth_headers(new_partner_id(), **{"Idempotency-Key": "k"})
    response = client.http.post("/plan/activation", headers=headers, body="{not json")
    assert answer(response)[0] == 400


def test_access_rules(client: Client) -> None:
    partner = new_partner_id()
    assert answer(client.http.get("/plan"))[0] == 401
    assert answer(client.http.get("/workspaces"))[0] == 401
    assert answer(client.http.get("/plan", headers=auth_headers(partner, Role.TECHNICIAN)))[0] == 403
    assert answer(activate(client, partner, "k", role=Role.TECHNICIAN))[0] == 403
    assert answer(activate(client, partner, "k", role=Role.BILLING_ADMIN))[0] == 201
    assert answer(client.http.get("/workspaces", headers=auth_headers(partner, Role.TECHNICIAN)))[0] == 200
    assert answer(client.http.get("/plan", headers=auth_headers(partner, "janitor")))[0] == 403


def create_workspace(client: Client, partner: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return answer(client.http.post("/workspaces", headers=auth_headers(partner), body=body(payload)))


def test_workspaces_on_the_plan(client: Client) -> None:
    partner = new_partner_id()
    on_plan: dict[str, Any] = {"name": "Acme", "edition": "anti-malware", "max_devices": 5}
    status, error = create_workspace(client, partner, on_plan)
    assert (status, error["error"]["code"]) == (409, "plan_not_active")
    status, existing = create_workspace(client, partner, {"name": "Old licence", "on_plan": False})
    assert status == 201 and existing["on_plan"] is False
    assert answer(activate(client, partner, "k"))[0] == 201

    invalid: list[tuple[dict[str, Any], str]] = [
        ({**on_plan, "edition": "gold"}, "edition"),
        ({**on_plan, "max_devices": 0}, "max_devices"),
        ({**on_plan, "max_devices": "5"}, "max_devices"),
        ({**on_plan, "on_plan": "yes"}, "on_plan"),
        ({**on_plan, "on_plan": 1}, "on_plan"),
        ({"name": "No licence"}, "edition"),
        ({**on_plan, "name": ""}, "name"),
    ]
    for payload, field in invalid:
        status, error = create_workspace(client, partner, payload)
        assert status == 422, (payload, error)
        assert field in [problem["field"] for problem in error["error"]["fields"]], error

    status, created = create_workspace(client, partner, on_plan)
    assert status == 201 and created["on_plan"] and created["max_devices"] == 5

    workspace_id = existing["workspace_id"]
    headers = auth_headers(partner, Role.TECHNICIAN)
    status, switched = answer(
        client.http.put(
            f"/workspaces/{workspace_id}/plan",
            headers=headers,
            body=body({"edition": "business-security", "max_devices": 7}),
        )
    )
    assert (status, switched["edition"], switched["max_devices"]) == (200, "business-security", 7)
    status, changed = answer(
        client.http.patch(f"/workspaces/{workspace_id}/licence", headers=headers, body=body({"max_devices": 9}))
    )
    assert (status, changed["edition"], changed["max_devices"]) == (200, "business-security", 9)
    status, licence = answer(client.http.get(f"/workspaces/{workspace_id}/licence", headers=headers))
    assert status == 200
    assert licence["plan"] == "monthly" and licence["status"] == "active" and licence["max_devices"] == 9
    assert licence["valid_through"]

    status, listed = answer(client.http.get("/workspaces", headers=headers))
    assert status == 200 and {w["workspace_id"] for w in listed["items"]} == {workspace_id, created["workspace_id"]}
    status, plan = answer(client.http.get("/plan", headers=auth_headers(partner)))
    assert len(plan["workspaces_on_plan"]) == 2
    assert "workspace_switched_to_plan" in audit_types(partner)
    assert "workspace_licence_changed" in audit_types(partner)


def test_another_partners_workspace_is_not_found(client: Client) -> None:
    owner, intruder = new_partner_id(), new_partner_id()
    _, workspace = create_workspace(client, owner, {"name": "Mine", "on_plan": False})
    assert answer(activate(client, intruder, "k"))[0] == 201
    path = f"/workspaces/{workspace['workspace_id']}"
    headers = auth_headers(intruder)
    assert answer(client.http.get(path, headers=headers))[0] == 404
    assert answer(client.http.get(f"{path}/licence", headers=headers))[0] == 404
    switch = body({"edition": "anti-malware", "max_devices": 1})
    assert answer(client.http.put(f"{path}/plan", headers=headers, body=switch))[0] == 404
    assert answer(client.http.patch(f"{path}/licence", headers=headers, body=body({"max_devices": 2})))[0] == 404
    assert answer(client.http.get("/workspaces/ws_doesnotexist", headers=headers))[0] == 404


def test_answers_chalice_gives_before_a_view_runs_have_the_api_error_shape(client: Client) -> None:
    partner = new_partner_id()
    headers = {**auth_headers(partner), "Content-Type": "text/plain"}
    status, payload = answer(client.http.post("/workspaces", headers=headers, body="name=x"))
    assert status == 415 and payload["error"]["code"] == "unsupported_media_type"
    status, payload = answer(client.http.delete("/workspaces", headers=auth_headers(partner)))
    assert status == 405 and payload["error"]["code"] == "method_not_allowed"


def test_a_workspace_name_with_control_characters_is_refused_naming_the_field(client: Client) -> None:
    partner = new_partner_id()
    payload = {"name": "Acme\u0000Evil", "on_plan": False}
    status, error = answer(client.http.post("/workspaces", headers=auth_headers(partner), body=body(payload)))
    assert status == 422 and error["error"]["fields"][0]["field"] == "name"


def test_a_partner_id_claim_no_partner_can_have_is_refused_not_a_server_error(client: Client) -> None:
    """DynamoDB refuses keys over 2 KB; the claim used to reach it and come back as a 500."""
    headers = auth_headers("p" * 5000)
    assert answer(client.http.get("/plan", headers=headers))[0] == 403
    assert answer(client.http.get("/workspaces", headers=headers))[0] == 403
    status, error = create_workspace(client, "p" * 5000, {"name": "Acme", "on_plan": False})
    assert status == 403 and "custom:partner_id" in error["error"]["message"]
