"""Secrets that must not sit in a function's environment: read from an SSM SecureString parameter, once
per process (a Lambda cold start), and kept in memory only.

In AWS a function gets the parameter's *name* in its environment (``STRIPE_SECRET_KEY_PARAMETER``, from
template.yaml) and ``ssm:GetParameter`` on exactly that parameter; the value is decrypted by SSM with the
account's default key (``aws/ssm``), which needs no KMS permission of its own. Locally (tests against
localstripe) the plain value still works: ``STRIPE_SECRET_KEY`` wins when it is set.

The client is created on first use and the endpoint is left to botocore, which honours
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SSM`` (the local stack's moto server).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol, cast

from billing_core.settings import BillingSettings


class ParameterReader(Protocol):
    """The one call of botocore's SSM client used here."""

    def get_parameter(self, *, Name: str, WithDecryption: bool) -> Mapping[str, Any]: ...  # noqa: N803 - boto3's names


class SecretUnavailable(RuntimeError):
    """The secret could not be read (missing parameter, no permission). The message names the parameter, never
    a value."""


_cache: dict[str, str] = {}
_lock = threading.Lock()


def secure_parameter(name: str, *, client: ParameterReader | None = None) -> str:
    """The decrypted value of the SSM parameter ``name``, fetched on the first call in this process and
    remembered for the next ones."""
    with _lock:
        if name not in _cache:
            _cache[name] = _fetch(name, client or _ssm_client())
        return _cache[name]


def forget_secrets() -> None:
    """Drop the remembered values (tests; a rotated key is otherwise picked up by the next cold start)."""
    with _lock:
        _cache.clear()


def stripe_secret_key(settings: BillingSettings, *, client: ParameterReader | None = None) -> str:
    """The Stripe secret key: ``STRIPE_SECRET_KEY`` when set (local runs), else the SecureString named by
    ``STRIPE_SECRET_KEY_PARAMETER`` (AWS)."""
    if settings.stripe_secret_key is not None:
        return settings.stripe_secret_key.get_secret_value()
    if settings.stripe_secret_key_parameter:
        return secure_parameter(settings.stripe_secret_key_parameter, client=client)
    raise ValueError(
        "PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY_PARAMETER (the SSM SecureString holding the key, in AWS) "
        "or STRIPE_SECRET_KEY (the key itself, for local runs)"
    )


def _fetch(name: str, client: ParameterReader) -> str:
    from botocore.exceptions import ClientError

    try:
        answer = client.get_parameter(Name=name, WithDecryption=True)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise SecretUnavailable(f"cannot read the SSM parameter {name} ({code})") from None
    value = str(answer.get("Parameter", {}).get("Value") or "")
    if not value:
        raise SecretUnavailable(f"the SSM parameter {name} is empty")
    return value


def _ssm_client() -> ParameterReader:
    import boto3  # here: only a function that needs a secret pays for the import

    return cast(ParameterReader, boto3.client("ssm"))
