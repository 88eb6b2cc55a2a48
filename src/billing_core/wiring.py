"""Builds the services once per process (a Lambda cold start) from the settings.

Each service is built on first use, so a function pays at cold start only for the adapters it uses:
the workspaces and meter functions never import Powertools Idempotency (and with it boto3) or a
payment SDK.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import TYPE_CHECKING

from billing_core.adapters.clock import SystemClock
from billing_core.adapters.dynamodb.models import bind_billing_table
from billing_core.adapters.dynamodb.repositories import DynamoBillingStore
from billing_core.adapters.dynamodb.usage import DynamoUsageStore, DynamoWorkspaceDirectory, bind_usage_table
from billing_core.domain.pricing import PriceList, price_list
from billing_core.ports import Clock, PaymentProvider
from billing_core.services.activation import ActivationService
from billing_core.services.metering import MeteringService
from billing_core.services.workspaces import WorkspaceService
from billing_core.settings import BillingSettings

if TYPE_CHECKING:
    from billing_core.adapters.idempotency import PowertoolsIdempotencyGuard


class Services:
    def __init__(
        self, settings: BillingSettings, *, clock: Clock | None = None, payments: PaymentProvider | None = None
    ) -> None:
        bind_billing_table(settings.billing_table, settings.aws_region)
        bind_usage_table(settings.usage_table, settings.aws_region)
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.prices: PriceList = price_list(settings.price_list_version)
        self.store = DynamoBillingStore(settings.aws_region)
        self.usage = DynamoUsageStore(retention=timedelta(days=settings.usage_retention_days))
        self._payments = payments

    @functools.cached_property
    def idempotency(self) -> PowertoolsIdempotencyGuard:
        from billing_core.adapters.idempotency import PowertoolsIdempotencyGuard

        return PowertoolsIdempotencyGuard(self.settings.idempotency_table, self.settings.idempotency_ttl_seconds)

    @functools.cached_property
    def activation(self) -> ActivationService:
        from billing_core.adapters.payments import build_payment_provider

        return ActivationService(
            plans=self.store,
            workspaces=self.store,
            payments=self._payments or build_payment_provider(self.settings),
            usage=self.usage,
            clock=self.clock,
            prices=self.prices,
            idempotency=self.idempotency,
        )

    @functools.cached_property
    def workspaces(self) -> WorkspaceService:
        return WorkspaceService(plans=self.store, workspaces=self.store, clock=self.clock, prices=self.prices)

    @functools.cached_property
    def metering(self) -> MeteringService:
        return MeteringService(self.usage, DynamoWorkspaceDirectory(), self.clock)


@functools.cache
def services() -> Services:
    """The process-wide services, configured from the environment on first use."""
    return Services(BillingSettings())  # type: ignore[call-arg]  # fields come from the environment
