"""The sandbox payment provider: the local default, deterministic and stateless.

Payment methods are named like Stripe's test methods and behave the same way every time. Ids are
derived from their inputs (customer from partner, payment from idempotency key), so replaying a charge
with the same idempotency key yields the same payment: exactly the contract a real provider offers.

3-D Secure: a card with an ``authentication`` behaviour asks for authentication on the activation
(on-session) payment, like Stripe's 4000 0025 0000 3155, and answers ``REQUIRES_ACTION`` with a client
secret. The sandbox has no browser and keeps no state, so the card also says how its customer answers the
challenge, and the payment's id carries it (``..._3ds_completes``): ``completes`` (the customer authenticates
at once: looking the payment up finds it succeeded), ``fails`` (the customer fails the challenge) or
``never`` (the customer never answers: it stays ``REQUIRES_ACTION`` until cancelled).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Literal, get_args

from billing_core.adapters.clock import SystemClock
from billing_core.domain.errors import PaymentDeclined
from billing_core.domain.payments import (
    AUTHENTICATION_FAILED,
    ChargeOutcome,
    ChargeRequest,
    ChargeStatus,
    SavedPaymentMethod,
)
from billing_core.ports import Clock

# How the sandbox's customer answers a 3-D Secure challenge (see the module docstring).
Authentication = Literal["completes", "fails", "never"]
AUTHENTICATION_MARK = "_3ds_"


@dataclass(frozen=True)
class SandboxCard:
    description: str
    # Refused when attached (saved), like Stripe's 4000000000000002.
    attach_decline: str | None = None
    # Attaches fine but every charge fails this way, like Stripe's 4000000000000341.
    charge_decline: str | None = None
    # Every charge, off-session ones too, asks for authentication, like Stripe's 4000002760003184.
    requires_action: bool = False
    # The activation (on-session) payment asks for authentication, and this is how the customer answers it;
    # later off-session charges need none (the authenticated activation set the card up for them).
    authentication: Authentication | None = None
    # Declines only the first attempt of each monthly charge (keys end in ":attempt-1"): funds arrive
    # before the retry on the 3rd. Deterministic, because the attempt number is part of the key.
    first_attempt_decline: str | None = None
    # Pays the activation (on-session), then declines every off-session (monthly) charge this way.
    off_session_decline: str | None = None
    # Declines every off-session charge made before this day (``pm_card_declinedUntil_YYYY-MM-DD``).
    declined_until: date | None = None


SANDBOX_CARDS: dict[str, SandboxCard] = {
    "pm_card_visa": SandboxCard("succeeds"),
    "pm_card_mastercard": SandboxCard("succeeds"),
    "pm_card_chargeDeclined": SandboxCard("declined when saved: card_declined", attach_decline="card_declined"),
    "pm_card_chargeDeclinedInsufficientFunds": SandboxCard(
        "declined when saved: insufficient_funds", attach_decline="insufficient_funds"
    ),
    "pm_card_chargeDeclinedExpiredCard": SandboxCard(
        "declined when saved: expired_card", attach_decline="expired_card"
    ),
    "pm_card_chargeCustomerFail": SandboxCard(
        "saves, then every charge is declined: card_declined", charge_decline="card_declined"
    ),
    "pm_card_offSessionDeclined": SandboxCard(
        "saves and pays the activation; every monthly (off-session) charge is declined: card_declined",
        off_session_decline="card_declined",
    ),
    "pm_card_insufficientFundsFirstAttempt": SandboxCard(
        "saves; each month's first charge is declined (insufficient_funds), the retry succeeds",
        first_attempt_decline="insufficient_funds",
    ),
    "pm_card_authenticationRequired": SandboxCard(
        "saves, then every charge requires authentication, which the customer never completes",
        requires_action=True,
        authentication="never",
    ),
    "pm_card_threeDSecure2Required": SandboxCard(
        "3-D Secure on the activation payment, which the customer completes; later charges need none",
        authentication="completes",
    ),
    "pm_card_threeDSecure2AuthenticationFails": SandboxCard(
        "3-D Secure on the activation payment, which the customer fails", authentication="fails"
    ),
}

DECLINE_MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "payment_method_invalid": "Unknown payment method.",
}


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# Pays the activation; every monthly charge made before the day in its name is declined (insufficient_funds).
DECLINED_UNTIL_PREFIX = "pm_card_declinedUntil_"


def sandbox_card(payment_method: str) -> SandboxCard | None:
    """The sandbox card a payment method names (a fixed one, or ``pm_card_declinedUntil_YYYY-MM-DD``)."""
    if payment_method.startswith(DECLINED_UNTIL_PREFIX):
        try:
            until = date.fromisoformat(payment_method.removeprefix(DECLINED_UNTIL_PREFIX))
        except ValueError:
            return None
        return SandboxCard(f"monthly charges declined until {until.isoformat()}", declined_until=until)
    return SANDBOX_CARDS.get(payment_method)


class SandboxPaymentProvider:
    name = "sandbox"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()  # only cards that decline until a day read it

    def create_customer(self, *, partner_id: str) -> str:
        return f"cus_sbx_{_digest(partner_id, 16)}"

    def save_payment_method(
        self, *, partner_id: str, payment_method: str, customer_ref: str | None = None
    ) -> SavedPaymentMethod:
        card = sandbox_card(payment_method)
        if card is None:
            known = ", ".join([*SANDBOX_CARDS, f"{DECLINED_UNTIL_PREFIX}YYYY-MM-DD"])
            raise PaymentDeclined(
                f"unknown sandbox payment method {payment_method!r}; use one of: {known}",
                decline_code="payment_method_invalid",
            )
        if card.attach_decline:
            raise PaymentDeclined(DECLINE_MESSAGES[card.attach_decline], decline_code=card.attach_decline)
        customer_ref = customer_ref or self.create_customer(partner_id=partner_id)
        return SavedPaymentMethod(customer_ref=customer_ref, payment_method_ref=payment_method)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        card = sandbox_card(request.saved.payment_method_ref)
        payment_id = f"pi_sbx_{_digest(request.idempotency_key, 24)}"
        if card is None:
            return ChargeOutcome(ChargeStatus.DECLINED, payment_id, "payment_method_invalid", "Unknown payment method.")
        if card.authentication is not None and (card.requires_action or not request.off_session):
            return _awaiting_authentication(f"{payment_id}{AUTHENTICATION_MARK}{card.authentication}")
        decline = card.charge_decline
        if card.first_attempt_decline and request.idempotency_key.endswith(":attempt-1"):
            decline = card.first_attempt_decline
        if request.off_session and card.off_session_decline:
            decline = card.off_session_decline
        if request.off_session and card.declined_until and self._clock.now().date() < card.declined_until:
            decline = "insufficient_funds"
        if decline:
            return ChargeOutcome(ChargeStatus.DECLINED, payment_id, decline, DECLINE_MESSAGES[decline])
        return ChargeOutcome(ChargeStatus.SUCCEEDED, payment_id)

    def find_payment(self, request: ChargeRequest) -> ChargeOutcome | None:
        """The sandbox keeps no state and moves no money: a payment's id and outcome follow from its reference
        and card, so looking it up answers what charging it answers."""
        return self.charge(request)

    def payment_status(self, payment_id: str) -> ChargeOutcome:
        """Where a payment that asked for authentication stands: its id says how the customer answers."""
        authentication = _authentication_of(payment_id)
        if authentication is None:
            return ChargeOutcome(
                ChargeStatus.DECLINED,
                payment_id,
                "payment_not_found",
                "No sandbox payment with this id asked for authentication.",
            )
        if authentication == "completes":
            return ChargeOutcome(ChargeStatus.SUCCEEDED, payment_id)
        if authentication == "fails":
            return ChargeOutcome(
                ChargeStatus.DECLINED,
                payment_id,
                AUTHENTICATION_FAILED,
                "The customer did not authenticate the payment (3-D Secure failed).",
            )
        return _awaiting_authentication(payment_id)

    def cancel_payment(self, payment_id: str) -> ChargeOutcome:
        """A payment still waiting is cancelled; one the customer completed (at once, in the sandbox) stays paid."""
        current = self.payment_status(payment_id)
        if current.status is not ChargeStatus.REQUIRES_ACTION:
            return current
        return ChargeOutcome(ChargeStatus.DECLINED, payment_id, "payment_canceled", "The payment was cancelled.")


def _awaiting_authentication(payment_id: str) -> ChargeOutcome:
    return ChargeOutcome(
        ChargeStatus.REQUIRES_ACTION,
        payment_id,
        "authentication_required",
        "The card requires authentication.",
        client_secret=f"{payment_id}_secret_{_digest('client-secret:' + payment_id, 16)}",
    )


def _authentication_of(payment_id: str) -> Authentication | None:
    """How the customer answers the challenge of a sandbox payment that asked for authentication (None: the id
    is not one of those)."""
    _, mark, answer = payment_id.rpartition(AUTHENTICATION_MARK)
    if not mark:
        return None
    for known in get_args(Authentication):
        if answer == known:
            return known  # type: ignore[no-any-return]
    return None
