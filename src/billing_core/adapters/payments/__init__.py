"""Payment providers behind ``billing_core.ports.PaymentProvider``."""

from __future__ import annotations

from billing_core.ports import Clock, PaymentProvider
from billing_core.settings import BillingSettings


def build_payment_provider(settings: BillingSettings, clock: Clock | None = None) -> PaymentProvider:
    if settings.payment_provider == "stripe":
        from billing_core.adapters.secrets import stripe_secret_key

        # The key itself locally; in AWS its SSM SecureString, read once per cold start (never an env var).
        api_key = stripe_secret_key(settings)
        # Imported only when configured: the stripe SDK is a noticeable part of a cold start.
        from billing_core.adapters.payments.stripe_provider import StripePaymentProvider

        return StripePaymentProvider(
            api_key,
            api_base=settings.stripe_api_base,
            setup_future_usage=settings.stripe_setup_future_usage,
        )
    from billing_core.adapters.payments.sandbox import SandboxPaymentProvider

    return SandboxPaymentProvider(clock)
