"""The whole local system: DynamoDB Local + moto server + resources from template.yaml + partner API."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from billing_core.adapters.dynamodb.models import bind_billing_table
from infra import DEFAULT_STACK_NAME, LOCAL_STATE_DIR, PROJECT_ROOT
from infra.catalog import publish_example_price_list
from infra.dynamodb_local import DynamoDBLocal
from infra.lambda_runtime import (
    Handler,
    LocalLambdaContext,
    SqsPoller,
    load_handler,
    sqs_event_sources,
    wait_until_drained,
)
from infra.local_api import LocalApiServer, composed_partner_api
from infra.local_clock import LocalClock
from infra.local_schedules import LocalScheduleRuntime
from infra.moto_patches import apply_sqs_patches
from infra.processes import require_free_port, require_tool
from infra.resources import create_resources
from infra.template import LocalNames, function_environment, load_template, resources_of_type

DEFAULT_DATA_DIR = LOCAL_STATE_DIR / "dynamodb"
DEFAULT_CLOCK_FILE = LOCAL_STATE_DIR / "clock.json"
# How long a firing waits for the queue-triggered functions to consume what it queued.
DRAIN_TIMEOUT_S = 120.0


@dataclass
class StackConfig:
    dynamodb_port: int = 8042
    moto_port: int = 5042
    api_port: int = 8080
    # None keeps DynamoDB Local in memory (tests); a folder keeps data between runs.
    data_dir: Path | None = DEFAULT_DATA_DIR
    stack_name: str = DEFAULT_STACK_NAME
    region: str = "us-east-1"
    # The test clock every process of this stack shares (see infra/local_clock.py).
    clock_file: Path = DEFAULT_CLOCK_FILE
    parameter_overrides: dict[str, str] = field(default_factory=lambda: {"PaymentProvider": "sandbox"})


def reset_local_data(data_dir: Path = DEFAULT_DATA_DIR, clock_file: Path = DEFAULT_CLOCK_FILE) -> bool:
    """Delete the local data and the test clock that goes with it (an empty database starts at today)."""
    deleted = False
    if data_dir.exists():
        shutil.rmtree(data_dir)
        deleted = True
    for path in (clock_file, clock_file.with_suffix(".lock")):
        if path.exists():
            path.unlink()
            deleted = True
    return deleted


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.template: dict[str, Any] = load_template()
        self.names = LocalNames(config.stack_name, moto_url=f"http://127.0.0.1:{config.moto_port}")
        self.dynamodb = DynamoDBLocal(config.dynamodb_port, config.data_dir)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=config.moto_port, verbose=False)
        self.api: LocalApiServer | None = None
        self.pollers: list[SqsPoller] = []
        self._pollers_stop = threading.Event()
        self._moto_started = False
        self.clock = LocalClock(config.clock_file)
        self._handlers: dict[str, Handler] = {}
        self._ticker: threading.Thread | None = None
        self._drain_target: tuple[Any, list[str]] | None = None

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.config.moto_port}"

    def check_prerequisites(self) -> None:
        """Fail fast, before starting anything, with a message naming what is missing or taken."""
        require_tool("java", "to run DynamoDB Local (Java 17 or newer)")
        require_free_port(self.config.dynamodb_port, "DynamoDB Local")
        require_free_port(self.config.moto_port, "the moto server")
        require_free_port(self.config.api_port, "the partner API")

    def environment(self) -> dict[str, str]:
        """What every local function sees: endpoints of the local stack plus, from template.yaml, the
        environment of each function (Globals merged with its own, intrinsics resolved to local names)."""
        environment = {
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb.endpoint_url,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": self.config.region,
            "AWS_DEFAULT_REGION": self.config.region,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "CLOCK_FILE": str(self.config.clock_file),
        }
        for logical_id in resources_of_type(self.template, "AWS::Serverless::Function"):
            environment.update(
                function_environment(self.template, logical_id, self.names, self.config.parameter_overrides)
            )
        return environment

    def start(self) -> dict[str, list[str]]:
        self.check_prerequisites()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the moto server's access log
        self.dynamodb.start()
        apply_sqs_patches()  # moto's receive path would otherwise cost O(queue length) per message
        self.moto.start()
        self._moto_started = True
        environment = self.environment()
        os.environ.update(environment)
        created = create_resources(
            self.template,
            self.names,
            dynamodb_url=self.dynamodb.endpoint_url,
            moto_url=self.moto_url,
            region=self.config.region,
        )
        # moto's SES, like SES in its sandbox, only sends from verified identities.
        boto3.client("ses", endpoint_url=self.moto_url, region_name=self.config.region).verify_email_identity(
            EmailAddress=environment["BILLING_EMAIL_SENDER"]
        )
        # The vendor's price list, as an operator publishes it (`msp-billing catalog load`); unchanged if present.
        bind_billing_table(environment["BILLING_TABLE"], self.config.region)
        publish_example_price_list(self.config.region, self.clock.now())
        return created

    def serve_api(self) -> LocalApiServer:
        self.api = LocalApiServer(composed_partner_api(self.template), "127.0.0.1", self.config.api_port)
        self.api.start()
        return self.api

    def invoke(self, function_logical_id: str, event: dict[str, Any]) -> Any:
        """Invoke a function's handler from template.yaml in this process (like `sam local invoke`); the
        module is loaded once per function, as a warm Lambda keeps it."""
        properties = self.template["Resources"][function_logical_id]["Properties"]
        if function_logical_id not in self._handlers:
            self._handlers[function_logical_id] = load_handler(
                PROJECT_ROOT / properties["CodeUri"], properties["Handler"], f"invoke_{function_logical_id}"
            )
        context = LocalLambdaContext(function_logical_id, int(properties.get("Timeout", 60)))
        return self._handlers[function_logical_id](event, context)

    def schedules(self) -> LocalScheduleRuntime:
        """The template's cron rules and the one-time Scheduler schedules on moto, fired by the test clock."""
        return LocalScheduleRuntime(
            self.template,
            self.names,
            self.clock,
            boto3.client("scheduler", endpoint_url=self.moto_url, region_name=self.config.region),
            boto3.client("sqs", endpoint_url=self.moto_url, region_name=self.config.region),
            self.invoke,
            self.wait_for_queues,
        )

    def start_schedule_ticker(self, interval_s: float = 1.0) -> None:
        """Fire schedules as local time passes them (also after another process moved the clock)."""
        runtime = self.schedules()

        def tick() -> None:
            while not self._pollers_stop.wait(interval_s):
                try:
                    runtime.fire_due()
                except Exception:
                    logging.getLogger("msp-billing.local").exception("firing schedules failed")

        self._ticker = threading.Thread(target=tick, name="schedule-ticker", daemon=True)
        self._ticker.start()

    def wait_for_queues(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every queue that triggers a function is empty (nothing waiting, nothing in flight).
        False if messages remain after ``timeout_s`` (e.g. failing ones waiting for a redelivery)."""
        if self._drain_target is None:  # resolved once: this runs after every firing and demo day
            sqs = boto3.client("sqs", endpoint_url=self.moto_url, region_name=self.config.region)
            urls = [
                sqs.get_queue_url(QueueName=self.names.physical(source.queue_logical_id))["QueueUrl"]
                for source in sqs_event_sources(self.template)
            ]
            self._drain_target = (sqs, urls)
        sqs, urls = self._drain_target
        pending = wait_until_drained(sqs, urls, timeout_s)
        if pending:
            logging.getLogger("msp-billing.local").warning("%d queued message(s) still pending", pending)
        return pending == 0

    def start_event_sources(self) -> list[SqsPoller]:
        """Deliver every SQS event source of template.yaml to its function's real handler."""
        sqs = boto3.client("sqs", endpoint_url=self.moto_url, region_name=self.config.region)
        self.pollers = [
            SqsPoller(source, sqs, self.names, self._pollers_stop) for source in sqs_event_sources(self.template)
        ]
        for poller in self.pollers:
            poller.start()
        return self.pollers

    def stop_event_sources(self) -> None:
        self._pollers_stop.set()
        for poller in self.pollers:
            poller.join(timeout=5)
        self.pollers = []
        self._pollers_stop = threading.Event()

    def stop(self) -> None:
        self._pollers_stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        for poller in self.pollers:
            poller.join(timeout=5)
        self.pollers = []
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self._moto_started:
            self.moto.stop()
            self._moto_started = False
        self.dynamodb.stop()
