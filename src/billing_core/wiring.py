"""Builds the services once per process (a Lambda cold start) from the settings."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta

from billing_core.adapters.clock import SystemClock
from billing_core.adapters.dynamodb.models import bind_billing_table
from billing_core.adapters.dynamodb.repositories import DynamoBillingStore
from billing_core.adapters.dynamodb.usage import DynamoUsageStore, DynamoWorkspaceDirectory, bind_usage_table
from billing_core.adapters.idempotency import PowertoolsIdempotencyGuard
from billing_core.adapters.payments import build_payment_provider
from billing_core.domain.pricing import price_list
from billing_core.ports import Clock, PaymentProvider
from billing_core.services.activation import ActivationService
from billing_core.services.metering import MeteringService
from billing_core.services.workspaces import WorkspaceService
from billing_core.settings import BillingSettings


@dataclass(frozen=True)
class Services:
    activation: ActivationService
    workspaces: WorkspaceService
    metering: MeteringService
    idempotency: PowertoolsIdempotencyGuard


def build_services(
    settings: BillingSettings, *, clock: Clock | None = None, payments: PaymentProvider | None = None
) -> Services:
    bind_billing_table(settings.billing_table, settings.aws_region)
    bind_usage_table(settings.usage_table, settings.aws_region)
    store = DynamoBillingStore(settings.aws_region)
    usage = DynamoUsageStore(retention=timedelta(days=settings.usage_retention_days))
    prices = price_list(settings.price_list_version)
    clock = clock or SystemClock()
    idempotency = PowertoolsIdempotencyGuard(settings.idempotency_table, settings.idempotency_ttl_seconds)
    return Services(
        activation=ActivationService(
            plans=store,
            workspaces=store,
            payments=payments or build_payment_provider(settings),
            usage=usage,
            clock=clock,
            prices=prices,
            idempotency=idempotency,
        ),
        workspaces=WorkspaceService(plans=store, workspaces=store, clock=clock, prices=prices),
        metering=MeteringService(usage, DynamoWorkspaceDirectory(), clock),
        idempotency=idempotency,
    )


@functools.cache
def services() -> Services:
    """The process-wide services, configured from the environment on first use."""
    return build_services(BillingSettings())  # type: ignore[call-arg]  # fields come from the environment
