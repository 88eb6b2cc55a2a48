"""Narrow patches of moto's SQS emulator, applied by the local stack only (never in AWS).

moto (5.2.5, 5.2.6) builds ``Queue.attributes`` as a dict of every queue attribute, the three approximate
message counts included, each a scan of the whole queue, and reads it:

* twice per received message: ``is_message_valid_based_on_retention_period`` asks ``get_queue_attributes``
  for the retention period;
* once per sent message: ``send_message`` checks ``ContentBasedDeduplication``.

A run that enqueues N messages and then drains them (the monthly run's dispatcher) so costs O(N²): 33 s for
1,000 messages in the charge benchmark, 1.5 s with the receive path patched. Two patches, both offered
upstream:

* ``Queue.attributes`` becomes a read-only mapping with the same names and values, each computed when it is
  read (``_QueueAttributes``), so ``queue.attributes.get("ContentBasedDeduplication")`` costs one attribute;
* the retention check reads the queue's retention period directly, with the same rule (a message is kept
  while sent time + retention period is in the future).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from moto.core.utils import camelcase_to_underscores, unix_time
from moto.sqs.models import Queue, SQSBackend

_ORIGINAL_RETENTION_CHECK = SQSBackend.is_message_valid_based_on_retention_period
_ORIGINAL_ATTRIBUTES = Queue.attributes


def _is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Any) -> bool:
    queue: Any = self.get_queue(queue_name)  # its attributes are set from the API's names at run time
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return bool(retain_until > unix_time())


class _QueueAttributes(Mapping[str, Any]):
    """What moto's ``Queue.attributes`` returns (the same names in the same order, the same values: booleans as
    "true"/"false", the redrive policy as JSON), each value computed only when it is read."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)  # Policy and RedrivePolicy are among them
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:  # type: ignore[attr-defined]
            names += queue.KMS_ATTRIBUTES
        self._names = dict.fromkeys(names)

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        queue: Any = self._queue
        if name == "RedrivePolicy" and queue.redrive_policy:
            return json.dumps(queue.redrive_policy)
        value = getattr(queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def apply_sqs_patches() -> None:
    """Idempotent: the local stack calls it whenever it starts a moto server in this process."""
    SQSBackend.is_message_valid_based_on_retention_period = _is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    Queue.attributes = property(_QueueAttributes)  # type: ignore[assignment,method-assign]


def remove_sqs_patches() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _ORIGINAL_RETENTION_CHECK  # type: ignore[method-assign]
    Queue.attributes = _ORIGINAL_ATTRIBUTES  # type: ignore[method-assign]
