"""Configuration: environment variables parsed once into one model. Only the wiring reads it;
the domain never sees ``os.environ``.

Endpoints are not settings here: boto3, botocore (and so PynamoDB and Powertools) honour
``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL`` themselves, which is how the local stack points
everything at DynamoDB Local and the moto server.

This is a plain pydantic model filled from the environment by ``from_environment``, not a
pydantic-settings ``BaseSettings``: that package costs every cold start about 40 ms of imports
(its AWS, Azure, GCP and CLI sources) for what is one dictionary lookup per field here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class BillingSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    billing_table: str = Field(description="Single-table store: plans, workspaces, payments, audit events")
    idempotency_table: str = Field(description="Powertools idempotency records")
    usage_table: str = Field(description="Per device-month usage items")
    # Device-month records are kept (then expire by TTL) long enough for invoices, reports and disputes.
    usage_retention_days: int = Field(default=400, ge=62)
    aws_region: str = "us-east-1"

    reports_bucket: str | None = Field(default=None, description="S3 bucket of the per-device usage reports")
    charge_queue_url: str | None = Field(default=None, description="SQS queue of the monthly run's fan-out")
    billing_email_sender: str = Field(default="billing@msp-billing.example", description="SES-verified sender")

    # The one-time end-of-plan schedules (EventBridge Scheduler): their target, the role the scheduler
    # assumes to invoke it, the DLQ of firings that keep failing, and the schedule group.
    plan_end_function_arn: str | None = Field(default=None, description="The cancellation finaliser function")
    plan_end_scheduler_role_arn: str | None = None
    plan_end_dlq_arn: str | None = None
    plan_end_schedule_group: str = "default"

    # Local stack only: a test clock (see adapters/clock.py). Unset in AWS: the system clock.
    clock_file: str | None = None

    # How long an Idempotency-Key is remembered (Stripe uses 24 hours too).
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    payment_provider: Literal["sandbox", "stripe"] = "sandbox"
    stripe_secret_key: SecretStr | None = None
    # In AWS: the name of the SSM SecureString parameter holding the Stripe secret key (read once per cold
    # start, see adapters/secrets.py); STRIPE_SECRET_KEY, when set, wins (local runs).
    stripe_secret_key_parameter: str | None = None
    # Only for tests against localstripe; unset in production.
    stripe_api_base: str | None = None
    # Real Stripe keeps the card for off-session use with setup_future_usage; localstripe does not
    # emulate it, so tests switch it off and rely on attaching the method to the customer.
    stripe_setup_future_usage: bool = True

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> BillingSettings:
        """The settings named by environment variables (``BILLING_TABLE`` for ``billing_table``,
        matched case-insensitively); a missing required one or a malformed value raises a
        ``ValidationError`` naming the field."""
        by_lower_name = {name.lower(): value for name, value in (os.environ if environ is None else environ).items()}
        return cls.model_validate({field: by_lower_name[field] for field in cls.model_fields if field in by_lower_name})
