"""Payment providers behind ``billing_core.ports.PaymentProvider``."""

from __future__ import annotations

from billing_core.ports import PaymentProvider
from billing_core.settings import BillingSettings


def build_payment_provider(settings: BillingSettings) -> PaymentProvider:
    if settings.payment_provider == "stripe":
        if settings.stripe_secret_key is None:
            raise ValueError("PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY")
        # Imported only when configured: the stripe SDK is a noticeable part of a cold start.
        from billing_core.adapters.payments.stripe_provider import StripePaymentProvider

        return StripePaymentProvider(
            settings.stripe_secret_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            setup_future_usage=settings.stripe_setup_future_usage,
        )
    from billing_core.adapters.payments.sandbox import SandboxPaymentProvider

    return SandboxPaymentProvider()
