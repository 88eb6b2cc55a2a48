"""The README's way into and out of dunning, as a user runs it against `msp-billing up`: a card that declines
every monthly charge takes the plan to past due after the retries on the 3rd, 5th and 7th (no new workspace
then), and one request with a new card brings the invoice to paid and the plan back to active."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.processes import free_port
from tests.e2e.test_first_command import stop_gently
from tests.helpers import read_until, start_local_system

pytestmark = pytest.mark.e2e
MSP_BILLING = str(Path(sys.executable).parent / "msp-billing")


def test_a_declining_card_leads_to_past_due_and_a_new_card_back_to_paid() -> None:
    api, dynamodb, moto = free_port(), free_port(), free_port()
    process = start_local_system(api, dynamodb, moto)
    try:
        printed = read_until(process, "Serving.")
        threading.Thread(target=lambda: list(process.stdout or []), daemon=True).start()
        # The stack's own test clock: the walk-through it prints names its file.
        clock_file = next(m.group(1) for line in printed if (m := re.search(r"--clock-file (\S+)", line)))
        ports = [f"--dynamodb-port={dynamodb}", f"--moto-port={moto}", f"--clock-file={clock_file}"]

        def cli(*args: str) -> str:
            done = subprocess.run([MSP_BILLING, *args], capture_output=True, text=True, timeout=300, check=False)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout

        token = cli("dev-token", "--partner", f"dunning-{uuid.uuid4().hex[:8]}", "--role", "owner").strip()

        def call(method: str, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
            headers = {"Authorization": token, "Content-Type": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            request = urllib.request.Request(
                f"http://127.0.0.1:{api}{path}",
                method=method,
                data=json.dumps(body).encode() if body is not None else None,
                headers=headers,
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
                    return answer.status, json.loads(answer.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, _ = call("POST", "/plan/activation", {"payment_method": "pm_card_offSessionDeclined"}, key="a1")
        assert status == 201
        status, workspace = call("POST", "/workspaces", {"name": "Acme", "edition": "anti-malware", "max_devices": 5})
        assert status == 201
        cli("clock", "advance", "--next-first", *ports)  # the activation month is covered by the fee
        cli("send-report", "--workspace", workspace["workspace_id"], "--device", "LAPTOP-1", "--wait", *ports)
        cli("clock", "advance", "--next-first", *ports)  # the run: declined
        for _ in range(3):  # the retries on the 3rd, 5th and 7th: declined
            cli("clock", "advance", "--days", "2", *ports)
        status, plan = call("GET", "/plan")
        assert (status, plan["state"]) == (200, "past_due"), plan
        status, refused = call("POST", "/workspaces", {"name": "New", "edition": "anti-malware", "max_devices": 1})
        assert (status, refused["error"]["code"]) == (409, "plan_past_due"), refused

        status, answer = call("PUT", "/plan/payment-method", {"payment_method": "pm_card_mastercard"}, key="card-2")

        assert status == 200 and answer["plan_state"] == "active" and answer["unpaid"] == [], answer
        (settled,) = answer["settled"]
        status, invoice = call("GET", f"/invoices/{settled['month']}")
        assert (status, invoice["status"], invoice["payment_id"]) == (200, "paid", settled["payment_id"])
        assert call("PUT", "/plan/payment-method", {"payment_method": "pm_card_mastercard"}, key="card-2") == (
            200,
            answer,
        )  # the same request again: the stored answer, nothing charged twice
    finally:
        stop_gently(process)
