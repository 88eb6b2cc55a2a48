"""The README's first command, as a user runs it: `msp-billing up` brings the stack up and the curl
walk-through it prints works over HTTP against the local server; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import PROJECT_ROOT
from infra.processes import free_port
from infra.walkthrough import PLAN_STATUS_TITLE
from tests.helpers import read_until, start_local_system

pytestmark = pytest.mark.e2e
MSP_BILLING = str(Path(sys.executable).parent / "msp-billing")


@pytest.fixture
def running_system() -> Iterator[tuple[subprocess.Popen[str], list[str], list[str], threading.Thread]]:
    ports = [free_port(), free_port(), free_port()]
    process = start_local_system(ports[0], ports[1], ports[2])
    try:
        output = read_until(process, "Serving.")
        # Keep reading what the server logs, so a full pipe never blocks it.
        rest: list[str] = []
        drain = threading.Thread(target=lambda: rest.extend(process.stdout or []), daemon=True)
        drain.start()
        yield process, output, rest, drain
    finally:
        stop_gently(process)


def stop_gently(process: subprocess.Popen[str]) -> None:
    """Ctrl-C first, so the stack stops its own servers; kill only what does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (2nd field) may hold spaces; the parent id is the 2nd field after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_walkthrough_works_over_http_and_ctrl_c_stops_cleanly(
    running_system: tuple[subprocess.Popen[str], list[str], list[str], threading.Thread],
) -> None:
    process, output, rest, drain = running_system
    exports = [line for line in output if line.startswith("export TOKEN=")]
    steps = [
        (match.group(1), match.group(2), output[index + 1])
        for index, line in enumerate(output)
        if (match := re.match(r"# \d+\. (.*?)(?:  -> (\d{3}))?$", line))
        and index + 1 < len(output)
        and output[index + 1].startswith(("curl", ".venv/bin/msp-billing"))
    ]
    assert exports and len(steps) >= 6, "\n".join(output)
    assert [status for _, status, _ in steps[:2]] == ["201", "409"]
    bodies: dict[str, Any] = {}
    for title, expected_status, command in steps:
        result = subprocess.run(
            ["bash", "-c", f"{exports[0]}\n{command}"], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        if expected_status:
            *body_lines, status = result.stdout.strip().splitlines()
            assert int(status) == int(expected_status), (command, result.stdout)
            bodies[title] = json.loads("\n".join(body_lines))
    # The plan status shows the devices the agent reported, delivered through SQS to the meter function.
    plan = bodies[PLAN_STATUS_TITLE]
    seats = {w["workspace_id"]: w["devices_this_month"] for w in plan["workspaces_on_plan"]}
    assert 3 in seats.values(), plan
    # The order bought, changed to a longer term and billed on the next 1st: credit and new charge on the
    # invoice and in its reconciliation file.
    invoice = next(body for title, body in bodies.items() if title.startswith("This month's invoice"))
    kinds = [line["kind"] for line in invoice["lines"]]
    assert kinds == ["licence_period", "change_credit", "licence_period"], invoice
    assert invoice["status"] == "paid" and invoice["total"]["amount_minor"] > 0
    link = next(body for title, body in bodies.items() if title.startswith("Its reconciliation file"))
    with urllib.request.urlopen(link["url"], timeout=30) as download:  # noqa: S310 - the local moto server
        reconciliation = download.read().decode()
    assert reconciliation.count("change_credit") == 1 and reconciliation.count("licence_period") == 2, reconciliation

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    drain.join(timeout=5)
    assert any("Stopped the local stack." in line for line in rest)


def test_a_killed_stack_leaves_no_dynamodb_local_behind() -> None:
    """A test that fails (or a CLI that is killed) must not orphan DynamoDB Local holding its port."""
    dynamodb_port = free_port()
    process = start_local_system(free_port(), dynamodb_port, free_port())
    try:
        read_until(process, "Serving.")
        java = [pid for pid in children_of(process.pid) if "java" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(java) == 1
        process.kill()  # SIGKILL: no handler of ours runs
        process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while is_running(java[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not is_running(java[0]), "DynamoDB Local outlived the stack that started it"
    finally:
        stop_gently(process)


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        result = subprocess.run(
            [
                MSP_BILLING,
                "up",
                "--in-memory",
                f"--api-port={taken}",
                f"--dynamodb-port={free_port()}",
                f"--moto-port={free_port()}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "10000"},
        )
    assert result.returncode == 2
    assert f"port {taken}" in result.stdout and "already in use" in result.stdout


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [MSP_BILLING, "up", "--in-memory", f"--api-port={free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "10000", "PATH": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "`java` was not found" in result.stdout
