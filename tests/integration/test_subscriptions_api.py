"""Licence subscriptions through the partner API (seed 002), against DynamoDB Local over the wire: buying an
order exactly once, reading it, the changes allowed now with the reasons for the others, previews that
change nothing, changes applied once whatever is retried, a scheduled change withdrawn, and the store's
round trip with a bounded charge history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from chalice.test import Client

from billing_core.adapters.dynamodb.models import SubscriptionItem, partner_pk
from billing_core.adapters.dynamodb.subscriptions import DynamoSubscriptionStore
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.subscriptions import (
    Order,
    OrderLine,
    Owner,
    change_term_now,
    new_subscriptions,
    schedule_frequency_change,
    settle_charge_history,
)
from billing_core.settings import BillingSettings
from billing_core.wiring import services
from infra.stack import LocalStack
from tests.helpers import PRICE_LIST_2026_01, auth_headers, body, new_partner_id

pytestmark = pytest.mark.integration

VISA = {"payment_method": "pm_card_visa", "currency": "USD"}
BACKUP_P3Y_ANNUAL = {
    "items": [
        {
            "sku": "backup-standard",
            "quantity": 10,
            "term": "P3Y",
            "billing_frequency": "annual",
            "add_ons": [{"sku": "backup-extra-storage", "quantity": 2}],
        }
    ]
}
EDR_P1Y_MONTHLY = {"items": [{"sku": "edr-business", "quantity": 3, "term": "P1Y", "billing_frequency": "monthly"}]}


def answer(response: Any) -> tuple[int, Any]:
    return response.status_code, json.loads(response.body or b"{}")


def active_partner(client: Client) -> str:
    partner = new_partner_id()
    headers = auth_headers(partner, **{"Idempotency-Key": "activate"})
    status, activated = answer(client.http.post("/plan/activation", headers=headers, body=body(VISA)))
    assert status == 201, activated
    return partner


def buy(client: Client, partner: str, order: dict[str, Any], key: str = "order-1") -> tuple[int, Any]:
    headers = auth_headers(partner, **{"Idempotency-Key": key})
    return answer(client.http.post("/orders", headers=headers, body=body(order)))


def change(
    client: Client, partner: str, order_id: str, payload: dict[str, Any], key: str = "change-1"
) -> tuple[int, Any]:
    headers = auth_headers(partner, **{"Idempotency-Key": key})
    return answer(client.http.post(f"/orders/{order_id}/changes", headers=headers, body=body(payload)))


def test_an_order_is_bought_once_per_key_with_its_add_on_on_the_base_cycle(client: Client) -> None:
    partner = active_partner(client)
    status, order = buy(client, partner, BACKUP_P3Y_ANNUAL)
    assert status == 201, order
    base, add_on = order["subscriptions"]
    assert (base["sku"], base["term"], base["billing_frequency"], base["quantity"]) == (
        "backup-standard",
        "P3Y",
        "annual",
        10,
    )
    assert add_on["add_on_of"] == base["subscription_id"] and add_on["billing_frequency"] == "annual"
    assert base["price"]["unit_price"]["amount_minor"] == 10800 and order["experience"] == "new"

    assert buy(client, partner, BACKUP_P3Y_ANNUAL) == (201, order)  # the same key: the same order, bought once
    status, reused = buy(client, partner, EDR_P1Y_MONTHLY)
    assert status == 422 and reused["error"]["fields"][0]["field"] == "Idempotency-Key"
    status, listed = answer(client.http.get("/subscriptions", headers=auth_headers(partner)))
    assert status == 200 and [s["subscription_id"] for s in listed["items"]] == [
        base["subscription_id"],
        add_on["subscription_id"],
    ]
    status, one = answer(client.http.get(f"/subscriptions/{base['subscription_id']}", headers=auth_headers(partner)))
    assert (status, one) == (200, base)


def test_bad_orders_are_refused_naming_the_field_and_nothing_is_bought(client: Client) -> None:
    partner = active_partner(client)
    unknown = {"items": [{"sku": "edr-ultimate", "quantity": 1, "term": "P1Y", "billing_frequency": "monthly"}]}
    status, refused = buy(client, partner, unknown, key="bad-1")
    assert status == 422 and refused["error"]["fields"][0]["field"] == "items.0.sku", refused
    other_cycle = json.loads(json.dumps(BACKUP_P3Y_ANNUAL))
    other_cycle["items"][0]["add_ons"][0]["billing_frequency"] = "monthly"
    status, refused = buy(client, partner, other_cycle, key="bad-2")
    assert status == 422 and refused["error"]["fields"][0]["field"] == "items.0.add_ons.0.billing_frequency"
    status, refused = buy(
        client,
        partner,
        {"items": [{"sku": "backup-standard", "quantity": 0, "term": "P1Y", "billing_frequency": "monthly"}]},
        key="bad-3",
    )
    assert status == 422 and refused["error"]["fields"][0]["field"] == "items.0.quantity"
    assert answer(client.http.get("/subscriptions", headers=auth_headers(partner))) == (200, {"items": []})
    status, refused = buy(client, new_partner_id(), EDR_P1Y_MONTHLY)  # no active plan
    assert status == 409 and refused["error"]["code"] == "plan_not_active"


def test_the_changes_allowed_now_and_the_reasons_for_the_others(client: Client) -> None:
    partner = active_partner(client)
    _, order = buy(client, partner, BACKUP_P3Y_ANNUAL)
    status, options = answer(client.http.get(f"/orders/{order['order_id']}/changes", headers=auth_headers(partner)))
    assert status == 200, options
    allowed = [(o["mode"], o["term"], o["billing_frequency"]) for o in options["options"] if o["allowed"]]
    assert allowed == [("scheduled", "P3Y", "monthly")]  # P3Y annual: a scheduled switch to monthly only
    refused = {
        (o["mode"], o["term"], o["billing_frequency"]): o["refusals"][0]["code"]
        for o in options["options"]
        if not o["allowed"]
    }
    assert refused[("immediate", "P1Y", "monthly")] == "shorter_term"
    assert refused[("scheduled", "P3Y", "triennial")] == "upfront_only_at_purchase"


def test_a_scheduled_change_is_previewed_applied_once_and_withdrawn(client: Client) -> None:
    partner = active_partner(client)
    _, order = buy(client, partner, BACKUP_P3Y_ANNUAL)
    order_id = order["order_id"]
    payload = {"mode": "scheduled", "billing_frequency": "monthly"}
    status, preview = answer(
        client.http.post(f"/orders/{order_id}/changes/preview", headers=auth_headers(partner), body=body(payload))
    )
    assert status == 200 and preview["lines"] == [] and preview["total"]["amount_minor"] == 0  # nothing now
    assert answer(client.http.get(f"/orders/{order_id}", headers=auth_headers(partner))) == (200, order)  # unchanged

    status, changed = change(client, partner, order_id, payload)
    assert status == 200, changed
    pending = changed["order"]["subscriptions"][0]["pending_change"]
    first_period_end = date.fromisoformat(order["subscriptions"][0]["next_period_starts_on"])
    assert pending["billing_frequency"] == "monthly" and date.fromisoformat(pending["effective_on"]) == first_period_end
    assert pending["price"]["promotion"] is None and pending["price"]["unit_price"]["amount_minor"] == 900
    assert change(client, partner, order_id, payload) == (200, {**changed, "lines": [], "total": changed["total"]})
    status, reused = change(client, partner, order_id, {"mode": "scheduled", "billing_frequency": "annual"})
    assert status == 422 and reused["error"]["fields"][0]["field"] == "Idempotency-Key"

    status, withdrawn = answer(client.http.delete(f"/orders/{order_id}/changes/pending", headers=auth_headers(partner)))
    assert status == 200 and all(s["pending_change"] is None for s in withdrawn["subscriptions"])
    status, again = answer(client.http.delete(f"/orders/{order_id}/changes/pending", headers=auth_headers(partner)))
    assert status == 409 and again["error"]["code"] == "no_pending_change"


def test_an_immediate_term_change_credits_the_unused_days_once(client: Client) -> None:
    partner = active_partner(client)
    _, order = buy(client, partner, EDR_P1Y_MONTHLY)
    order_id = order["order_id"]
    payload = {"mode": "immediate", "term": "P3Y", "billing_frequency": "annual"}
    status, preview = answer(
        client.http.post(f"/orders/{order_id}/changes/preview", headers=auth_headers(partner), body=body(payload))
    )
    assert status == 200, preview
    kinds = [line["kind"] for line in preview["lines"]]
    assert kinds == ["change_credit", "licence_period"]  # bought today: the whole first month comes back
    credit, charge = preview["lines"]
    assert (
        credit["amount"]["amount_minor"] == -3 * 500  # no promotion runs for P1Y in December 2026
        and credit["credit_for_period_start"] == order["subscriptions"][0]["term_started_on"]
    )
    assert charge["amount"]["amount_minor"] == 3 * (5400 - 540)  # P3Y annual with the eligible 3-year promotion

    status, changed = change(client, partner, order_id, payload)
    assert status == 200 and changed["lines"] == preview["lines"]
    sub = changed["order"]["subscriptions"][0]
    assert (sub["term"], sub["billing_frequency"], sub["subscription_id"]) == (
        "P3Y",
        "annual",
        order["subscriptions"][0]["subscription_id"],
    )
    status, replay = change(client, partner, order_id, payload)
    assert status == 200 and replay["lines"] == [] and replay["order"] == changed["order"]
    item = SubscriptionItem.get(partner_pk(partner), f"SUBSCRIPTION#{sub['subscription_id']}", consistent_read=True)
    assert [c["kind"] for c in item.charges] == ["licence_period", "change_credit", "licence_period"]  # once

    status, refused = change(
        client, partner, order_id, {"mode": "immediate", "term": "P1Y", "billing_frequency": "monthly"}, key="shorter"
    )
    assert status == 409 and refused["error"]["code"] == "shorter_term"
    status, legacy_mode = change(
        client, partner, order_id, {"mode": "legacy_frequency", "billing_frequency": "monthly"}, key="legacy"
    )
    assert status == 409 and legacy_mode["error"]["code"] == "not_in_experience"
    after = SubscriptionItem.get(partner_pk(partner), f"SUBSCRIPTION#{sub['subscription_id']}", consistent_read=True)
    assert after.version == item.version  # a refusal changes nothing


def test_a_legacy_order_changes_its_frequency_now_resetting_the_term(client: Client) -> None:
    partner = active_partner(client)
    _, order = buy(client, partner, {**EDR_P1Y_MONTHLY, "experience": "legacy"})
    assert order["experience"] == "legacy"
    status, changed = change(
        client, partner, order["order_id"], {"mode": "legacy_frequency", "billing_frequency": "annual"}
    )
    assert status == 200, changed
    sub = changed["order"]["subscriptions"][0]
    assert (sub["term"], sub["billing_frequency"], sub["price"]["promotion"]) == ("P1Y", "annual", None)
    assert [line["kind"] for line in changed["lines"]] == ["change_credit", "licence_period"]
    assert changed["lines"][1]["amount"]["amount_minor"] == 3 * 6000  # the list price, no promotion


def test_the_store_round_trips_a_subscription_and_moves_settled_charges_to_the_history(
    local_stack: LocalStack, settings: BillingSettings
) -> None:
    services()  # binds the billing table
    store = DynamoSubscriptionStore(settings.aws_region)
    partner = new_partner_id()
    bought = datetime(2026, 1, 31, 9, tzinfo=UTC)
    subs = new_subscriptions(
        order_id="ord_rt",
        owner=Owner(partner, "dental-meyer"),
        lines=[OrderLine("items.0", "edr-business", 2, Cycle(Term.P1M, BillingFrequency.MONTHLY))],
        subscription_ids=["sub_rt"],
        prices=PRICE_LIST_2026_01,
        currency="EUR",
        now=bought,
    )
    (sub,) = change_term_now(
        subs,
        Cycle(Term.P3Y, BillingFrequency.MONTHLY),
        PRICE_LIST_2026_01,
        datetime(2026, 2, 10, tzinfo=UTC),
        plan_active=True,
    )
    (sub,) = schedule_frequency_change(
        [sub], BillingFrequency.ANNUAL, PRICE_LIST_2026_01, datetime(2026, 2, 11, tzinfo=UTC), plan_active=True
    )
    order = Order("ord_rt", Owner(partner, "dental-meyer"), ("sub_rt",), bought)
    audit = AuditEvent(partner, "test", bought, "test")
    order, (stored,) = store.save_order(order, [sub], audit=audit)
    loaded_order, (loaded,) = store.load_order(partner, "ord_rt") or (None, [])
    assert loaded == stored and loaded_order == order  # every field, the pending change and credits included

    today = date(2027, 5, 20)
    long_run = loaded.materialise(today, PRICE_LIST_2026_01)
    kept, settled = settle_charge_history(long_run, BillingMonth(2027, 4), today)
    assert len(kept.charges) <= 2 and len(settled) == len(long_run.charges) - len(kept.charges)
    _, (trimmed,) = store.save_order(
        order, [replace(kept, version=loaded.version)], audit=audit, settled=[("sub_rt", settled)]
    )
    assert store.charge_history(partner, "sub_rt") + list(trimmed.charges) == list(long_run.charges)
    assert trimmed.materialise(date(2028, 3, 10), PRICE_LIST_2026_01).charges[-1].seq == long_run.last_charge_seq + 1
