"""The Stripe key read from an SSM SecureString over the wire (the local stack's moto server, which
``AWS_ENDPOINT_URL`` points botocore at), as a function does in AWS, once per process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from billing_core.adapters.payments import build_payment_provider
from billing_core.adapters.payments.stripe_provider import StripePaymentProvider
from billing_core.adapters.secrets import SecretUnavailable, forget_secrets, secure_parameter
from billing_core.settings import BillingSettings
from infra.stack import LocalStack
from infra.template import load_template

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_remembered_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def test_the_stripe_key_is_read_from_its_secure_string_once(local_stack: LocalStack, settings: BillingSettings) -> None:
    name = f"/msp-billing-test/{uuid.uuid4().hex}/stripe-secret-key"
    ssm = boto3.client("ssm", endpoint_url=local_stack.moto_url, region_name=local_stack.config.region)
    ssm.put_parameter(Name=name, Value="sk_test_from_moto", Type="SecureString")

    configured = settings.model_copy(
        update={"payment_provider": "stripe", "stripe_secret_key": None, "stripe_secret_key_parameter": name}
    )
    provider = build_payment_provider(configured)
    assert isinstance(provider, StripePaymentProvider)
    assert provider._client._requestor.api_key == "sk_test_from_moto"

    # Rotated in SSM: this process keeps the value it read at its cold start.
    ssm.put_parameter(Name=name, Value="sk_test_rotated", Type="SecureString", Overwrite=True)
    assert secure_parameter(name) == "sk_test_from_moto"


def test_a_parameter_that_does_not_exist_is_named(local_stack: LocalStack) -> None:
    with pytest.raises(SecretUnavailable, match="/msp-billing-test/missing"):
        secure_parameter("/msp-billing-test/missing")


def test_the_template_default_is_the_parameter_name_the_functions_get(local_stack: LocalStack) -> None:
    default = load_template()["Parameters"]["StripeSecretKeyParameter"]["Default"]
    environment = local_stack.environment()
    assert environment["STRIPE_SECRET_KEY_PARAMETER"] == default
    assert "STRIPE_SECRET_KEY" not in environment
