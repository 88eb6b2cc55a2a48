"""The local stack's patch of moto's SQS retention check: the same rule, without building every queue
attribute (a scan of the queue each) for every received message."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import Queue, SQSBackend

from infra.moto_patches import apply_sqs_patches, remove_sqs_patches


@pytest.fixture
def patched() -> Iterator[None]:
    """The patch applied for the test, and whatever was in place before restored after it (a local stack
    started earlier in this process has applied it already)."""
    before = SQSBackend.is_message_valid_based_on_retention_period
    apply_sqs_patches()
    yield
    SQSBackend.is_message_valid_based_on_retention_period = before  # type: ignore[method-assign]


@pytest.fixture
def unpatched() -> Iterator[None]:
    before = SQSBackend.is_message_valid_based_on_retention_period
    remove_sqs_patches()
    yield
    SQSBackend.is_message_valid_based_on_retention_period = before  # type: ignore[method-assign]


def drain_counting_attribute_builds(messages: int) -> tuple[int, int]:
    """(messages received, times moto built a queue's full attributes while receiving them)."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="patch-test")["QueueUrl"]
        for start in range(0, messages, 10):
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": str(n)} for n in range(start, start + 10)]
            )
        original = Queue.attributes
        builds = 0

        def counting(queue: Queue) -> dict[str, object]:
            nonlocal builds
            builds += 1
            return original.fget(queue)  # type: ignore[attr-defined,no-any-return]

        received = 0
        with mock.patch.object(Queue, "attributes", property(counting)):
            while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                received += len(batch)
                sqs.delete_message_batch(
                    QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch]
                )
        return received, builds


def test_unpatched_moto_builds_every_attribute_twice_per_received_message(unpatched: None) -> None:
    received, builds = drain_counting_attribute_builds(50)
    assert received == 50 and builds >= 2 * 50  # what the patch is for (fails once moto fixes it upstream)


def test_the_patch_receives_every_message_without_building_the_attributes(patched: None) -> None:
    received, builds = drain_counting_attribute_builds(50)
    assert received == 50 and builds == 0


def test_the_patch_keeps_the_retention_rule(patched: None) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="retention", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="old")
        with mock.patch("infra.moto_patches.unix_time", return_value=10**10):  # far past sent time + 60 s
            assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", []) == []
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["old"]
