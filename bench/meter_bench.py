"""Metering cost and throughput benchmark (issue: metering ingestion).

Workload: N sightings (default 200,000) across W workspaces (default 1,000) whose devices come from
pools of 100, with 90% of sightings repeating a device already seen that month. They arrive as
single-sighting messages in random order, in SQS-shaped batches of 1,000 (the template's BatchSize),
through the real meter handler against DynamoDB Local. The same batches then go through a naive
baseline (one PutItem of the raw event plus one counter UpdateItem per sighting) in the same run.
DynamoDB consumed capacity is measured from ReturnConsumedCapacity=TOTAL on every call.

Usage: make bench-meter            (writes bench/results/meter.json)
       .venv/bin/python bench/meter_bench.py --sightings 2000 --workspaces 10 --output /tmp/m.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.capacity import CapacityMeter  # noqa: E402
from billing_core.domain.calendar import BillingMonth  # noqa: E402
from billing_core.domain.identity import PartnerIdentity, Role  # noqa: E402
from billing_core.schemas import ActivatePlanRequest, CreateWorkspaceRequest  # noqa: E402
from billing_core.wiring import services  # noqa: E402
from infra.lambda_runtime import LocalLambdaContext, load_handler, sqs_event, sqs_record  # noqa: E402
from infra.processes import free_port  # noqa: E402
from infra.stack import LocalStack, StackConfig  # noqa: E402

BATCH_SIZE = 1000
DEVICES_PER_WORKSPACE = 100
WORKSPACES_PER_PARTNER = 20
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:bench-MeteringQueue"


def create_workspaces(count: int) -> list[str]:
    wired = services()
    workspace_ids: list[str] = []
    for first in range(0, count, WORKSPACES_PER_PARTNER):
        partner = f"bench-{uuid.uuid4().hex[:8]}"
        owner = PartnerIdentity(partner, Role.OWNER, "bench")
        wired.activation.activate_monthly_billing(owner, "bench", ActivatePlanRequest(payment_method="pm_card_visa"))
        for _ in range(min(WORKSPACES_PER_PARTNER, count - first)):
            workspace = wired.workspaces.create_workspace(
                owner, CreateWorkspaceRequest(name="bench", edition="anti-malware", max_devices=DEVICES_PER_WORKSPACE)
            )
            workspace_ids.append(workspace.workspace_id)
    return workspace_ids


def generate(
    workspace_ids: list[str], sightings: int, seed: int, since: datetime
) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Sightings with exactly 10% first sightings, spread evenly over the workspaces, observed between
    ``since`` (when the workspaces joined the plan) and now; and the ground truth."""
    rng = random.Random(seed)
    distinct_total = sightings // 10
    per_workspace = distinct_total // len(workspace_ids)
    truth: dict[str, set[str]] = {}
    pairs: list[tuple[str, str]] = []
    for workspace_id in workspace_ids:
        devices = rng.sample(range(DEVICES_PER_WORKSPACE), per_workspace)
        truth[workspace_id] = {f"dev-{d:03d}" for d in devices}
        pairs += [(workspace_id, f"dev-{d:03d}") for d in devices]
    pairs += [rng.choice(pairs) for _ in range(sightings - len(pairs))]
    rng.shuffle(pairs)
    span = max((datetime.now(UTC) - since).total_seconds(), 0.001)
    messages = []
    for workspace_id, device_id in pairs:
        observed = since + timedelta(seconds=rng.uniform(0, span))
        body = {
            "type": "sighting",
            "event_id": uuid.uuid4().hex,
            "workspace_id": workspace_id,
            "device_id": device_id,
            "observed_at": observed.isoformat(),
        }
        messages.append(sqs_record(uuid.uuid4().hex, json.dumps(body), QUEUE_ARN))
    return messages, truth


def run_real_handler(messages: list[dict[str, Any]]) -> float:
    handler = load_handler(ROOT / "functions" / "meter", "app.handler", "meter_app_bench")
    started = time.perf_counter()
    for start in range(0, len(messages), BATCH_SIZE):
        response = handler(sqs_event(messages[start : start + BATCH_SIZE]), LocalLambdaContext("meter"))
        if response["batchItemFailures"]:
            raise RuntimeError(f"unexpected failures: {response['batchItemFailures'][:3]}")
    return time.perf_counter() - started


