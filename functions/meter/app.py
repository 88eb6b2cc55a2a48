"""Lambda entry point of the meter function (Handler: app.handler), triggered by the metering queue.

The whole batch is rated in one pass (dedupe, one batched read, one conditional write per first
sighting); the partial batch response (billing_core.sqs_batch) then reports exactly the messages whose
writes failed transiently, so SQS retries only those (ReportBatchItemFailures). Malformed messages are recorded as
rejections and deleted, never retried.
"""

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing_core.domain.errors import TransientFailure
from billing_core.observability import logger
from billing_core.services.metering import InboundMessage
from billing_core.sqs_batch import QueueMessage, partial_batch_response, queue_messages
from billing_core.wiring import services

metrics = Metrics(namespace="MspBilling", service="meter")


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Plain messages, not the Powertools parser: the parser's pydantic models cost ~50 ms of cold start, and
    # each body is validated by the metering schema anyway.
    records = queue_messages(event)
    outcome = services().metering.record_batch([InboundMessage(r.message_id, r.body) for r in records])
    logger.info(
        "metering batch recorded",
        extra={
            "messages": len(records),
            "sightings": outcome.sightings,
            "first_sightings_written": outcome.first_sightings_written,
            "by_billability": outcome.by_billability,
            "rejected": outcome.rejected,
            "failed": sorted(outcome.failed_message_ids),
        },
    )
    metrics.add_metric("Sightings", MetricUnit.Count, outcome.sightings)
    metrics.add_metric("FirstSightingsRecorded", MetricUnit.Count, outcome.first_sightings_written)
    metrics.add_metric("MessagesRejected", MetricUnit.Count, len(outcome.rejected))
    metrics.add_metric("MessagesRetried", MetricUnit.Count, len(outcome.failed_message_ids))

    def fail_if_retried(message: QueueMessage) -> None:
        if message.message_id in outcome.failed_message_ids:
            raise TransientFailure(f"message {message.message_id} will be retried")

    return partial_batch_response(event, fail_if_retried)
