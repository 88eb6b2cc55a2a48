"""Running Lambda handlers locally the way AWS does: handlers loaded from their CodeUri, SQS-shaped
events, a Lambda context, and pollers that deliver queue messages to SQS-triggered functions as the
event source mapping would (batch size, batching window, partial batch failures)."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import PROJECT_ROOT
from infra.template import LocalNames, resources_of_type

log = logging.getLogger("msp-billing.local")
Handler = Callable[[dict[str, Any], Any], Any]


def sqs_record(
    message_id: str, body: str, queue_arn: str, *, receipt_handle: str = "", receive_count: int = 1
) -> dict[str, Any]:
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": message_id,
        "receiptHandle": receipt_handle or f"rh-{message_id}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": "local",
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}


class LocalLambdaContext:
    def __init__(self, function_name: str, timeout_s: int = 60, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def load_handler(code_dir: Path, handler: str, unique_name: str) -> Handler:
    """Import ``module.function`` of a function's CodeUri as Lambda does, under a unique module name."""
    module_name, function_name = handler.rsplit(".", 1)
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    spec = importlib.util.spec_from_file_location(unique_name, code_dir / f"{module_name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {handler} from {code_dir}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Handler = getattr(module, function_name)
    return function


@dataclass(frozen=True)
class SqsEventSource:
    function_logical_id: str
    code_dir: Path
    handler: str
    timeout_s: int
    queue_logical_id: str
    batch_size: int
    batching_window_s: float
    reports_batch_item_failures: bool


def sqs_event_sources(template: dict[str, Any]) -> list[SqsEventSource]:
    """Every SQS event of every function in template.yaml."""
    global_timeout = int(template.get("Globals", {}).get("Function", {}).get("Timeout", 3))
    sources = []
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        properties = function.get("Properties", {})
        for event in properties.get("Events", {}).values():
            if event.get("Type") != "SQS":
                continue
            event_properties = event["Properties"]
            sources.append(
                SqsEventSource(
                    function_logical_id=logical_id,
                    code_dir=PROJECT_ROOT / properties["CodeUri"],
                    handler=properties["Handler"],
                    timeout_s=int(properties.get("Timeout", global_timeout)),
                    queue_logical_id=event_properties["Queue"]["Fn::GetAtt"][0],
                    batch_size=int(event_properties.get("BatchSize", 10)),
                    batching_window_s=float(event_properties.get("MaximumBatchingWindowInSeconds", 0)),
                    reports_batch_item_failures="ReportBatchItemFailures"
                    in event_properties.get("FunctionResponseTypes", []),
                )
            )
    return sources


class SqsPoller(threading.Thread):
    """Delivers one queue's messages to one function in batches; deletes what succeeded. What failed
    becomes visible again after the queue's visibility timeout and, after maxReceiveCount receives,
    the queue's redrive policy moves it to the dead-letter queue (moto implements both)."""

    def __init__(self, source: SqsEventSource, sqs: Any, names: LocalNames, stop: threading.Event) -> None:
        super().__init__(name=f"sqs-{source.function_logical_id}", daemon=True)
        self.source = source
        self._sqs = sqs
        self._stopping = stop
        self._queue_url = sqs.get_queue_url(QueueName=names.physical(source.queue_logical_id))["QueueUrl"]
        self._queue_arn = sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self._handler = load_handler(source.code_dir, source.handler, f"local_{source.function_logical_id}")
        self.batches_delivered = 0

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._collect_batch()
                if messages:
                    self._deliver(messages)
            except Exception:
                log.exception("delivering %s messages failed", self.source.queue_logical_id)
                self._stopping.wait(1)

    def _collect_batch(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        first_at: float | None = None
        while len(messages) < self.source.batch_size and not self._stopping.is_set():
            received = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(10, self.source.batch_size - len(messages)),
                # Long-poll for the first message only; then take what is there (an empty queue ends the batch).
                WaitTimeSeconds=0 if messages else 1,
                AttributeNames=["All"],
            ).get("Messages", [])
            if received:
                first_at = first_at or time.monotonic()
                messages += received
            elif messages:
                break  # the queue is drained: deliver what we have
            if first_at is not None and time.monotonic() - first_at >= self.source.batching_window_s:
                break
        return messages

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        records = [
            sqs_record(
                m["MessageId"],
                m["Body"],
                self._queue_arn,
                receipt_handle=m["ReceiptHandle"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for m in messages
        ]
        context = LocalLambdaContext(self.source.function_logical_id, self.source.timeout_s)
        try:
            response = self._handler(sqs_event(records), context) or {}
            failed = (
                {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
                if self.source.reports_batch_item_failures
                else set()
            )
        except Exception:
            log.exception("%s failed on a batch of %d", self.source.function_logical_id, len(records))
            failed = {record["messageId"] for record in records}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
        self.batches_delivered += 1


QUEUE_DEPTH_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


def wait_until_drained(sqs: Any, queue_urls: list[str], timeout_s: float) -> int:
    """Wait until none of the queues holds a message, waiting or in flight. Returns how many are still
    pending when ``timeout_s`` is up (0: drained)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = 0
        for url in queue_urls:
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=QUEUE_DEPTH_ATTRIBUTES)["Attributes"]
            pending += sum(int(attributes.get(name, "0")) for name in QUEUE_DEPTH_ATTRIBUTES)
        if pending == 0 or time.monotonic() > deadline:
            return pending
        time.sleep(0.2)
