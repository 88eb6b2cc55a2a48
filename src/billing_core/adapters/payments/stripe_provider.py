"""The Stripe payment provider (stripe-python's ``StripeClient``, v1 API).

Cards are saved by creating a customer and attaching the PaymentMethod to it; the activation charge
is confirmed on-session with ``setup_future_usage=off_session`` (switchable: localstripe does not
emulate it), monthly charges off-session. Every PaymentIntent carries our idempotency key, but our
own exactly-once guarantee does not rest on Stripe's: see ``services.activation``.

The charge description travels in the PaymentIntent's metadata: localstripe refuses the top-level
``description`` parameter, and metadata is shown in the Stripe Dashboard as well.

3-D Secure (SCA): an activation PaymentIntent the card's issuer wants authenticated comes back
``requires_action``; its ``client_secret`` goes to the customer's browser (Stripe.js ``handleNextAction``),
and ``payment_status`` later retrieves the intent to see whether it was paid. With
``setup_future_usage=off_session`` that one authentication also sets the card up for the monthly
off-session charges, so no separate SetupIntent is needed. ``cancel_payment`` cancels an intent nobody
authenticated in time; Stripe refuses to cancel a succeeded one, which is then answered as paid.
"""

from __future__ import annotations

from typing import Any

import stripe

from billing_core.domain.errors import Conflict, PaymentDeclined
from billing_core.domain.payments import (
    AUTHENTICATION_FAILED,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    PaymentProviderUnavailable,
    SavedPaymentMethod,
)

# Errors after which the outcome is unknown and the same idempotency key must be retried.
# (stripe-python raises APIError for 5xx answers and APIConnectionError for network failures.)
_TRANSIENT_ERRORS = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)

# Stripe's error code when an off-session charge needs the customer to authenticate (3-D Secure).
_AUTHENTICATION_REQUIRED = "authentication_required"
# Stripe's error code on an intent whose authentication the customer failed or cancelled.
_AUTHENTICATION_FAILURE = "payment_intent_authentication_failure"


