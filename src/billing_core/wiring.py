"""Builds the services once per process (a Lambda cold start) from the settings.

Nothing here is imported when a handler module is: every adapter and service is built, and its module
imported, on first use. So a function pays only for what it uses: the workspaces function never imports
the usage store, Powertools Idempotency (and with it boto3), a payment SDK, or another function's service;
the meter never imports the price book or the API schemas.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from billing_core.settings import BillingSettings

if TYPE_CHECKING:
    from billing_core.adapters.dynamodb.invoices import DynamoInvoiceStore
    from billing_core.adapters.dynamodb.repositories import DynamoBillingStore
    from billing_core.adapters.dynamodb.subscriptions import DynamoSubscriptionStore
    from billing_core.adapters.dynamodb.usage import DynamoUsageStore
    from billing_core.adapters.idempotency import PowertoolsIdempotencyGuard
    from billing_core.adapters.s3_reports import S3UsageReports
    from billing_core.domain.pricing import Prices
    from billing_core.ports import Clock, Mailer, PaymentProvider
    from billing_core.services.activation import ActivationService
    from billing_core.services.cancellation import CancellationService
    from billing_core.services.history import BillingHistoryService
    from billing_core.services.metering import MeteringService
    from billing_core.services.monthly_charge import MonthlyChargeService, MonthlyRunDispatcher
    from billing_core.services.settlement import SettlementService
    from billing_core.services.subscriptions import SubscriptionService
    from billing_core.services.workspaces import WorkspaceService


class Services:
    def __init__(
        self, settings: BillingSettings, *, clock: Clock | None = None, payments: PaymentProvider | None = None
    ) -> None:
        # Building the services binds the table models at once (tests and tools rely on it), which costs
        # the first invocation the two model modules, not the import of a handler.
        from billing_core.adapters.dynamodb.models import bind_billing_table
        from billing_core.adapters.dynamodb.usage import bind_usage_table

        bind_billing_table(settings.billing_table, settings.aws_region)
        bind_usage_table(settings.usage_table, settings.aws_region)
        self.settings = settings
        self._clock = clock
        self._payments = payments

    @functools.cached_property
    def clock(self) -> Clock:
        from billing_core.adapters.clock import OffsetFileClock, SystemClock

        if self._clock is not None:
            return self._clock
        return OffsetFileClock(Path(self.settings.clock_file)) if self.settings.clock_file else SystemClock()

    @functools.cached_property
    def prices(self) -> Prices:
        """The vendor's published price lists (`msp-billing catalog load`), read on first use and refreshed."""
        from billing_core.adapters.dynamodb.catalog import DynamoCatalogStore, PublishedPriceBook

        return PublishedPriceBook(DynamoCatalogStore(self.settings.aws_region))

    @functools.cached_property
    def store(self) -> DynamoBillingStore:
        from billing_core.adapters.dynamodb.repositories import DynamoBillingStore

        return DynamoBillingStore(self.settings.aws_region)

    @functools.cached_property
    def usage(self) -> DynamoUsageStore:
        from billing_core.adapters.dynamodb.usage import DynamoUsageStore

        return DynamoUsageStore(timedelta(days=self.settings.usage_retention_days), self.settings.aws_region)

    @functools.cached_property
    def idempotency(self) -> PowertoolsIdempotencyGuard:
        from billing_core.adapters.idempotency import PowertoolsIdempotencyGuard

        return PowertoolsIdempotencyGuard(self.settings.idempotency_table, self.settings.idempotency_ttl_seconds)

    @functools.cached_property
    def activation(self) -> ActivationService:
        from billing_core.services.activation import ActivationService

        return ActivationService(
            plans=self.store,
            workspaces=self.store,
            payments=self.payments,
            usage=self.usage,
            clock=self.clock,
            prices=self.prices,
            idempotency=self.idempotency,
            invoices=self.invoices,
        )

    @functools.cached_property
    def settlement(self) -> SettlementService:
        from billing_core.services.settlement import SettlementService

        return SettlementService(
            plans=self.store,
            invoices=self.invoices,
            payments=self.payments,
            charge=self.monthly_charge,
            clock=self.clock,
            idempotency=self.idempotency,
        )

    @functools.cached_property
    def workspaces(self) -> WorkspaceService:
        from billing_core.services.workspaces import WorkspaceService

        return WorkspaceService(plans=self.store, workspaces=self.store, clock=self.clock, prices=self.prices)

    @functools.cached_property
    def subscription_store(self) -> DynamoSubscriptionStore:
        from billing_core.adapters.dynamodb.subscriptions import DynamoSubscriptionStore

        return DynamoSubscriptionStore(self.settings.aws_region)

    @functools.cached_property
    def subscriptions(self) -> SubscriptionService:
        from billing_core.services.subscriptions import SubscriptionService

        return SubscriptionService(
            plans=self.store,
            subscriptions=self.subscription_store,
            invoices=self.invoices,
            clock=self.clock,
            prices=self.prices,
        )

    @functools.cached_property
    def metering(self) -> MeteringService:
        from billing_core.adapters.dynamodb.usage import DynamoWorkspaceDirectory
        from billing_core.services.metering import MeteringService

        return MeteringService(self.usage, DynamoWorkspaceDirectory(), self.clock)

    @functools.cached_property
    def payments(self) -> PaymentProvider:
        from billing_core.adapters.payments import build_payment_provider

        return self._payments or build_payment_provider(self.settings, self.clock)

    @functools.cached_property
    def invoices(self) -> DynamoInvoiceStore:
        from billing_core.adapters.dynamodb.invoices import DynamoInvoiceStore

        return DynamoInvoiceStore(self.settings.aws_region)

    @functools.cached_property
    def usage_reports(self) -> S3UsageReports:
        from billing_core.adapters.s3_reports import S3UsageReports

        return S3UsageReports(_required(self.settings.reports_bucket, "REPORTS_BUCKET"))

    @functools.cached_property
    def mailer(self) -> Mailer:
        from billing_core.adapters.ses_mailer import SesMailer

        return SesMailer(self.settings.billing_email_sender)

    @functools.cached_property
    def monthly_charge(self) -> MonthlyChargeService:
        from billing_core.services.monthly_charge import MonthlyChargeService

        return MonthlyChargeService(
            plans=self.store,
            workspaces=self.store,
            invoices=self.invoices,
            usage=self.usage,
            payments=self.payments,
            mailer=self.mailer,
            reports=self.usage_reports,
            clock=self.clock,
            prices=self.prices,
            subscriptions=self.subscription_store,
        )

    @functools.cached_property
    def monthly_run(self) -> MonthlyRunDispatcher:
        from billing_core.adapters.sqs_charge_queue import SqsChargeQueue
        from billing_core.services.monthly_charge import MonthlyRunDispatcher

        queue = SqsChargeQueue(_required(self.settings.charge_queue_url, "CHARGE_QUEUE_URL"))
        return MonthlyRunDispatcher(partners=self.store, queue=queue, clock=self.clock)

    @functools.cached_property
    def cancellation(self) -> CancellationService:
        from billing_core.adapters.plan_end_scheduler import EventBridgePlanEndSchedules
        from billing_core.services.cancellation import CancellationService

        schedules = EventBridgePlanEndSchedules(
            function_arn=_required(self.settings.plan_end_function_arn, "PLAN_END_FUNCTION_ARN"),
            role_arn=_required(self.settings.plan_end_scheduler_role_arn, "PLAN_END_SCHEDULER_ROLE_ARN"),
            dead_letter_arn=_required(self.settings.plan_end_dlq_arn, "PLAN_END_DLQ_ARN"),
            group=self.settings.plan_end_schedule_group,
        )
        return CancellationService(
            plans=self.store,
            workspaces=self.store,
            usage=self.usage,
            schedules=schedules,
            mailer=self.mailer,
            clock=self.clock,
            subscriptions=self.subscription_store,
            prices=self.prices,
        )

    @functools.cached_property
    def history(self) -> BillingHistoryService:
        from billing_core.services.history import BillingHistoryService

        return BillingHistoryService(invoices=self.invoices, reports=self.usage_reports)


def _required(value: str | None, variable: str) -> str:
    if not value:
        raise RuntimeError(f"{variable} is not set; it comes from template.yaml (Globals)")
    return value


@functools.cache
def services() -> Services:
    """The process-wide services, configured from the environment on first use."""
    return Services(BillingSettings.from_environment())
