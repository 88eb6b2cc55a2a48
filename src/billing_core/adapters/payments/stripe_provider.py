"""The Stripe payment provider (stripe-python's ``StripeClient``).

Cards are saved by creating a customer and attaching the PaymentMethod to it; the activation charge
is confirmed on-session with ``setup_future_usage=off_session`` (switchable: localstripe does not
emulate it), monthly charges off-session. Every PaymentIntent carries our idempotency key, but our
own exactly-once guarantee does not rest on Stripe's: see ``services.activation``.
"""

from __future__ import annotations

from typing import Any

import stripe

from billing_core.domain.errors import PaymentDeclined
from billing_core.domain.payments import (
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    SavedPaymentMethod,
)

# Errors after which the outcome is unknown and the same idempotency key must be retried.
_TRANSIENT_ERRORS = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


class StripePaymentProvider:
    name = "stripe"

    def __init__(self, api_key: str, *, api_base: str | None = None, setup_future_usage: bool = True) -> None:
        base_addresses: dict[str, str] = {"api": api_base} if api_base else {}
        self._client = stripe.StripeClient(api_key, base_addresses=base_addresses, max_network_retries=2)  # type: ignore[arg-type]
        self._setup_future_usage = setup_future_usage

    def save_payment_method(self, *, partner_id: str, payment_method: str) -> SavedPaymentMethod:
        try:
            customer = self._client.customers.create(
                params={"metadata": {"partner_id": partner_id}},
                options={"idempotency_key": f"customer:{partner_id}:{payment_method}"},
            )
            attached = self._client.payment_methods.attach(payment_method, params={"customer": customer.id})
        except stripe.CardError as error:
            raise PaymentDeclined(error.user_message or "card declined", decline_code=_decline_code(error)) from error
        except stripe.InvalidRequestError as error:
            raise PaymentDeclined(
                error.user_message or "the payment method was refused", decline_code="payment_method_invalid"
            ) from error
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        return SavedPaymentMethod(customer_ref=customer.id, payment_method_ref=attached.id)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        params: dict[str, Any] = {
            "amount": request.amount.amount_minor,
            "currency": request.amount.currency.lower(),
            "customer": request.saved.customer_ref,
            "payment_method": request.saved.payment_method_ref,
            "payment_method_types": ["card"],
            "confirm": True,
            "off_session": request.off_session,
            "description": request.description,
            "metadata": {"partner_id": request.partner_id, "idempotency_key": request.idempotency_key},
        }
        if request.save_for_future_use and self._setup_future_usage:
            params["setup_future_usage"] = "off_session"
        try:
            intent = self._client.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.CardError as error:
            payment_intent = getattr(error.error, "payment_intent", None) if error.error else None
            intent_id = payment_intent.get("id") if isinstance(payment_intent, dict) else None
            return ChargeOutcome(ChargeStatus.DECLINED, intent_id, _decline_code(error), error.user_message)
        except stripe.InvalidRequestError as error:
            return ChargeOutcome(ChargeStatus.DECLINED, None, "payment_method_invalid", error.user_message)
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        if intent.status == "succeeded":
            return ChargeOutcome(ChargeStatus.SUCCEEDED, intent.id)
        if intent.status == "requires_action":
            return ChargeOutcome(
                ChargeStatus.REQUIRES_ACTION, intent.id, "authentication_required", "The card requires authentication."
            )
        last_error = intent.last_payment_error
        return ChargeOutcome(
            ChargeStatus.DECLINED,
            intent.id,
            (last_error.decline_code or last_error.code) if last_error else intent.status,
            last_error.message if last_error else f"payment intent is {intent.status}",
        )


def _decline_code(error: stripe.StripeError) -> str:
    details = error.error
    if details is not None and getattr(details, "decline_code", None):
        return str(details.decline_code)
    return str(error.code or "card_declined")
