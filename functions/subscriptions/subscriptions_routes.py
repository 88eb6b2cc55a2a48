"""Partner API: licence subscriptions (seed 002): buy an order, read subscriptions, the changes an order may
make now, preview and apply a change, withdraw a scheduled change."""

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
    required_header,
)
from billing_core.api.openapi import Param, items_of, operation
from billing_core.subscription_schemas import (
    ChangeOptionsView,
    ChangeOrderRequest,
    ChangePreviewView,
    ChangeResultView,
    CreateOrderRequest,
    OrderView,
    SubscriptionView,
)
from billing_core.wiring import services

subscriptions_api = Blueprint(__name__)

ORDER_ID = {
    "order_id": Param(
        "The order's id, as POST /orders answered it (ord_...)",
        {"type": "string", "minLength": 1, "maxLength": MAX_PATH_ID_LENGTH},
    )
}
SUBSCRIPTION_ID = {
    "subscription_id": Param(
        "The subscription's id (sub_...); it never changes, whatever changes are made",
        {"type": "string", "minLength": 1, "maxLength": MAX_PATH_ID_LENGTH},
    )
}
ORDER_KEY = Param(
    "Chosen by the client per order: the same key and body answer the same order (bought once)",
    {"type": "string", "minLength": 1, "maxLength": 255},
    required=True,
)
CHANGE_KEY = Param(
    "Chosen by the client per change: the same key and body answer without changing the order again",
    {"type": "string", "minLength": 1, "maxLength": 255},
    required=True,
)
NO_ORDER = "no such order (another partner's order answers this too)"
REFUSED = "the change is not allowed now: `error.code` and `error.message` name the reason and the subscription"


@subscriptions_api.route("/orders", methods=["POST"], authorizer=partner_authorizer)
@operation(
    "Buy licence subscriptions (with their add-ons) as one order; each first billing period is charged in "
    "advance on the invoice of this month",
    request=CreateOrderRequest,
    responses={201: OrderView},
    headers={"Idempotency-Key": ORDER_KEY},
    errors={
        400: "the Idempotency-Key header is missing",
        409: "the monthly billing plan is not active",
        422: "a field names its problem (unknown SKU, a cycle the SKU is not sold on, an add-on on another cycle "
        "than its base); or the Idempotency-Key was used with another order",
    },
    billing=True,
    tags=["Subscriptions"],
    description=(
        "Buys licence subscriptions (each with its add-ons, billed on their base's cycle) under a commerce "
        "experience, for the partner or one of its customers; the monthly billing plan must be active. Send one "
        "`Idempotency-Key` per order: the same key and body answer the same order; the same key with another "
        "order is 422."
    ),
)
@answers_errors
def buy_order() -> Response:
    request = subscriptions_api.current_request
    identity = partner_identity(request, billing=True)
    key = required_header(request, "Idempotency-Key")
    body = parse_body(request, CreateOrderRequest)
    return json_response(services().subscriptions.buy_order(identity, key, body), status_code=201)


@subscriptions_api.route("/orders/{order_id}", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "One order and its subscriptions",
    responses={200: OrderView},
    path_params=ORDER_ID,
    errors={404: NO_ORDER},
    billing=True,
    tags=["Subscriptions"],
    description=(
        "An order of the caller's partner with its subscriptions; another partner's order answers 404, as an "
        "unknown id does."
    ),
)
@answers_errors
def get_order(order_id: str) -> Response:
    identity = partner_identity(subscriptions_api.current_request, billing=True)
    return json_response(services().subscriptions.get_order(identity, path_id(order_id, "order")))


@subscriptions_api.route("/subscriptions", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "The partner's licence subscriptions, oldest first",
    responses={200: items_of(SubscriptionView)},
    billing=True,
    tags=["Subscriptions"],
    description="Every licence subscription of the caller's partner, add-ons included, oldest first.",
)
@answers_errors
def list_subscriptions() -> Response:
    identity = partner_identity(subscriptions_api.current_request, billing=True)
    return json_response(services().subscriptions.list_subscriptions(identity))


