"""The metering benchmark on a small workload, so it cannot rot: it must produce every JSON key, count
seats exactly, and stay at the cost floor of one write per first sighting (a count, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra import PROJECT_ROOT

pytestmark = pytest.mark.integration

KEYS = {
    "sightings",
    "wcu_per_1k",
    "rcu_per_1k",
    "naive_wcu_per_1k",
    "seconds",
    "naive_seconds",
    "sightings_per_s",
    "naive_sightings_per_s",
    "seats_exact",
}


def test_meter_benchmark_small_run(tmp_path: Path) -> None:
    output = tmp_path / "meter.json"
    subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "bench" / "meter_bench.py"),
            "--sightings",
            "1000",
            "--workspaces",
            "5",
            "--output",
            str(output),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads(output.read_text())
    assert results.keys() >= KEYS
    assert results["seats_exact"] is True
    assert results["wcu_per_1k"] == 100.0  # 10% first sightings, one conditional write each, nothing else
    assert results["naive_wcu_per_1k"] == 2000.0
