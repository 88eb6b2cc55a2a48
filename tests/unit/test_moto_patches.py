"""The local stack's patches of moto's SQS emulator: the same answers, without scanning the whole queue for every
message sent or received."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import Queue, SQSBackend, sqs_backends

from infra.moto_patches import _ORIGINAL_ATTRIBUTES, _QueueAttributes, apply_sqs_patches, remove_sqs_patches


@pytest.fixture
def patched() -> Iterator[None]:
    """The patch applied for the test, and whatever was in place before restored after it (a local stack
    started earlier in this process has applied it already)."""
    before = SQSBackend.is_message_valid_based_on_retention_period, Queue.attributes
    apply_sqs_patches()
    yield
    SQSBackend.is_message_valid_based_on_retention_period, Queue.attributes = before  # type: ignore[method-assign]


@pytest.fixture
def unpatched() -> Iterator[None]:
    before = SQSBackend.is_message_valid_based_on_retention_period, Queue.attributes
    remove_sqs_patches()
    yield
    SQSBackend.is_message_valid_based_on_retention_period, Queue.attributes = before  # type: ignore[method-assign]


def original_attributes(queue: Queue) -> dict[str, Any]:
    return _ORIGINAL_ATTRIBUTES.fget(queue)  # type: ignore[attr-defined,no-any-return]


COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)


def send_and_drain_counting_scans(messages: int) -> tuple[int, int, int]:
    """(messages received, scans of the whole queue while sending them, ... while receiving them): each
    approximate message count moto computes is one scan."""
    scans = 0

    def counting(name: str) -> property:
        original = getattr(Queue, name)

        def count(queue: Queue) -> int:
            nonlocal scans
            scans += 1
            return original.fget(queue)  # type: ignore[no-any-return]

        return property(count)

    with mock_aws(), contextlib.ExitStack() as patches:
        for name in COUNTS:
            patches.enter_context(mock.patch.object(Queue, name, counting(name)))
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="patch-test")["QueueUrl"]
        for start in range(0, messages, 10):
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": str(n)} for n in range(start, start + 10)]
            )
        sending, scans = scans, 0
        received = 0
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            received += len(batch)
            sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch]
            )
        return received, sending, scans


def test_unpatched_moto_scans_the_queue_for_every_message_sent_and_received(unpatched: None) -> None:
    received, sending, receiving = send_and_drain_counting_scans(50)
    # What the patches are for (this fails once moto fixes it upstream): 3 scans per sent message, 6 per received.
    assert received == 50 and sending >= 3 * 50 and receiving >= 2 * 3 * 50


def test_the_patches_send_and_receive_every_message_without_scanning_the_queue(patched: None) -> None:
    assert send_and_drain_counting_scans(50) == (50, 0, 0)


def queue_configurations() -> list[dict[str, str]]:
    redrive = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:dlq", "maxReceiveCount": "5"})
    return [
        {},
        {"DelaySeconds": "3", "MessageRetentionPeriod": "120", "VisibilityTimeout": "40"},
        {"RedrivePolicy": redrive, "Policy": json.dumps({"Version": "2012-10-17", "Statement": []})},
        {"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        {"KmsMasterKeyId": "alias/aws/sqs", "KmsDataKeyReusePeriodSeconds": "600"},
    ]


@pytest.mark.parametrize("attributes", queue_configurations())
def test_the_patched_attributes_are_the_same_names_and_values_in_the_same_order(attributes: dict[str, str]) -> None:
    with mock_aws():
        sqs: Any = boto3.client("sqs", region_name="us-east-1")  # the attributes are this test's parameters
        if "RedrivePolicy" in attributes:
            sqs.create_queue(QueueName="dlq")
        name = "attrs.fifo" if attributes.get("FifoQueue") else "attrs"
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="one", **({"MessageGroupId": "g"} if ".fifo" in name else {}))
        queue = sqs_backends["123456789012"]["us-east-1"].get_queue(name)
        built = original_attributes(queue)
        lazy = _QueueAttributes(queue)
        assert list(lazy) == list(built) and dict(lazy) == built and len(lazy) == len(built)
        assert "NoSuchAttribute" not in lazy and lazy.get("NoSuchAttribute") is None


def test_the_patch_keeps_the_retention_rule(patched: None) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="retention", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="old")
        with mock.patch("infra.moto_patches.unix_time", return_value=10**10):  # far past sent time + 60 s
            assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", []) == []
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["old"]
        # GetQueueAttributes answers as before (All: every attribute, as strings).
        answered = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert answered["MessageRetentionPeriod"] == "60" and answered["ApproximateNumberOfMessagesNotVisible"] == "1"
