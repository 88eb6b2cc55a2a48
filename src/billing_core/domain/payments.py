"""Provider-neutral payment types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from billing_core.domain.errors import BillingError
from billing_core.domain.money import Money


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REQUIRES_ACTION = "requires_action"  # the customer must authenticate it first (3-D Secure); not paid (yet)


# Provider-neutral decline codes of a payment that waited for the customer's authentication (3-D Secure).
AUTHENTICATION_FAILED = "authentication_failed"  # the customer failed or cancelled the challenge
AUTHENTICATION_ABANDONED = "authentication_abandoned"  # not completed in time: the payment was cancelled


@dataclass(frozen=True)
class SavedPaymentMethod:
    customer_ref: str
    payment_method_ref: str


@dataclass(frozen=True)
class ChargeRequest:
    partner_id: str
    saved: SavedPaymentMethod
    amount: Money
    # Derived from what is being paid (partner + purpose + attempt), never random: a retry after a
    # crash must reach the provider with the same key.
    idempotency_key: str
    description: str
    off_session: bool
    # Ask the provider to keep the method usable for later off-session charges (activation only).
    save_for_future_use: bool = False


@dataclass(frozen=True)
class ChargeOutcome:
    status: ChargeStatus
    provider_payment_id: str | None
    decline_code: str | None = None
    message: str | None = None
    # With ``REQUIRES_ACTION``: what the customer's browser needs to run the authentication (Stripe.js
    # ``handleNextAction``). A secret of that one payment, for the customer only: never stored or logged.
    client_secret: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is ChargeStatus.SUCCEEDED


@dataclass(frozen=True)
class PaymentRecord:
    partner_id: str
    purpose: str  # "activation" (later: "month:2026-11")
    attempt: int
    amount: Money
    provider: str
    provider_payment_id: str
    idempotency_key: str
    created_at: datetime


class PaymentProviderUnavailable(BillingError):
    """The provider could not be reached or answered with a server error: outcome unknown, retry."""

    code = "payment_provider_unavailable"
