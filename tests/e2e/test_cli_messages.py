"""What the CLI says when it works against a local stack: one clear line and exit code 2 when no stack
runs, exit code 1 for an unknown partner or a report the meter rejected, no JSON logs of the functions
unless --verbose, and dates a person reads (to the minute, in UTC)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from billing_core.catalog_documents import parse_price_list
from infra import PROJECT_ROOT
from infra.processes import free_port
from tests.helpers import read_until, start_local_system

pytestmark = pytest.mark.e2e
MSP_BILLING = str(Path(sys.executable).parent / "msp-billing")
# A timestamp as the functions log it or Python prints it: seconds with a fraction, or a UTC offset.
RAW_TIMESTAMP = re.compile(r"\d{2}:\d{2}:\d{2}\.\d+|[+-]\d{2}:\d{2}\b")
PAID_AT = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\b")


def run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (an 80-column pipe, not a terminal), stdout and stderr together."""
    return subprocess.run(
        [MSP_BILLING, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s
    )


def json_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.lstrip().startswith("{")]


# ---------------------------------------------------------------------------------------- no stack running


@pytest.mark.parametrize(
    "command",
    [
        ["plan", "--partner", "x"],
        ["charge"],
        ["clock", "advance", "--days", "1"],
        ["send-report", "--workspace", "ws_x", "--device", "laptop-01", "--wait"],
    ],
    ids=["plan", "charge", "clock-advance", "send-report"],
)
def test_a_stopped_stack_is_one_clear_line_and_exit_code_2(command: list[str], tmp_path: Path) -> None:
    ports = ["--dynamodb-port", str(free_port()), "--moto-port", str(free_port())]
    result = run(*command, *ports, "--clock-file", str(tmp_path / "clock.json"))
    assert result.returncode == 2, result.stdout
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout
    assert "no local stack" in result.stdout and "make up" in result.stdout
    assert "Traceback" not in result.stdout
    assert not (tmp_path / "clock.json").exists(), "a stopped stack's clock must not move"


# ------------------------------------------------------------------------------------------ a running stack


@dataclass(frozen=True)
class RunningStack:
    api_url: str
    ports: list[str]  # --dynamodb-port, --moto-port and --clock-file of the stack, for every command
    partner_id: str
    token: str
    workspace_id: str  # the seeded partner's workspace, not on the plan until `activated_partner`