def run_naive_baseline(messages: list[dict[str, Any]], table_name: str, workers: int = 8) -> float:
    """One PutItem (the raw event) and one counter UpdateItem per sighting, same concurrency as ours."""
    client = boto3.client("dynamodb")
    month = str(BillingMonth.containing(datetime.now(UTC)))

    def handle(record: dict[str, Any]) -> None:
        body = json.loads(record["body"])
        client.put_item(
            TableName=table_name,
            Item={"pk": {"S": f"EVENT#{body['event_id']}"}, "sk": {"S": "EVENT"}, "body": {"S": record["body"]}},
        )
        client.update_item(
            TableName=table_name,
            Key={"pk": {"S": f"COUNT#{body['workspace_id']}#{month}"}, "sk": {"S": f"DEV#{body['device_id']}"}},
            UpdateExpression="ADD sightings :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(messages), BATCH_SIZE):
            list(pool.map(handle, messages[start : start + BATCH_SIZE]))
    return time.perf_counter() - started


def stored_seats(workspace_ids: list[str]) -> dict[str, set[str]]:
    from billing_core.adapters.dynamodb.usage import DeviceMonthItem

    month = BillingMonth.containing(datetime.now(UTC))
    found: dict[str, set[str]] = defaultdict(set)
    for workspace_id in workspace_ids:
        for item in DeviceMonthItem.query(f"WS#{workspace_id}#{month}"):
            found[workspace_id].add(item.sk.removeprefix("DEV#"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sightings", type=int, default=200_000)
    parser.add_argument("--workspaces", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "meter.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")

    stack = LocalStack(
        StackConfig(
            dynamodb_port=free_port(), moto_port=free_port(), api_port=free_port(), data_dir=None, stack_name="bench"
        )
    )
    stack.start()
    # Keep the output to the benchmark's own lines: no per-batch logs or EMF metrics.
    os.environ.update(POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
    try:
        print(f"creating {args.workspaces} workspaces…", flush=True)
        workspace_ids = create_workspaces(args.workspaces)
        joined = datetime.now(UTC)  # every workspace is on the plan from here on
        messages, truth = generate(workspace_ids, args.sightings, args.seed, since=joined)
        boto3.client("dynamodb").create_table(
            TableName="bench-naive",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
        meter = CapacityMeter()
        meter.install()
        meter.reset()
        print(f"meter handler: {len(messages)} sightings in batches of {BATCH_SIZE}…", flush=True)
        seconds = run_real_handler(messages)
        rcu, wcu, calls = meter.reset()
        print(f"  {seconds:.1f}s, {calls} DynamoDB calls, {wcu:.0f} WCU, {rcu:.0f} RCU", flush=True)
        print("naive baseline…", flush=True)
        naive_seconds = run_naive_baseline(messages, "bench-naive")
        naive_rcu, naive_wcu, naive_calls = meter.reset()
        print(f"  {naive_seconds:.1f}s, {naive_calls} DynamoDB calls, {naive_wcu:.0f} WCU", flush=True)
        seats_exact = stored_seats(workspace_ids) == truth
    finally:
        stack.stop()

    per_1k = 1000 / args.sightings
    results = {
        "sightings": args.sightings,
        "workspaces": args.workspaces,
        "distinct_device_months": sum(len(devices) for devices in truth.values()),
        "batch_size": BATCH_SIZE,
        "wcu_per_1k": round(wcu * per_1k, 2),
        "rcu_per_1k": round(rcu * per_1k, 2),
        "naive_wcu_per_1k": round(naive_wcu * per_1k, 2),
        "naive_rcu_per_1k": round(naive_rcu * per_1k, 2),
        "dynamodb_calls": calls,
        "naive_dynamodb_calls": naive_calls,
        "seconds": round(seconds, 2),
        "naive_seconds": round(naive_seconds, 2),
        "sightings_per_s": round(args.sightings / seconds, 1),
        "naive_sightings_per_s": round(args.sightings / naive_seconds, 1),
        "seats_exact": seats_exact,
        "command": "make bench-meter",
        "machine": "2 cores, DynamoDB Local 3.3.0 (in memory) on loopback, Python " + sys.version.split()[0],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
