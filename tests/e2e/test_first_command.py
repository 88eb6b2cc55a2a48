"""The README's first command, as a user runs it: `msp-billing up` brings the stack up and the curl
walk-through it prints works over HTTP against the local server; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.processes import free_port

pytestmark = pytest.mark.e2e
MSP_BILLING = str(Path(sys.executable).parent / "msp-billing")


def read_until(process: subprocess.Popen[str], marker: str, timeout_s: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} not seen; output so far:\n" + "\n".join(lines))


@pytest.fixture
def running_system() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    ports = [free_port(), free_port(), free_port()]
    process = subprocess.Popen(
        [MSP_BILLING, "up", "--in-memory", f"--api-port={ports[0]}", f"--dynamodb-port={ports[1]}",
         f"--moto-port={ports[2]}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "10000"},
    )  # fmt: skip
    try:
        yield process, read_until(process, "Serving.")
    finally:
        if process.poll() is None:
            process.kill()


def test_walkthrough_works_over_http_and_ctrl_c_stops_cleanly(
    running_system: tuple[subprocess.Popen[str], list[str]],
) -> None:
    process, output = running_system
    exports = [line for line in output if line.startswith("export TOKEN=")]
    steps = [
        (int(match.group(1)), output[index + 1])
        for index, line in enumerate(output)
        if (match := re.match(r"# \d+\. .*  -> (\d{3})$", line))
    ]
    assert exports and len(steps) >= 4, "\n".join(output)
    assert [status for status, _ in steps[:2]] == [201, 409]
    for expected_status, curl in steps:
        result = subprocess.run(["bash", "-c", f"{exports[0]}\n{curl}"], capture_output=True, text=True, timeout=30)
        status = int(result.stdout.strip().splitlines()[-1])
        assert status == expected_status, (curl, result.stdout)

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    remaining = process.stdout.read() if process.stdout else ""
    assert "Stopped the local stack." in remaining


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        result = subprocess.run(
            [MSP_BILLING, "up", "--in-memory", f"--api-port={taken}", f"--dynamodb-port={free_port()}",
             f"--moto-port={free_port()}"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "10000"},
        )  # fmt: skip
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