def found(pattern: str, output: list[str]) -> str:
    for line in output:
        if match := re.search(pattern, line):
            return match.group(1)
    raise AssertionError(f"{pattern!r} not in the output of `up`:\n" + "\n".join(output))


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    api_port, dynamodb_port, moto_port = free_port(), free_port(), free_port()
    process = start_local_system(api_port, dynamodb_port, moto_port)
    try:
        output = read_until(process, "Serving.")
        # Keep reading what the stack logs, so a full pipe never blocks it.
        threading.Thread(target=lambda: list(process.stdout or []), daemon=True).start()
        # An in-memory stack has a clock of its own: `up` names its file in the send-report line.
        clock_file = found(r"--clock-file (\S+)", output)
        yield RunningStack(
            api_url=f"http://127.0.0.1:{api_port}",
            ports=[f"--dynamodb-port={dynamodb_port}", f"--moto-port={moto_port}", f"--clock-file={clock_file}"],
            partner_id=found(r"Demo partner (\S+) is seeded", output),
            token=found(r"^export TOKEN=(\S+)", output),
            workspace_id=found(r"send-report .*--workspace (\S+)", output),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def call_api(stack: RunningStack, method: str, path: str, body: Mapping[str, object], **headers: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the local stack's own URL
        stack.api_url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": stack.token, "Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status)


@pytest.fixture(scope="module")
def activated_partner(stack: RunningStack) -> RunningStack:
    """The seeded partner with an active plan and its workspace on it."""
    activation = {"payment_method": "pm_card_visa", "currency": "USD"}
    assert call_api(stack, "POST", "/plan/activation", activation, **{"Idempotency-Key": "cli-messages-1"}) == 201
    on_plan = {"edition": "anti-malware", "max_devices": 10}
    assert call_api(stack, "PUT", f"/workspaces/{stack.workspace_id}/plan", on_plan) == 200
    return stack


def test_plan_of_an_unknown_partner_is_one_line_and_exit_code_1(stack: RunningStack) -> None:
    result = run("plan", "--partner", "unknown-x", *stack.ports)
    assert result.returncode == 1, result.stdout
    assert result.stdout.strip().splitlines() == [
        "error: partner unknown-x never activated the monthly billing option (no plan, no workspaces)"
    ]


def test_plan_and_clock_print_no_json_logs_and_dates_to_the_minute(activated_partner: RunningStack) -> None:
    stack = activated_partner
    # The activation fee covers this month; next month's devices are charged on the 1st after it.
    today = datetime.now(UTC)
    next_month = f"{today.year + today.month // 12:04d}-{today.month % 12 + 1:02d}"
    month_after = f"{today.year + (today.month + 1) // 12:04d}-{(today.month + 1) % 12 + 1:02d}"
    into_next_month = run("clock", "advance", "--to", f"{next_month}-02", *stack.ports, timeout_s=120)
    assert into_next_month.returncode == 0, into_next_month.stdout
    assert "fired" in into_next_month.stdout and not json_lines(into_next_month.stdout), into_next_month.stdout
    reported = run("send-report", "--workspace", stack.workspace_id, "--device", "laptop-01", "--wait", *stack.ports)
    assert f"the meter counted it for {next_month}: 1 device(s) billable" in reported.stdout, reported.stdout
    charged = run("clock", "advance", "--to", f"{month_after}-01T00:30", *stack.ports, timeout_s=120)
    assert charged.returncode == 0 and not json_lines(charged.stdout), charged.stdout

    shown = run("plan", "--partner", stack.partner_id, *stack.ports)
    assert shown.returncode == 0, shown.stdout
    assert not json_lines(shown.stdout), shown.stdout
    assert not RAW_TIMESTAMP.search(shown.stdout), shown.stdout
    headline, *table = shown.stdout.splitlines()
    assert re.fullmatch(
        rf"{stack.partner_id}: active \(activated \d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}} UTC\), "
        r"next charge \d{4}-\d{2}-01",
        headline,
    ), headline
    invoice = [line for line in table if line.startswith("│ ") and next_month in line]
    assert len(invoice) == 1 and " paid " in invoice[0], shown.stdout
    assert re.search(rf"│ {month_after}-01 00:0\d UTC +│", invoice[0]), shown.stdout  # by the run of 00:05


def test_charge_logs_json_only_with_verbose(stack: RunningStack) -> None:
    quiet = run("charge", *stack.ports)
    assert quiet.returncode == 0, quiet.stdout
    assert not json_lines(quiet.stdout) and "queued" in quiet.stdout, quiet.stdout
    verbose = run("charge", "--verbose", *stack.ports)
    assert verbose.returncode == 0, verbose.stdout
    assert any(json.loads(line).get("message") == "monthly run dispatched" for line in json_lines(verbose.stdout))


def test_send_report_says_the_meter_counted_it(activated_partner: RunningStack) -> None:
    stack = activated_partner
    result = run("send-report", "--workspace", stack.workspace_id, "--device", "laptop-77", "--wait", *stack.ports)
    assert result.returncode == 0, result.stdout
    assert "on the test clock" in result.stdout and not RAW_TIMESTAMP.search(result.stdout), result.stdout
    assert re.search(r"the meter counted it for \d{4}-\d{2}: 1 device\(s\) billable$", result.stdout, re.M)
    assert "note:" not in result.stdout, result.stdout  # stamped with the stack's clock


def test_send_report_says_the_meter_rejected_it_with_exit_code_1(stack: RunningStack) -> None:
    result = run(
        "send-report", "--workspace", stack.workspace_id, "--device", "bad id with spaces", "--wait", *stack.ports
    )
    assert result.returncode == 1, result.stdout
    sent, verdict = result.stdout.strip().splitlines()
    assert sent.startswith("sent daily report "), result.stdout
    assert verdict.startswith("error: the meter rejected the report: invalid message: daily_report.device_ids.0")
    assert "Traceback" not in result.stdout


def test_send_report_to_an_unknown_workspace_counts_no_seat(stack: RunningStack) -> None:
    result = run("send-report", "--workspace", "ws_unknown", "--device", "laptop-01", "--wait", *stack.ports)
    assert result.returncode == 0, result.stdout  # the meter accepts it: an agent may report before creation
    assert "counts no seat" in result.stdout and "no workspace ws_unknown is known" in result.stdout


def test_send_report_with_a_clock_ahead_of_the_stack_is_rejected(stack: RunningStack, tmp_path: Path) -> None:
    from infra.local_clock import LocalClock

    ahead = tmp_path / "clock.json"
    LocalClock(ahead).set(datetime(2040, 1, 1, tzinfo=UTC))
    ports = [option for option in stack.ports if not option.startswith("--clock-file")]
    result = run(
        "send-report",
        "--workspace",
        stack.workspace_id,
        "--device",
        "laptop-01",
        "--wait",
        *ports,
        "--clock-file",
        str(ahead),
    )
    assert result.returncode == 1, result.stdout
    assert "ahead of the server clock" in result.stdout and "--clock-file" in result.stdout


def test_catalog_load_validates_publishes_once_and_show_reads_it_back(stack: RunningStack, tmp_path: Path) -> None:
    example = PROJECT_ROOT / "catalog" / "price-list-2026-01.yaml"
    # The stack publishes the shipped example when it starts, as an operator would.
    loaded = run("catalog", "load", str(example), *stack.ports)
    assert loaded.returncode == 0, loaded.stdout
    assert loaded.stdout.strip() == (
        "already published with the same content, unchanged: price list 2026-01, in effect from 2026-01-01"
    )
    missing = run("catalog", "load", str(example.with_name("no-such-list.yaml")), *stack.ports)
    assert missing.returncode == 2 and "cannot read" in missing.stdout, missing.stdout

    document = yaml.safe_load(example.read_text())
    document["activation_fee"]["USD"] = 1
    rewritten = tmp_path / "rewritten.yaml"
    rewritten.write_text(yaml.safe_dump(document))
    refused = run("catalog", "load", str(rewritten), *stack.ports)
    assert refused.returncode == 1 and "published with other content" in refused.stdout, refused.stdout

    document["version"] = "2027-01"
    document["products"][0]["skus"][0]["prices"]["P1M/annual"] = {"USD": 1, "EUR": 1}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document))
    invalid = run("catalog", "load", str(broken), *stack.ports)
    assert invalid.returncode == 1, invalid.stdout
    assert "products.0.skus.0.prices.P1M/annual:" in invalid.stdout and "nothing was published" in invalid.stdout

    shown = run("catalog", "show", *stack.ports)
    assert shown.returncode == 0 and "2027-01" not in shown.stdout, shown.stdout
    row = [line for line in shown.stdout.splitlines() if "2026-01 │ 2026-01-01" in line]
    assert len(row) == 1 and "in effect" in row[0], shown.stdout
    printed = run("catalog", "show", "--version", "2026-01", *stack.ports)
    assert parse_price_list(yaml.safe_load(printed.stdout)) == parse_price_list(yaml.safe_load(example.read_text()))
