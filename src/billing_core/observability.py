"""Powertools Logger shared by every function (JSON logs, correlation ids), and the business metrics the
alarms of template.yaml watch.

Business metrics are counts in the ``MspBilling`` namespace with one dimension, ``service`` (the area
that emits them: activation, payments, monthly-run, charges). A handler counts what happened during one
invocation and publishes when the invocation ends (``@publishes_metrics``, or ``business_metrics.publish()``):
one CloudWatch embedded-metric-format (EMF) document per service, printed to stdout, which Lambda sends to
CloudWatch Logs, where the metrics are extracted. Outside Lambda (the local stack, the CLI, tests) nothing
is printed: there is no CloudWatch to read it, and it would bury the CLI's answers; the counts are logged
at DEBUG instead.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from billing_core.domain.invoicing import Invoice

logger = Logger(service="msp-billing")

METRICS_NAMESPACE = "MspBilling"
METRICS_DIMENSION = "service"


class MetricService(StrEnum):
    """The value of the ``service`` dimension: the area a metric comes from."""

    ACTIVATION = "activation"
    PAYMENTS = "payments"
    MONTHLY_RUN = "monthly-run"
    CHARGES = "charges"


class BusinessMetric(StrEnum):
    ACTIVATIONS = "Activations"  # 201: the plan was activated (activation fee paid)
    ACTIVATIONS_DECLINED = "ActivationsDeclined"  # 402: the activation payment was declined
    PAYMENTS_SUCCEEDED = "PaymentsSucceeded"  # a payment succeeded (activation fee or a monthly charge)
    PAYMENTS_FAILED = "PaymentsFailed"  # a payment was declined or needs the customer (activation or monthly)
    MONTHLY_RUN_DISPATCHED = "MonthlyRunDispatched"  # one successful dispatcher invocation
    PARTNERS_QUEUED = "PartnersQueued"  # charge messages the dispatcher queued
    CHARGES_PAID = "ChargesPaid"  # the charge worker left a partner's month paid
    CHARGES_FAILED = "ChargesFailed"  # ... payment_failed (a retry is scheduled) or past_due
    CHARGES_NOTHING_DUE = "ChargesNothingDue"  # ... with nothing to pay
    CHARGES_NOT_BILLABLE = "ChargesNotBillable"  # ... not billable (activation month, plan ended, ...)


METRIC_SERVICE: Mapping[BusinessMetric, MetricService] = {
    BusinessMetric.ACTIVATIONS: MetricService.ACTIVATION,
    BusinessMetric.ACTIVATIONS_DECLINED: MetricService.ACTIVATION,
    BusinessMetric.PAYMENTS_SUCCEEDED: MetricService.PAYMENTS,
    BusinessMetric.PAYMENTS_FAILED: MetricService.PAYMENTS,
    BusinessMetric.MONTHLY_RUN_DISPATCHED: MetricService.MONTHLY_RUN,
    BusinessMetric.PARTNERS_QUEUED: MetricService.MONTHLY_RUN,
    BusinessMetric.CHARGES_PAID: MetricService.CHARGES,
    BusinessMetric.CHARGES_FAILED: MetricService.CHARGES,
    BusinessMetric.CHARGES_NOTHING_DUE: MetricService.CHARGES,
    BusinessMetric.CHARGES_NOT_BILLABLE: MetricService.CHARGES,
}

# The activation route's answers, as metrics (POST /plan/activation; see api.app.counts_outcomes). A replayed
# answer (the same Idempotency-Key and body sent again) counts again: rare, and never a new payment. A 202
# (the payment awaits 3-D Secure) counts nothing: the repeated request that settles it answers 201 or 402.
ACTIVATION_OUTCOMES: Mapping[int, tuple[BusinessMetric, ...]] = {
    201: (BusinessMetric.ACTIVATIONS, BusinessMetric.PAYMENTS_SUCCEEDED),
    402: (BusinessMetric.ACTIVATIONS_DECLINED, BusinessMetric.PAYMENTS_FAILED),
}

# What the charge worker's invoice says, as metrics.
CHARGE_OUTCOMES: Mapping[str, BusinessMetric] = {
    "paid": BusinessMetric.CHARGES_PAID,
    "payment_failed": BusinessMetric.CHARGES_FAILED,
    "past_due": BusinessMetric.CHARGES_FAILED,
    "nothing_due": BusinessMetric.CHARGES_NOTHING_DUE,
}
# The invoice's audit events of a payment outcome (domain.invoicing), as metrics.
PAYMENT_EVENTS: Mapping[str, BusinessMetric] = {
    "invoice_paid": BusinessMetric.PAYMENTS_SUCCEEDED,
    "payment_declined": BusinessMetric.PAYMENTS_FAILED,
}


def running_in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def _metrics_disabled() -> bool:
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    return is_metrics_disabled()  # POWERTOOLS_METRICS_DISABLED, as for Powertools' own Metrics


class BusinessMetrics:
    """Counts of the current invocation, published when it ends (thread-safe: the local stack runs several
    handlers in one process)."""

    def __init__(self, namespace: str = METRICS_NAMESPACE) -> None:
        self.namespace = namespace
        self._counts: dict[BusinessMetric, float] = {}
        self._lock = threading.Lock()

    def count(self, metric: BusinessMetric, value: float = 1) -> None:
        with self._lock:
            self._counts[metric] = self._counts.get(metric, 0) + value

    def pending(self) -> dict[BusinessMetric, float]:
        with self._lock:
            return dict(self._counts)

    def documents(self) -> list[dict[str, Any]]:
        """The EMF documents of the pending counts, one per service (without publishing or clearing them)."""
        from aws_lambda_powertools.metrics import MetricUnit
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

        by_service: dict[MetricService, dict[BusinessMetric, float]] = {}
        for metric, value in self.pending().items():
            by_service.setdefault(METRIC_SERVICE[metric], {})[metric] = value
        documents = []
        for service, counts in sorted(by_service.items()):
            provider = AmazonCloudWatchEMFProvider(namespace=self.namespace, service=service.value)
            for metric, value in sorted(counts.items()):
                provider.add_metric(name=metric.value, unit=MetricUnit.Count, value=value)
            documents.append(dict(provider.serialize_metric_set()))
        return documents

    def publish(self, emit: Callable[[str], None] = print) -> None:
        """Publish and clear the pending counts: EMF to stdout in Lambda, a DEBUG log line elsewhere."""
        if not self.pending():
            return
        try:
            if running_in_lambda() and not _metrics_disabled():
                for document in self.documents():
                    emit(json.dumps(document, separators=(",", ":")))
            else:
                logger.debug("business metrics (published in Lambda only)", extra={"metrics": self.pending()})
        finally:
            with self._lock:
                self._counts.clear()


business_metrics = BusinessMetrics()

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def publishes_metrics(handler: HandlerT) -> HandlerT:
    """Publish the business metrics when the handler returns or raises."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        finally:
            business_metrics.publish()

    return wrapper  # type: ignore[return-value]


def count_charge(invoice: Invoice | None, since: datetime, metrics: BusinessMetrics = business_metrics) -> None:
    """The charge worker's outcome for one partner-month, and the payments it made (the invoice's payment
    events since ``since``: a re-run that changes nothing counts no payment)."""
    if invoice is None:
        metrics.count(BusinessMetric.CHARGES_NOT_BILLABLE)
        return
    outcome = CHARGE_OUTCOMES.get(invoice.status.value)
    if outcome is not None:
        metrics.count(outcome)
    for event in invoice.events:
        payment = PAYMENT_EVENTS.get(event.event_type)
        if payment is not None and event.occurred_at >= since:
            metrics.count(payment)
