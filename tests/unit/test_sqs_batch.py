"""The SQS partial batch response answers as Powertools' BatchProcessor does, which it replaces in the meter
and the charge worker (to keep asyncio and the stream record classes out of their cold starts)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError, UnexpectedBatchTypeError

from billing_core.sqs_batch import QueueMessage, partial_batch_response


def sqs_event(*message_ids: str) -> dict[str, Any]:
    return {
        "Records": [
            {"messageId": message_id, "body": f"body of {message_id}", "eventSource": "aws:sqs"}
            for message_id in message_ids
        ]
    }


def powertools_answer(event: dict[str, Any], failing: set[str]) -> dict[str, Any]:
    def handle(record: Any) -> None:
        if record.message_id in failing:
            raise RuntimeError(record.message_id)

    return dict(process_partial_response(event=event, record_handler=handle, processor=BatchProcessor(EventType.SQS)))


def our_answer(event: dict[str, Any], failing: set[str]) -> dict[str, Any]:
    def handle(message: QueueMessage) -> None:
        assert message.body == f"body of {message.message_id}"
        if message.message_id in failing:
            raise RuntimeError(message.message_id)

    return partial_batch_response(event, handle)


@pytest.mark.parametrize(
    ("message_ids", "failing"),
    [
        (("a", "b", "c"), set()),
        (("a", "b", "c"), {"b"}),
        (("a", "b", "c"), {"c", "a"}),
    ],
)
def test_the_answer_names_the_failed_messages_as_powertools_does(
    message_ids: tuple[str, ...], failing: set[str]
) -> None:
    event = sqs_event(*message_ids)
    assert our_answer(event, failing) == powertools_answer(event, failing)


def test_a_batch_whose_every_message_failed_fails_the_invocation_as_powertools_does() -> None:
    event = sqs_event("a", "b")
    with pytest.raises(BatchProcessingError) as theirs:
        powertools_answer(event, {"a", "b"})
    with pytest.raises(BatchProcessingError) as ours:
        our_answer(event, {"a", "b"})
    assert ours.value.msg == theirs.value.msg
    assert [str(error) for _, error, _ in ours.value.child_exceptions] == ["a", "b"]


@pytest.mark.parametrize("event", [{"Records": []}, {"detail": {}}, {"Records": "a"}])
def test_an_empty_batch_or_an_event_that_is_not_a_batch_is_refused_as_powertools_does(event: dict[str, Any]) -> None:
    with pytest.raises(UnexpectedBatchTypeError) as theirs:
        powertools_answer(event, set())
    with pytest.raises(UnexpectedBatchTypeError) as ours:
        partial_batch_response(event, lambda message: None)
    assert str(ours.value) == str(theirs.value)