class StripePaymentProvider:
    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        setup_future_usage: bool = True,
        max_network_retries: int = 2,
    ) -> None:
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
        )
        self._setup_future_usage = setup_future_usage

    def create_customer(self, *, partner_id: str) -> str:
        try:
            customer = self._client.v1.customers.create(
                params={"metadata": {"partner_id": partner_id}},
                options={"idempotency_key": f"customer:{partner_id}"},
            )
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        return str(customer.id)

    def save_payment_method(
        self, *, partner_id: str, payment_method: str, customer_ref: str | None = None
    ) -> SavedPaymentMethod:
        customer_ref = customer_ref or self.create_customer(partner_id=partner_id)
        try:
            attached = self._client.v1.payment_methods.attach(payment_method, params={"customer": customer_ref})
        except stripe.CardError as error:
            raise PaymentDeclined(error.user_message or "card declined", decline_code=_decline_code(error)) from error
        except stripe.InvalidRequestError as error:
            raise PaymentDeclined(
                error.user_message or "the payment method was refused", decline_code="payment_method_invalid"
            ) from error
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        return SavedPaymentMethod(customer_ref=customer_ref, payment_method_ref=attached.id)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        params: dict[str, Any] = {
            "amount": request.amount.amount_minor,
            "currency": request.amount.currency.lower(),
            "customer": request.saved.customer_ref,
            "payment_method": request.saved.payment_method_ref,
            "payment_method_types": ["card"],
            "confirm": True,
            "off_session": request.off_session,
            "metadata": {
                "partner_id": request.partner_id,
                "idempotency_key": request.idempotency_key,
                "description": request.description,
            },
        }
        if request.save_for_future_use and self._setup_future_usage:
            params["setup_future_usage"] = "off_session"
        try:
            intent = self._client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.IdempotencyError as error:
            # The same attempt key came back with other parameters (e.g. another card after an interrupted
            # attempt): never charge under a new key while the first attempt's outcome is unknown.
            raise Conflict(
                "the payment provider already has this payment attempt with other details; "
                "retry with the original payment method or contact support"
            ) from error
        except stripe.CardError as error:
            decline_code = _decline_code(error)
            status = ChargeStatus.REQUIRES_ACTION if decline_code == _AUTHENTICATION_REQUIRED else ChargeStatus.DECLINED
            return ChargeOutcome(status, self._intent_id_of(error), decline_code, error.user_message)
        except stripe.InvalidRequestError as error:
            return ChargeOutcome(ChargeStatus.DECLINED, None, "payment_method_invalid", error.user_message)
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        # "processing" (paid or not is not known yet) raises PaymentProviderUnavailable: the attempt stays open and
        # is looked up later, never declined (a decline's next attempt would charge under a new key).
        return _outcome_of(intent)

    def find_payment(self, request: ChargeRequest) -> ChargeOutcome | None:
        """The customer's PaymentIntent whose metadata carries the request's reference. The list is read from
        Stripe's primary store (Search, by contrast, lags up to a minute behind a new payment); a customer has
        a few intents a year, so the pages are short. A succeeded one wins if a reference ever had two."""
        found: list[stripe.PaymentIntent] = []
        try:
            intents = self._client.v1.payment_intents.list(
                params={"customer": request.saved.customer_ref, "limit": 100}
            )
            for intent in intents.auto_paging_iter():
                if (
                    "idempotency_key" in intent.metadata
                    and intent.metadata["idempotency_key"] == request.idempotency_key
                ):
                    found.append(intent)
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        if not found:
            return None
        paid = [intent for intent in found if intent.status == "succeeded"]
        return _outcome_of(paid[0] if paid else found[0])

    def payment_status(self, payment_id: str) -> ChargeOutcome:
        try:
            intent = self._client.v1.payment_intents.retrieve(payment_id)
        except stripe.InvalidRequestError as error:
            return ChargeOutcome(ChargeStatus.DECLINED, payment_id, "payment_not_found", error.user_message)
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        return _outcome_of(intent)

    def cancel_payment(self, payment_id: str) -> ChargeOutcome:
        try:
            intent = self._client.v1.payment_intents.cancel(
                payment_id, options={"idempotency_key": f"cancel:{payment_id}"}
            )
        except stripe.InvalidRequestError:
            # Not cancellable (any more): succeeded, processing or already cancelled. Where it stands decides.
            return self.payment_status(payment_id)
        except _TRANSIENT_ERRORS as error:
            raise PaymentProviderUnavailable(f"Stripe unavailable: {error.user_message or error}") from error
        return _outcome_of(intent)

    def _intent_id_of(self, error: stripe.CardError) -> str | None:
        """The PaymentIntent a declined confirmation created, if it can be found.

        Stripe puts the PaymentIntent object on the error; localstripe only names the failed charge,
        whose ``payment_intent`` is looked up (best effort: the decline stands either way)."""
        details = error.error
        if details is None:
            return None
        payment_intent = details.payment_intent
        if payment_intent is not None:
            return str(payment_intent.id)
        if not details.charge:
            return None
        try:
            charge = self._client.v1.charges.retrieve(details.charge)
        except stripe.StripeError:
            return None
        intent = charge.payment_intent
        if intent is None:
            return None
        return intent if isinstance(intent, str) else intent.id


def _outcome_of(intent: stripe.PaymentIntent) -> ChargeOutcome:
    """What a PaymentIntent's state means for us."""
    if intent.status == "succeeded":
        return ChargeOutcome(ChargeStatus.SUCCEEDED, intent.id)
    if intent.status == "requires_action":
        return ChargeOutcome(
            ChargeStatus.REQUIRES_ACTION,
            intent.id,
            _AUTHENTICATION_REQUIRED,
            "The card requires authentication.",
            client_secret=intent.client_secret,
        )
    if intent.status == "processing":
        # Paid or not is not known yet (rare for cards): ask again later, never decide now.
        raise PaymentProviderUnavailable(f"the payment {intent.id} is still processing at Stripe")
    if intent.status == "canceled":
        return ChargeOutcome(ChargeStatus.DECLINED, intent.id, "payment_canceled", "The payment was cancelled.")
    last_error = intent.last_payment_error
    if last_error is None:
        return ChargeOutcome(ChargeStatus.DECLINED, intent.id, intent.status, f"payment intent is {intent.status}")
    # StripeObject attributes the answer omits raise AttributeError (localstripe sends no decline_code).
    code = getattr(last_error, "decline_code", None) or getattr(last_error, "code", None) or intent.status
    if code == _AUTHENTICATION_FAILURE:
        code = AUTHENTICATION_FAILED
    message = getattr(last_error, "message", None) or f"payment intent is {intent.status}"
    return ChargeOutcome(ChargeStatus.DECLINED, intent.id, str(code), str(message))


def _decline_code(error: stripe.StripeError) -> str:
    """The issuer's ``decline_code`` when given (real Stripe), else the error ``code`` (localstripe)."""
    details = error.error
    if details is not None and details.decline_code:
        return str(details.decline_code)
    return str(error.code or "card_declined")
