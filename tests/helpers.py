"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from billing_core.domain.identity import Role
from infra.catalog import example_price_list
from infra.dev_tokens import development_token

# The shipped example list, read from catalog/price-list-2026-01.yaml like any published list.
PRICE_LIST_2026_01 = example_price_list()


def new_partner_id() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def auth_headers(partner_id: str, role: Role | str = Role.OWNER, **extra: str) -> dict[str, str]:
    return {"Authorization": development_token(partner_id, role), "Content-Type": "application/json", **extra}


def body(data: Any) -> str:
    return json.dumps(data)


def read_until(process: subprocess.Popen[str], marker: str, timeout_s: float = 120) -> list[str]:
    """The lines a subprocess printed up to and including the first that holds ``marker``."""
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


def start_local_system(api_port: int, dynamodb_port: int, moto_port: int) -> subprocess.Popen[str]:
    """`msp-billing up --in-memory` on the given ports, as a user starts it (read its output with
    ``read_until``; stop it with Ctrl-C)."""
    msp_billing = str(Path(sys.executable).parent / "msp-billing")
    return subprocess.Popen(
        [
            msp_billing,
            "up",
            "--in-memory",
            f"--api-port={api_port}",
            f"--dynamodb-port={dynamodb_port}",
            f"--moto-port={moto_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "10000"},
    )
