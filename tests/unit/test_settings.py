"""The settings model reads the environment once, by field name, case-insensitively."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from billing_core.settings import BillingSettings

REQUIRED = {"BILLING_TABLE": "billing", "IDEMPOTENCY_TABLE": "idempotency", "USAGE_TABLE": "usage"}


def test_fields_come_from_the_environment_by_name_in_any_case() -> None:
    settings = BillingSettings.from_environment(
        REQUIRED
        | {
            "usage_retention_days": "90",
            "Payment_Provider": "stripe",
            "STRIPE_SECRET_KEY": "sk_test_123",
            "STRIPE_SETUP_FUTURE_USAGE": "false",
            "PATH": "/usr/bin",  # unrelated variables are ignored
        }
    )
    assert settings.billing_table == "billing"
    assert settings.usage_retention_days == 90
    assert settings.payment_provider == "stripe"
    assert settings.stripe_secret_key is not None and settings.stripe_secret_key.get_secret_value() == "sk_test_123"
    assert settings.stripe_setup_future_usage is False
    assert settings.idempotency_ttl_seconds == 24 * 3600  # default kept


def test_a_missing_required_variable_is_named() -> None:
    with pytest.raises(ValidationError, match="usage_table"):
        BillingSettings.from_environment({"BILLING_TABLE": "b", "IDEMPOTENCY_TABLE": "i"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("USAGE_RETENTION_DAYS", "30"), ("PAYMENT_PROVIDER", "paypal"), ("IDEMPOTENCY_TTL_SECONDS", "soon")],
)
def test_a_malformed_value_is_refused_naming_the_field(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name.lower()):
        BillingSettings.from_environment(REQUIRED | {name: value})


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in REQUIRED.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLOCK_FILE", "/tmp/clock.json")
    assert BillingSettings.from_environment().clock_file == "/tmp/clock.json"
