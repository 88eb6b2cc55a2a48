"""Cold import time of each API function's handler module next to `import boto3`, measured with
`python -X importtime` in fresh interpreters (median of N runs). Usage: make bench-import"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 7


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
    figures = {
        "import boto3 (ms)": median_ms("import boto3", "boto3", ROOT),
        **{
            f"import app of functions/{name} (ms)": median_ms("import app", "app", ROOT / "functions" / name)
            for name in ("activate", "workspaces")
        },
        "runs": RUNS,
        "python": sys.version.split()[0],
    }
    text = json.dumps(figures, indent=2)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "import_time.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
