"""How long a monthly run takes on AWS when the payment provider's rate limit bounds it: a small discrete-event
simulation of the charge queue, its capped workers and the provider's rate limit -> bench/results/provider_limit.json.

Each partner's charge is one provider request (a PaymentIntent) after the DynamoDB work; the provider admits
``rate_limit`` requests per second (a token bucket, as Stripe's limiter behaves: 100/s live, 25/s test mode); a
request beyond it is answered 429, which the worker reports as a retryable failure, so SQS redelivers the message
after the visibility timeout (540 s). Workers take batches of 10 (the event source's BatchSize), at most
``MaximumConcurrency`` at once. Per-partner times: the DynamoDB calls per partner measured by the charge benchmark
(read from bench/results/charge.json) at ~4 ms each on AWS, and ~0.4 s per Stripe request (both assumptions,
stated in the output), each with +-25 % jitter.

Run: ``.venv/bin/python bench/provider_limit.py`` (a few seconds).
"""

from __future__ import annotations

import heapq
import json
import random
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "provider_limit.json"
BATCH_SIZE = 10
VISIBILITY_TIMEOUT_S = 540.0
# Measured by `make bench-charge` (20 workspaces per partner), not assumed.
DYNAMODB_CALLS_PER_PARTNER = json.loads((RESULTS.parent / "charge.json").read_text())["dynamodb_calls_per_partner"]
DYNAMODB_CALL_S = 0.004
PROVIDER_REQUEST_S = 0.4
INVOCATION_OVERHEAD_S = 0.05


@dataclass
class Outcome:
    partners: int
    max_concurrency: int
    rate_limit_per_s: int
    minutes: float
    rate_limited_requests: int
    peak_requests_per_s: float


def simulate(partners: int, max_concurrency: int, rate_limit_per_s: int, seed: int = 7) -> Outcome:
    """Events in time order: each is a worker making its next provider request, so the limiter sees requests in
    the order they happen."""
    rng = random.Random(seed)
    pending = partners  # messages visible now (all at the start of the run)
    later: list[float] = []  # messages redelivered after a 429, by the time they are visible again
    tokens, refilled_at = float(rate_limit_per_s), 0.0
    done = rate_limited = 0
    finished_at = 0.0
    per_second: dict[int, int] = {}
    events: list[tuple[float, int, int]] = []  # (time of the worker's next provider request, worker, left in batch)

    def jitter(seconds: float) -> float:
        return seconds * rng.uniform(0.75, 1.25)

    def next_batch(worker: int, free_at: float) -> None:
        nonlocal pending
        while later and later[0] <= free_at:
            heapq.heappop(later)
            pending += 1
        if pending == 0:
            if later:  # long polling until a redelivered message is visible
                next_batch(worker, later[0])
            return
        taken = min(BATCH_SIZE, pending)
        pending -= taken
        start = free_at + INVOCATION_OVERHEAD_S + jitter(DYNAMODB_CALLS_PER_PARTNER * DYNAMODB_CALL_S)
        heapq.heappush(events, (start, worker, taken))

    for worker in range(max_concurrency):
        next_batch(worker, 0.0)
    while events:
        now, worker, left = heapq.heappop(events)
        tokens = min(float(rate_limit_per_s), tokens + (now - refilled_at) * rate_limit_per_s)
        refilled_at = now
        per_second[int(now)] = per_second.get(int(now), 0) + 1
        if tokens >= 1.0:
            tokens -= 1.0
            now += jitter(PROVIDER_REQUEST_S)
            done += 1
        else:  # 429: the message fails retryably and is visible again after the visibility timeout
            rate_limited += 1
            now += 0.05
            heapq.heappush(later, now + VISIBILITY_TIMEOUT_S)
        finished_at = max(finished_at, now)
        if left > 1:
            heapq.heappush(events, (now + jitter(DYNAMODB_CALLS_PER_PARTNER * DYNAMODB_CALL_S), worker, left - 1))
        else:
            next_batch(worker, now)
    assert done == partners
    return Outcome(
        partners,
        max_concurrency,
        rate_limit_per_s,
        round(finished_at / 60, 1),
        rate_limited,
        float(max(per_second.values())),
    )


def main() -> None:
    runs = [
        simulate(partners, concurrency, limit)
        for limit in (25, 100)
        for partners in (10_000, 100_000)
        for concurrency in (10, 40, 200)
    ]
    result = {
        "command": ".venv/bin/python bench/provider_limit.py",
        "assumptions": {
            "dynamodb_calls_per_partner": DYNAMODB_CALLS_PER_PARTNER,
            "seconds_per_dynamodb_call": DYNAMODB_CALL_S,
            "seconds_per_provider_request": PROVIDER_REQUEST_S,
            "batch_size": BATCH_SIZE,
            "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
            "rate_limits": "Stripe: 100 requests/s in live mode, 25 in test mode",
        },
        "runs": [run.__dict__ for run in runs],
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for run in runs:
        print(
            f"{run.partners:>7} partners, {run.max_concurrency:>4} workers, limit {run.rate_limit_per_s:>3}/s: "
            f"{run.minutes:>7} min, {run.rate_limited_requests} requests answered 429, "
            f"peak {run.peak_requests_per_s:.0f} requests/s"
        )


if __name__ == "__main__":
    main()
