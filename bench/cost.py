"""What running msp-billing costs on AWS: one partner-month of the monthly run, and one million metering
sightings, computed from the committed benchmark figures (bench/results/charge.json, meter.json) and AWS's
public list prices. Writes bench/results/cost.json and prints the README's table.

Usage: .venv/bin/python bench/cost.py

The prices are us-east-1 list prices (on-demand, no free tier, no savings plans) as published on the services'
pricing pages; ``PRICES_AS_OF`` says when they were read. What the benchmarks cannot measure on a laptop (Lambda
durations on AWS) is an assumption, named below and in the output, never a measured figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

PRICES_AS_OF = "2025-07 (DynamoDB on-demand after its November 2024 price cut)"
PRICES_USD = {
    "dynamodb_write_request_unit": 0.625 / 1_000_000,  # on-demand WRU (a standard write of up to 1 KB)
    "dynamodb_read_request_unit": 0.125 / 1_000_000,  # on-demand RRU (a strongly consistent read of up to 4 KB)
    "lambda_request": 0.20 / 1_000_000,
    "lambda_gb_second_arm64": 0.0000133334,
    "sqs_request": 0.40 / 1_000_000,  # standard queue, per 64 KB chunk of a request
    "s3_put": 0.005 / 1_000,
    "ses_email": 0.10 / 1_000,
}

# Assumptions (AWS-side durations; the benchmarks run against local emulators):
LAMBDA_MEMORY_GB = 0.5  # template.yaml Globals: MemorySize 512, arm64
CHARGE_SECONDS_PER_PARTNER = 0.7  # the same assumption as bench/provider_limit.py: DynamoDB calls + one Stripe call
METER_SECONDS_PER_BATCH = 1.0  # one SQS batch of up to 1,000 messages (template.yaml BatchSize) on 512 MB
SIGHTINGS_PER_MESSAGE = 1  # worst case: every agent message carries one sighting (a daily report carries many)
CHARGE_MESSAGES_PER_BATCH = 10  # template.yaml: the charge worker's BatchSize
SQS_ENTRIES_PER_REQUEST = 10  # SendMessageBatch / ReceiveMessage / DeleteMessageBatch


def partner_month(charge: dict[str, Any]) -> dict[str, float]:
    """One partner's monthly run: the dispatcher's message, the charge worker, the invoice's writes and reads,
    the usage report and reconciliation file (two S3 PUTs) and the billing report e-mail."""
    sqs_requests = 3 / SQS_ENTRIES_PER_REQUEST  # sent, received and deleted in batches of 10
    return {
        "dynamodb": charge["wcu_per_partner"] * PRICES_USD["dynamodb_write_request_unit"]
        + charge["rcu_per_partner"] * PRICES_USD["dynamodb_read_request_unit"],
        "lambda": PRICES_USD["lambda_request"] / CHARGE_MESSAGES_PER_BATCH
        + CHARGE_SECONDS_PER_PARTNER * LAMBDA_MEMORY_GB * PRICES_USD["lambda_gb_second_arm64"],
        "sqs": sqs_requests * PRICES_USD["sqs_request"],
        "s3": 2 * PRICES_USD["s3_put"],
        "ses": PRICES_USD["ses_email"],
    }


def million_sightings(meter: dict[str, Any]) -> dict[str, float]:
    """One million sightings through the meter function: the agents' sends, the function's batches, and the
    DynamoDB capacity the benchmark measured per 1,000 sightings (first sightings written once, repeats read)."""
    messages = 1_000_000 / SIGHTINGS_PER_MESSAGE
    batches = messages / meter["batch_size"]
    # The agents send one message a request; the event source receives and deletes in batches of 10.
    sqs_requests = messages + 2 * messages / SQS_ENTRIES_PER_REQUEST
    return {
        "dynamodb": 1_000 * meter["wcu_per_1k"] * PRICES_USD["dynamodb_write_request_unit"]
        + 1_000 * meter["rcu_per_1k"] * PRICES_USD["dynamodb_read_request_unit"],
        "lambda": batches * PRICES_USD["lambda_request"]
        + batches * METER_SECONDS_PER_BATCH * LAMBDA_MEMORY_GB * PRICES_USD["lambda_gb_second_arm64"],
        "sqs": sqs_requests * PRICES_USD["sqs_request"],
    }


def main() -> None:
    charge = json.loads((RESULTS / "charge.json").read_text())
    meter = json.loads((RESULTS / "meter.json").read_text())
    costs = {"partner_month": partner_month(charge), "million_sightings": million_sightings(meter)}
    result = {
        "usd": {name: {**parts, "total": sum(parts.values())} for name, parts in costs.items()},
        "prices_usd": PRICES_USD,
        "prices_as_of": PRICES_AS_OF,
        "from": {"charge.json": {k: charge[k] for k in ("rcu_per_partner", "wcu_per_partner")}, "meter.json": meter},
        "assumptions": {
            "lambda_memory_gb": LAMBDA_MEMORY_GB,
            "charge_seconds_per_partner": CHARGE_SECONDS_PER_PARTNER,
            "meter_seconds_per_batch": METER_SECONDS_PER_BATCH,
            "sightings_per_message": SIGHTINGS_PER_MESSAGE,
        },
        "command": ".venv/bin/python bench/cost.py",
    }
    (RESULTS / "cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| what | DynamoDB | Lambda | SQS | S3 | SES | total |")
    print("|---|---|---|---|---|---|---|")
    for name, label, times in (
        ("partner_month", "1,000 partner-months (monthly run)", 1_000),
        ("million_sightings", "1,000,000 sightings (metering)", 1),
    ):
        parts = result["usd"][name]
        cells = [
            f"${parts[key] * times:.4f}" if key in parts else "-" for key in ("dynamodb", "lambda", "sqs", "s3", "ses")
        ]
        print(f"| {label} | {' | '.join(cells)} | **${parts['total'] * times:.4f}** |")


if __name__ == "__main__":
    main()
