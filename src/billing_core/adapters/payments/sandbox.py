"""The sandbox payment provider: the local default, deterministic and stateless.

Payment methods are named like Stripe's test methods and behave the same way every time. Ids are
derived from their inputs (customer from partner, payment from idempotency key), so replaying a charge
with the same idempotency key yields the same payment: exactly the contract a real provider offers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from billing_core.domain.errors import PaymentDeclined
from billing_core.domain.payments import ChargeOutcome, ChargeRequest, ChargeStatus, SavedPaymentMethod


@dataclass(frozen=True)
class SandboxCard:
    description: str
    # Refused when attached (saved), like Stripe's 4000000000000002.
    attach_decline: str | None = None
    # Attaches fine but every charge fails this way, like Stripe's 4000000000000341.
    charge_decline: str | None = None
    requires_action: bool = False
    # Declines only the first attempt of each monthly charge (keys end in ":attempt-1"): funds arrive
    # before the retry on the 3rd. Deterministic, because the attempt number is part of the key.
    first_attempt_decline: str | None = None


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
    "pm_card_insufficientFundsFirstAttempt": SandboxCard(
        "saves; each month's first charge is declined (insufficient_funds), the retry succeeds",
        first_attempt_decline="insufficient_funds",
    ),
    "pm_card_authenticationRequired": SandboxCard(
        "saves, then every charge requires authentication", requires_action=True
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


class SandboxPaymentProvider:
    name = "sandbox"

    def save_payment_method(self, *, partner_id: str, payment_method: str) -> SavedPaymentMethod:
        card = SANDBOX_CARDS.get(payment_method)
        if card is None:
            known = ", ".join(SANDBOX_CARDS)
            raise PaymentDeclined(
                f"unknown sandbox payment method {payment_method!r}; use one of: {known}",
                decline_code="payment_method_invalid",
            )
        if card.attach_decline:
            raise PaymentDeclined(DECLINE_MESSAGES[card.attach_decline], decline_code=card.attach_decline)
        return SavedPaymentMethod(customer_ref=f"cus_sbx_{_digest(partner_id, 16)}", payment_method_ref=payment_method)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        card = SANDBOX_CARDS.get(request.saved.payment_method_ref)
        payment_id = f"pi_sbx_{_digest(request.idempotency_key, 24)}"
        if card is None:
            return ChargeOutcome(ChargeStatus.DECLINED, payment_id, "payment_method_invalid", "Unknown payment method.")
        if card.requires_action:
            return ChargeOutcome(
                ChargeStatus.REQUIRES_ACTION, payment_id, "authentication_required", "The card requires authentication."
            )
        decline = card.charge_decline
        if card.first_attempt_decline and request.idempotency_key.endswith(":attempt-1"):
            decline = card.first_attempt_decline
        if decline:
            return ChargeOutcome(ChargeStatus.DECLINED, payment_id, decline, DECLINE_MESSAGES[decline])
        return ChargeOutcome(ChargeStatus.SUCCEEDED, payment_id)
