"""Monthly charge run benchmark (issue: monthly charge run).

For P partners (1,000, then 4,000) x 20 workspaces x up to 20 devices, the generator writes plans,
workspaces and October device-months straight into DynamoDB Local, then the real dispatcher handler
queues one message per partner on the local charge queue (moto server) and local workers (4 threads,
like 4 concurrent Lambdas) feed SQS batches of 10 to the real charge-worker handler until the queue is
empty. Each size runs on a fresh stack. Consumed capacity comes from ReturnConsumedCapacity=TOTAL on
every DynamoDB call of the run (not of the data load). Invoice totals are compared with an independent
recomputation from the generator.

Usage: make bench-charge           (writes bench/results/charge.json)
       .venv/bin/python bench/charge_bench.py --sizes 20 40 --output /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

# Only the benchmark's own lines: set before the handlers' Logger exists.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.capacity import CapacityMeter  # noqa: E402
from bench.moto_process import MotoProcess  # noqa: E402
from billing_core.adapters.dynamodb.models import (  # noqa: E402
    PartnerWorkspaceItem,
    PlanItem,
    WorkspaceItem,
    partner_pk,
    partner_workspace_sk,
    workspace_pk,
)
from billing_core.adapters.dynamodb.repositories import CHARGEABLE, PLAN_SK, WORKSPACE_SK  # noqa: E402
from billing_core.adapters.dynamodb.usage import DeviceMonthItem, device_month_pk, device_sk  # noqa: E402
from billing_core.domain.calendar import BillingMonth, to_iso  # noqa: E402
from billing_core.domain.metering import Billability  # noqa: E402
from infra import PROJECT_ROOT  # noqa: E402
from infra.catalog import example_price_list  # noqa: E402
from infra.lambda_runtime import LocalLambdaContext, load_handler, sqs_event, sqs_record  # noqa: E402
from infra.processes import free_port  # noqa: E402
from infra.stack import LocalStack, StackConfig  # noqa: E402

MONTH = BillingMonth(2026, 10)
ACTIVATED = datetime(2026, 9, 10, 9, 0, tzinfo=UTC)
WORKSPACES_PER_PARTNER = 20
MAX_DEVICES_PER_WORKSPACE = 20
WORKERS = 4
EDITIONS = sorted(example_price_list().editions)


def generate_and_load(partners: int, seed: int) -> dict[str, int]:
    """Write the partners' data; return each partner's expected October total (minor units)."""
    rng = random.Random(seed)
    expected: dict[str, int] = {}
    plans, workspaces, devices = [], [], []
    pointers: list[PartnerWorkspaceItem] = []
    first_seen = MONTH.starts_at + timedelta(days=3)
    for p in range(partners):
        partner_id = f"bench-{seed}-{p:05d}"
        plans.append(
            PlanItem(
                pk=partner_pk(partner_id),
                sk=PLAN_SK,
                partner_id=partner_id,
                state="active",
                currency="USD",
                price_list_version="2026-01",
                activated_at=ACTIVATED,
                activation_attempt=1,
                payment_customer_ref=f"cus_{p}",
                payment_method_ref="pm_card_visa",
                billing_email=f"billing@{partner_id}.example",
                charge_index=CHARGEABLE,
                updated_at=ACTIVATED,
            )
        )
        total = 0
        for w in range(WORKSPACES_PER_PARTNER):
            workspace_id = f"ws-{partner_id}-{w:02d}"
            edition = rng.choice(EDITIONS)
            max_devices = rng.randint(5, MAX_DEVICES_PER_WORKSPACE)
            seen = rng.randint(0, MAX_DEVICES_PER_WORKSPACE)
            total += min(seen, max_devices) * example_price_list().editions[edition].seat_price_minor["USD"]
            workspaces.append(
                WorkspaceItem(
                    pk=workspace_pk(workspace_id),
                    sk=WORKSPACE_SK,
                    workspace_id=workspace_id,
                    partner_id=partner_id,
                    name=f"Customer {w:02d}",
                    on_plan=True,
                    edition=edition,
                    max_devices=max_devices,
                    created_at=ACTIVATED,
                    joined_plan_at=ACTIVATED,
                    gsi1pk=partner_pk(partner_id),
                    gsi1sk=partner_workspace_sk(to_iso(ACTIVATED), workspace_id),
                )
            )
            pointers.append(
                PartnerWorkspaceItem(
                    pk=partner_pk(partner_id),
                    sk=partner_workspace_sk(to_iso(ACTIVATED), workspace_id),
                    workspace_id=workspace_id,
                )
            )
            devices += [
                DeviceMonthItem(
                    pk=device_month_pk(workspace_id, MONTH, Billability.BILLABLE),
                    sk=device_sk(f"dev-{d:02d}"),
                    first_seen_at=first_seen + timedelta(minutes=d),
                    event_id=f"e{d}",
                    billability="billable",
                    partner_id=partner_id,
                    recorded_at=first_seen,
                    expires_at=first_seen + timedelta(days=400),
                )
                for d in range(seen)
            ]
        expected[partner_id] = total
    for item in plans + workspaces:
        item.version = 1  # type: ignore[union-attr]
    _batch_write(PlanItem, plans)
    _batch_write(WorkspaceItem, workspaces)
    _batch_write(PartnerWorkspaceItem, pointers)
    _batch_write(DeviceMonthItem, devices)
    return expected


def _batch_write(model: Any, items: list[Any], threads: int = 8) -> None:
    chunks = [items[i : i + 1000] for i in range(0, len(items), 1000)]

    def write(chunk: list[Any]) -> None:
        with model.batch_write() as batch:
            for item in chunk:
                batch.save(item)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, chunks))


def run_month(stack: LocalStack) -> float:
    code = PROJECT_ROOT / "functions" / "monthly_charge"
    dispatch = load_handler(code, "app.dispatch", "bench_dispatch")
    charge = load_handler(code, "app.charge", "bench_charge")
    sqs = boto3.client("sqs", endpoint_url=stack.moto_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=stack.names.physical("ChargeQueue"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    started = time.perf_counter()
    dispatch({"month": str(MONTH)}, LocalLambdaContext("dispatch", 300))
    failures: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        idle = 0
        while idle < 3:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                idle += 1
                time.sleep(0.2)
                continue
            idle = 0
            records = [sqs_record(m["MessageId"], m["Body"], arn, receipt_handle=m["ReceiptHandle"]) for m in messages]
            response = charge(sqs_event(records), LocalLambdaContext("charge", 90))
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            with lock:
                failures.extend(failed)
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} charge messages failed")
    return time.perf_counter() - started


def stored_totals(partner_ids: list[str]) -> dict[str, int]:
    from billing_core.adapters.dynamodb.models import InvoiceItem

    totals = {}
    for partner_id in partner_ids:
        item = InvoiceItem.get(partner_pk(partner_id), f"INVOICE#{MONTH}")
        totals[partner_id] = int(item.total_minor) if item.status in ("paid", "nothing_due") else -1
    return totals


def measure(partners: int, seed: int, moto: str) -> dict[str, Any]:
    config = StackConfig(
        dynamodb_port=free_port(), moto_port=free_port(), api_port=free_port(), data_dir=None, stack_name=f"bench{seed}"
    )
    stack = LocalStack(config)
    if moto == "process":
        stack.moto = MotoProcess(config.moto_port)  # type: ignore[assignment]
    stack.start()
    os.environ.update(POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
    from billing_core.wiring import services

    services.cache_clear()
    services()  # binds the models to this stack's tables
    try:
        print(f"loading {partners} partners x {WORKSPACES_PER_PARTNER} workspaces…", flush=True)
        expected = generate_and_load(partners, seed)
        meter = CapacityMeter()
        meter.install()
        meter.reset()
        print("running the month…", flush=True)
        seconds = run_month(stack)
        rcu, wcu, calls = meter.reset()
        meter.uninstall()
        exact = stored_totals(sorted(expected)) == expected
    finally:
        stack.stop()
    print(
        f"  {partners} partners: {seconds:.1f}s, {rcu / partners:.1f} RCU and {wcu / partners:.1f} WCU per partner",
        flush=True,
    )
    return {"seconds": seconds, "rcu": rcu, "wcu": wcu, "calls": calls, "exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "charge.json")
    parser.add_argument(
        "--moto",
        choices=("in-process", "process"),
        default="process",
        help="moto's server in its own process (the default: measured faster, see bench/README.md) or in the "
        "benchmark's process, as the local stack runs it",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    small, large = args.sizes
    first = measure(small, seed=1, moto=args.moto)
    second = measure(large, seed=2, moto=args.moto)
    results = {
        "partners": large,
        "partners_small_run": small,
        "workspaces_per_partner": WORKSPACES_PER_PARTNER,
        "max_devices_per_workspace": MAX_DEVICES_PER_WORKSPACE,
        "workers": WORKERS,
        "seconds_1k": round(first["seconds"], 2),
        "seconds_4k": round(second["seconds"], 2),
        "scaling_ratio": round(second["seconds"] / first["seconds"], 3),
        "partners_per_s": round(large / second["seconds"], 2),
        "rcu_per_partner": round(second["rcu"] / large, 2),
        "wcu_per_partner": round(second["wcu"] / large, 2),
        "dynamodb_calls_per_partner": round(second["calls"] / large, 1),
        "invoices_exact": first["exact"] and second["exact"],
        "moto": args.moto,
        "command": "make bench-charge" + ("" if args.moto == "process" else " ARGS='--moto in-process'"),
        "machine": "2 cores, DynamoDB Local 3.3.0 (in memory) and moto server on loopback, Python "
        + sys.version.split()[0],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
