"""SQS partial batch responses (ReportBatchItemFailures) for the queue-triggered functions: the meter and the
charge worker.

This does what Powertools' ``BatchProcessor`` with ``process_partial_response`` does for an SQS event, and
answers the same: each message is handled in turn; a message whose handler raises is logged and reported in
``batchItemFailures``, so SQS delivers only those again; when every message of the batch failed the
invocation fails with Powertools' ``BatchProcessingError`` (the whole batch comes back, and the failure shows
in the function's error metrics); so does an event without records (``UnexpectedBatchTypeError``).

Why not Powertools' batch utility itself: it cannot be imported narrowly. Its package imports asyncio, the
async processor and the Kinesis, DynamoDB-stream and Kafka record classes, and its ``SQSRecord`` the whole
event data classes package; together about 65 ms of every cold start of these functions, for a loop over
``event["Records"]``. Its exceptions are imported only when an invocation fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from billing_core.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.exceptions import ExceptionInfo


@dataclass(frozen=True)
class QueueMessage:
    """One SQS message of the event: its id (what a partial failure names) and its body."""

    message_id: str
    body: str


def queue_messages(event: Mapping[str, Any]) -> list[QueueMessage]:
    """The messages of an SQS event, in delivery order."""
    records = event.get("Records")
    if not isinstance(records, list):
        raise _not_a_batch()
    return [QueueMessage(message_id=record["messageId"], body=record["body"]) for record in records]


def partial_batch_response(
    event: Mapping[str, Any], handle: Callable[[QueueMessage], None]
) -> dict[str, list[dict[str, str]]]:
    """Handle each message of the batch; the answer names the messages whose handling raised."""
    messages = queue_messages(event)
    if not messages:
        raise _not_a_batch()  # as Powertools: SQS never delivers an empty batch
    failed: list[QueueMessage] = []
    errors: list[ExceptionInfo] = []
    for message in messages:
        try:
            handle(message)
        except Exception:
            logger.warning(
                "message processing failed; it will be delivered again",
                extra={"message_id": message.message_id},
                exc_info=True,
            )
            failed.append(message)
            errors.append(sys.exc_info())
    if len(failed) == len(messages):
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

        raise BatchProcessingError(
            msg=f"All records failed processing. {len(errors)} individual errors logged separately below.",
            child_exceptions=errors,
        )
    return {"batchItemFailures": [{"itemIdentifier": message.message_id} for message in failed]}


def _not_a_batch() -> Exception:
    from aws_lambda_powertools.utilities.batch.exceptions import UnexpectedBatchTypeError

    return UnexpectedBatchTypeError(
        "Unexpected batch event type. Possible values are: SQS, KinesisDataStreams, DynamoDBStreams, Kafka"
    )
