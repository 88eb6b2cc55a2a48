"""The Stripe key comes from an SSM SecureString, fetched once per process; locally the plain value still works.
botocore's Stubber stands in for SSM: no network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from billing_core.adapters.payments import build_payment_provider
from billing_core.adapters.payments.stripe_provider import StripePaymentProvider
from billing_core.adapters.secrets import (
    ParameterReader,
    SecretUnavailable,
    forget_secrets,
    secure_parameter,
    stripe_secret_key,
)
from billing_core.settings import BillingSettings

REQUIRED = {"BILLING_TABLE": "billing", "IDEMPOTENCY_TABLE": "idempotency", "USAGE_TABLE": "usage"}
PARAMETER = "/msp-billing/stripe-secret-key"
KEY = "sk_test_from_ssm"


@pytest.fixture(autouse=True)
def _no_remembered_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def ssm() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("ssm", region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _answer(value: str) -> dict[str, Any]:
    return {"Parameter": {"Name": PARAMETER, "Type": "SecureString", "Value": value, "Version": 1}}


def test_the_parameter_is_decrypted_and_fetched_once_per_process(ssm: tuple[ParameterReader, Stubber]) -> None:
    client, stubber = ssm
    stubber.add_response("get_parameter", _answer(KEY), {"Name": PARAMETER, "WithDecryption": True})
    assert secure_parameter(PARAMETER, client=client) == KEY
    # A second read (another adapter, a warm invocation) asks SSM nothing: the Stubber has no second answer.
    assert secure_parameter(PARAMETER, client=client) == KEY


def test_a_missing_parameter_names_the_parameter_and_no_value(ssm: tuple[ParameterReader, Stubber]) -> None:
    client, stubber = ssm
    stubber.add_client_error("get_parameter", service_error_code="ParameterNotFound", http_status_code=400)
    with pytest.raises(SecretUnavailable, match=f"{PARAMETER} \\(ParameterNotFound\\)"):
        secure_parameter(PARAMETER, client=client)


def test_an_empty_parameter_is_refused(ssm: tuple[ParameterReader, Stubber]) -> None:
    client, stubber = ssm
    stubber.add_response("get_parameter", _answer(""), {"Name": PARAMETER, "WithDecryption": True})
    with pytest.raises(SecretUnavailable, match="is empty"):
        secure_parameter(PARAMETER, client=client)


def test_in_aws_the_stripe_key_comes_from_its_parameter(ssm: tuple[ParameterReader, Stubber]) -> None:
    client, stubber = ssm
    stubber.add_response("get_parameter", _answer(KEY), {"Name": PARAMETER, "WithDecryption": True})
    settings = BillingSettings.from_environment(
        REQUIRED | {"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY_PARAMETER": PARAMETER}
    )
    assert stripe_secret_key(settings, client=client) == KEY


def test_locally_the_plain_key_wins_and_ssm_is_not_asked(ssm: tuple[ParameterReader, Stubber]) -> None:
    client, _ = ssm  # no answer queued: a call would fail
    settings = BillingSettings.from_environment(
        REQUIRED
        | {"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_local", "STRIPE_SECRET_KEY_PARAMETER": PARAMETER}
    )
    assert stripe_secret_key(settings, client=client) == "sk_local"


def test_stripe_without_a_key_or_a_parameter_says_what_to_set() -> None:
    settings = BillingSettings.from_environment(REQUIRED | {"PAYMENT_PROVIDER": "stripe"})
    with pytest.raises(ValueError, match="STRIPE_SECRET_KEY_PARAMETER"):
        build_payment_provider(settings)


def test_the_stripe_provider_is_built_with_the_key_from_ssm(
    ssm: tuple[ParameterReader, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, stubber = ssm
    stubber.add_response("get_parameter", _answer(KEY), {"Name": PARAMETER, "WithDecryption": True})
    monkeypatch.setattr("billing_core.adapters.secrets._ssm_client", lambda: client)
    settings = BillingSettings.from_environment(
        REQUIRED | {"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY_PARAMETER": PARAMETER}
    )
    provider = build_payment_provider(settings)
    assert isinstance(provider, StripePaymentProvider)
    assert provider._client._requestor.api_key == KEY
