"""Cold import time of every function's handler module (each `Handler:` of template.yaml) next to
`import boto3`, measured with `python -X importtime` in fresh interpreters, and the ratio to boto3
(target: at most 1.5). Usage: make bench-import

The runs are interleaved: in each of RUNS rounds every handler import is paired with an `import boto3` just
before it, each in a fresh interpreter, so a burst of load on the machine slows the baseline and the handler
alike. The figures are medians; the spread is the lowest and highest per-pair ratio.

The services are built on first use (billing_core.wiring), so the first invocation pays for the adapters
(PynamoDB and botocore among them) that the import no longer does. The same interpreter therefore goes on to
build the services the handler calls, and the wall time of import plus build is reported too, next to the
wall time of `import boto3`: what a cold start costs before the first request to AWS."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 15
TARGET_RATIO = 1.5
# (function directory, handler module, the services its handlers call) of every function in template.yaml.
HANDLER_MODULES = (
    ("activate", "app", ("activation",)),
    ("workspaces", "app", ("workspaces",)),
    ("portal", "app", ("history",)),
    ("cancel", "app", ("cancellation",)),
    ("cancel", "finaliser", ("cancellation",)),
    ("meter", "app", ("metering",)),
    ("monthly_charge", "app", ("monthly_run", "monthly_charge")),
    ("subscriptions", "app", ("subscriptions",)),
)
# The six functions issue 28 names: each must be within the target.
REQUIRED = (
    "functions/activate/app.py",
    "functions/cancel/app.py",
    "functions/meter/app.py",
    "functions/monthly_charge/app.py",
    "functions/portal/app.py",
    "functions/workspaces/app.py",
)


# What template.yaml's Globals give every function; values that only have to be well formed (nothing is called).
ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "BILLING_TABLE": "billing",
    "IDEMPOTENCY_TABLE": "idempotency",
    "USAGE_TABLE": "usage",
    "REPORTS_BUCKET": "reports",
    "CHARGE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/charge",
    "PLAN_END_FUNCTION_ARN": "arn:aws:lambda:us-east-1:123456789012:function:finaliser",
    "PLAN_END_SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/scheduler",
    "PLAN_END_DLQ_ARN": "arn:aws:sqs:us-east-1:123456789012:plan-end-dlq",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def measure(imports: str, module: str, cwd: Path, then: str = "") -> tuple[int, float]:
    """In a fresh interpreter: the cumulative microseconds `-X importtime` reports for ``module`` when running
    ``imports``, and the wall milliseconds of ``imports`` followed by ``then``."""
    statement = (
        f"import time\nstarted = time.perf_counter()\n{imports}\n{then}\nprint((time.perf_counter() - started) * 1000)"
    )
    env = ENVIRONMENT | {"PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], cwd=cwd, env=env, capture_output=True, text=True
    )
    result.check_returncode()
    for line in result.stderr.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]), float(result.stdout.split()[-1])
    raise RuntimeError(f"{module} not in importtime output")


def spread(values: list[float]) -> list[float]:
    return [round(min(values), 2), round(max(values), 2)]


def main() -> None:
    names = [f"functions/{directory}/{module}.py" for directory, module, _ in HANDLER_MODULES]
    boto3_us: list[int] = []
    boto3_wall_ms: list[float] = []
    import_us: dict[str, list[int]] = {name: [] for name in names}
    import_ratios: dict[str, list[float]] = {name: [] for name in names}
    first_use_ms: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(RUNS):
        for name, (directory, module, used) in zip(names, HANDLER_MODULES, strict=True):
            baseline_us, baseline_wall_ms = measure("import boto3", "boto3", ROOT)
            build = "from billing_core.wiring import services\n" + "\n".join(f"services().{s}" for s in used)
            handler_us, handler_wall_ms = measure(f"import {module}", module, ROOT / "functions" / directory, build)
            boto3_us.append(baseline_us)
            boto3_wall_ms.append(baseline_wall_ms)
            import_us[name].append(handler_us)
            import_ratios[name].append(handler_us / baseline_us)
            first_use_ms[name].append(handler_wall_ms)
    boto3_ms = statistics.median(boto3_us) / 1000
    modules = {name: round(statistics.median(runs) / 1000, 1) for name, runs in import_us.items()}
    ratio = {name: round(ms / boto3_ms, 2) for name, ms in modules.items()}
    boto3_wall = statistics.median(boto3_wall_ms)
    first_use = {name: round(statistics.median(runs), 1) for name, runs in first_use_ms.items()}
    figures = {
        "import boto3 (ms)": round(boto3_ms, 1),
        "import boto3 spread (ms)": spread([us / 1000 for us in boto3_us]),
        "handler modules (ms)": modules,
        "ratio to boto3": ratio,
        "ratio spread (per pair, lowest and highest)": {name: spread(runs) for name, runs in import_ratios.items()},
        "target ratio": TARGET_RATIO,
        "within target": sorted(name for name, value in ratio.items() if value <= TARGET_RATIO),
        "not within target": sorted(name for name, value in ratio.items() if value > TARGET_RATIO),
        "the six functions of issue 28 within target": all(ratio[name] <= TARGET_RATIO for name in REQUIRED),
        "first use: import boto3, wall (ms)": round(boto3_wall, 1),
        "first use: handler import and its services built, wall (ms)": first_use,
        "first use: ratio to boto3": {name: round(ms / boto3_wall, 2) for name, ms in first_use.items()},
        "runs": RUNS,
        "method": "medians of the runs; each handler import paired with an `import boto3` before it, "
        "fresh interpreters, python -X importtime",
        "python": sys.version.split()[0],
    }
    text = json.dumps(figures, indent=2)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "import_time.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
