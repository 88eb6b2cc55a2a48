"""Cold import time of every function's handler module (each `Handler:` of template.yaml) next to
`import boto3`, measured with `python -X importtime` in fresh interpreters (median of N runs), and the
ratio to boto3 (target: at most 1.5). Usage: make bench-import"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 15
TARGET_RATIO = 1.5
# (function directory, handler module) of every function in template.yaml.
HANDLER_MODULES = (
    ("activate", "app"),
    ("workspaces", "app"),
    ("portal", "app"),
    ("cancel", "app"),
    ("cancel", "finaliser"),
    ("meter", "app"),
    ("monthly_charge", "app"),
    ("subscriptions", "app"),
)


def cumulative_import_us(statement: str, module: str, cwd: Path) -> int:
    """The cumulative microseconds `-X importtime` reports for ``module`` when running ``statement``."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "BILLING_TABLE": "t", "IDEMPOTENCY_TABLE": "i"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], cwd=cwd, env=env, capture_output=True, text=True
    )
    result.check_returncode()
    for line in result.stderr.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"{module} not in importtime output")


def median_ms(statement: str, module: str, cwd: Path) -> float:
    return round(statistics.median(cumulative_import_us(statement, module, cwd) for _ in range(RUNS)) / 1000, 1)


def main() -> None:
    boto3_ms = median_ms("import boto3", "boto3", ROOT)
    modules = {
        f"functions/{directory}/{module}.py": median_ms(f"import {module}", module, ROOT / "functions" / directory)
        for directory, module in HANDLER_MODULES
    }
    figures = {
        "import boto3 (ms)": boto3_ms,
        "handler modules (ms)": modules,
        "ratio to boto3": {name: round(ms / boto3_ms, 2) for name, ms in modules.items()},
        "target ratio": TARGET_RATIO,
        "all within target": all(ms / boto3_ms <= TARGET_RATIO for ms in modules.values()),
        "runs": RUNS,
        "python": sys.version.split()[0],
    }
    text = json.dumps(figures, indent=2)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "import_time.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
