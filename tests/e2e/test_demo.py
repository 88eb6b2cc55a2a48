"""The README's first command, shortened: `msp-billing demo` runs two months of the billing lifecycle on the
local runtime (HTTP API, queues, cron rules, one-time schedules, the test clock) in a fresh process.

The invoices are checked here against the simulated agents' ground truth (summary.json), computed with the
price list by this test, not by the demo's own check; the files the demo names must exist and read well.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from infra import PROJECT_ROOT
from infra.processes import free_port
from tests.helpers import PRICE_LIST_2026_01

pytestmark = pytest.mark.e2e
MSP_BILLING = str(Path(sys.executable).parent / "msp-billing")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    output = tmp_path_factory.mktemp("demo")
    completed = subprocess.run(
        [
            MSP_BILLING,
            "demo",
            "--in-memory",
            "--no-serve",
            "--months=2",
            "--partners=6",
            f"--output-dir={output}",
            f"--api-port={free_port()}",
            f"--dynamodb-port={free_port()}",
            f"--moto-port={free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_ROOT,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    return completed, output


def test_the_demo_completes_and_every_invoice_matches_the_agents_ground_truth(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    completed, output = demo_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "every invoice matches the agents' ground truth" in completed.stdout
    summary = json.loads((output / "summary.json").read_text())
    invoices_checked = 0
    by_story: dict[str, list[dict[str, Any]]] = {}
    for partner in summary["partners"]:
        by_story[partner["name"]] = partner["invoices"]
        for invoice in partner["invoices"]:
            month = invoice["month"]
            # Licences as the demo accounted for them itself (seed 002: periods in advance, change credits).
            expected_total = partner["expected_licences"].get(month, 0)
            lines = {line["workspace_id"]: line for line in invoice["lines"] if line["kind"] == "seats"}
            if not lines:  # a month of licence lines only (an activation month)
                assert month == partner["activated_at"][:7], (partner["name"], invoice)
                assert invoice["total"]["amount_minor"] == expected_total != 0
                invoices_checked += 1
                continue
            for workspace in partner["workspaces"]:
                devices = len(workspace["seen"].get(month, []))
                seats = min(devices, workspace["max_devices"])
                unit = PRICE_LIST_2026_01.seat_price(workspace["edition"], "USD").amount_minor
                assert (lines[workspace["workspace_id"]]["seats"], lines[workspace["workspace_id"]]["devices"]) == (
                    seats,
                    devices,
                ), f"{partner['name']} {month} {workspace['workspace_id']}"
                expected_total += seats * unit
            assert invoice["total"]["amount_minor"] == expected_total
            assert invoice["status"] in ("paid", "nothing_due")
            invoices_checked += 1
    # Two months: the first is every early partner's activation month (seats covered), the second is billed;
    # 6 partners, one of which activates mid-way through the billed month. Two also buy licences, billed in
    # their activation months.
    assert invoices_checked == 7
    assert [invoice["payment_attempts"] for invoice in by_story["Contoso Managed"]] == [2]  # declined, then paid
    northwind = by_story["Northwind IT"][-1]  # newest first: the activation month is the last
    assert [line["kind"] for line in northwind["lines"]] == ["licence_period"]  # P3Y billed annually, in advance
    (litware,) = by_story["Litware Partners"]  # P1M bought, moved to P1Y five days later: credit and new charge
    assert [line["kind"] for line in litware["lines"]] == ["licence_period", "change_credit", "licence_period"]
    fabrikam = next(p for p in summary["partners"] if p["name"] == "Fabrikam Secure")
    assert fabrikam["ends_on"] is not None and [i["month"] for i in fabrikam["invoices"]] == [fabrikam["ends_on"][:7]]
    tailspin = next(p for p in summary["partners"] if p["name"] == "Tailspin Ops")
    assert tailspin["ends_on"] is None  # reactivated


def test_the_files_the_demo_names_exist_and_read_well(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    completed, output = demo_run
    assert str(output / "emails") in completed.stdout and str(output / "reports") in completed.stdout
    emails = sorted((output / "emails").glob("*.eml"))
    subjects = [str(message_from_bytes(path.read_bytes())["Subject"]) for path in emails]
    assert any(subject.startswith("Billing report") for subject in subjects)
    assert any(subject.startswith("Payment failed") for subject in subjects)
    assert any(subject.startswith("Monthly billing ends on") for subject in subjects)
    assert any(subject.startswith("Monthly billing continues") for subject in subjects)
    body = message_from_bytes(emails[0].read_bytes()).get_payload(decode=True)
    assert isinstance(body, bytes) and body.decode().lstrip().startswith("<!DOCTYPE html>")
    summary = json.loads((output / "summary.json").read_text())
    for partner in summary["partners"]:
        for invoice in partner["invoices"]:
            report = output / "reports" / partner["partner_id"] / f"{invoice['month']}.csv"
            rows = list(csv.DictReader(report.open()))
            billed = sum(1 for row in rows if row["status"] == "billed")
            assert billed == sum(line["seats"] for line in invoice["lines"])