@subscriptions_api.route("/subscriptions/{subscription_id}", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "One subscription: cycle, current term, price and promotion, a pending scheduled change",
    responses={200: SubscriptionView},
    path_params=SUBSCRIPTION_ID,
    errors={404: "no such subscription (another partner's answers this too)"},
    billing=True,
    tags=["Subscriptions"],
    description=(
        "A subscription's cycle, current term, price (list price, promotion, unit price) and any scheduled change"
        " waiting for its next period."
    ),
)
@answers_errors
def get_subscription(subscription_id: str) -> Response:
    identity = partner_identity(subscriptions_api.current_request, billing=True)
    sub_id = path_id(subscription_id, "subscription")
    return json_response(services().subscriptions.get_subscription(identity, sub_id))


@subscriptions_api.route("/orders/{order_id}/changes", methods=["GET"], authorizer=partner_authorizer)
@operation(
    "Every change the order may make now under its experience, and every one it may not, with the reasons",
    responses={200: ChangeOptionsView},
    path_params=ORDER_ID,
    errors={404: NO_ORDER},
    billing=True,
    tags=["Subscriptions"],
    description=(
        "Each change of term or billing frequency the order's experience offers, whether the order may make it "
        "now, and for each one it may not, the reasons (a code and a message naming the subscription)."
    ),
)
@answers_errors
def change_options(order_id: str) -> Response:
    identity = partner_identity(subscriptions_api.current_request, billing=True)
    return json_response(services().subscriptions.change_options(identity, path_id(order_id, "order")))


@subscriptions_api.route("/orders/{order_id}/changes/preview", methods=["POST"], authorizer=partner_authorizer)
@operation(
    "The invoice lines a change would add (the prorated credit and the new charge), changing nothing",
    request=ChangeOrderRequest,
    responses={200: ChangePreviewView},
    path_params=ORDER_ID,
    errors={404: NO_ORDER, 409: REFUSED, 422: "a field names its problem"},
    billing=True,
    tags=["Subscriptions"],
    description=(
        "The invoice lines the change would add if applied now (the credit of the part of a period it cuts short "
        "and the new period's charge, each with the invoice month it goes on); changes nothing."
    ),
)
@answers_errors
def preview_change(order_id: str) -> Response:
    request = subscriptions_api.current_request
    identity = partner_identity(request, billing=True)
    body = parse_body(request, ChangeOrderRequest)
    return json_response(services().subscriptions.preview_change(identity, path_id(order_id, "order"), body))


@subscriptions_api.route("/orders/{order_id}/changes", methods=["POST"], authorizer=partner_authorizer)
@operation(
    "Apply a change to every subscription and add-on of the order; the lines go on the invoice of the month "
    "they take effect in",
    request=ChangeOrderRequest,
    responses={200: ChangeResultView},
    path_params=ORDER_ID,
    headers={"Idempotency-Key": CHANGE_KEY},
    errors={
        400: "the Idempotency-Key header is missing",
        404: NO_ORDER,
        409: REFUSED + "; or a concurrent change",
        422: "a field names its problem; or the Idempotency-Key was used with another change",
    },
    billing=True,
    tags=["Subscriptions"],
    description=(
        "Applies the change to every subscription and add-on of the order: a scheduled change waits for the next "
        "period (withdrawable until then), an immediate one starts today. Send one `Idempotency-Key` per change: "
        "the same key and body answer without changing the order again."
    ),
)
@answers_errors
def apply_change(order_id: str) -> Response:
    request = subscriptions_api.current_request
    identity = partner_identity(request, billing=True)
    key = required_header(request, "Idempotency-Key")
    body = parse_body(request, ChangeOrderRequest)
    return json_response(services().subscriptions.apply_change(identity, path_id(order_id, "order"), key, body))


@subscriptions_api.route("/orders/{order_id}/changes/pending", methods=["DELETE"], authorizer=partner_authorizer)
@operation(
    "Withdraw the order's scheduled change before it takes effect",
    responses={200: OrderView},
    path_params=ORDER_ID,
    errors={404: NO_ORDER, 409: "no scheduled change is waiting, or a concurrent change"},
    billing=True,
    tags=["Subscriptions"],
    description=(
        "Withdraws the order's scheduled change before it takes effect; the subscriptions continue on their "
        "current cycle."
    ),
)
@answers_errors
def withdraw_change(order_id: str) -> Response:
    identity = partner_identity(subscriptions_api.current_request, billing=True)
    return json_response(services().subscriptions.withdraw_change(identity, path_id(order_id, "order")))
